"""OPC UA node references in a config file, parsed without the OPC UA stack.

A node is given as a node id (``ns=2;s=Line1.Pump1.Temp``, ``i=2258``, ``ns=3;g=<uuid>``, ``ns=1;b=<base64>``)
or as a browse path from the Root folder (``0:Objects/2:Line1/2:Pump1/2:Temp``). The syntax is asyncua's
``NodeId.from_string`` (the runtime hands it the same text), checked here with the reason on failure, and
stricter where asyncua would fail later or silently: namespace indexes and numeric ids in range, no
unknown keys, no expanded node ids (``nsu=``, ``srv=``).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Literal

_NODE_ID_PREFIXES = ("ns=", "i=", "s=", "g=", "b=")
_UINT16 = 2**16 - 1
_UINT32 = 2**32 - 1

IdKind = Literal["i", "s", "g", "b"]
BrowsePath = list[tuple[int, str]]  # (namespace index, browse name) per level, from the Root folder


@dataclass(frozen=True, slots=True)
class NodeIdSpec:
    """A parsed node id: namespace index, identifier kind (numeric, string, GUID, bytes) and identifier."""

    namespace: int
    kind: IdKind
    identifier: int | str | uuid.UUID | bytes


def parse_node(text: str) -> NodeIdSpec | BrowsePath:
    """``ns=2;s=A.B`` → a :class:`NodeIdSpec`; ``0:Objects/2:Line1/2:Temp`` → the browse path's
    ``(namespace, name)`` pairs. ValueError with the reason otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("empty node")
    if text.startswith("nsu="):
        raise ValueError(f"{text!r}: nsu= (namespace URI) node ids are not supported, use ns=<index>")
    if text.startswith(_NODE_ID_PREFIXES):
        try:
            node = _parse_node_id(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a node id like ns=2;s=Line1.Pump1.Temp ({exc})") from None
        if node.kind == "s" and not node.identifier:
            raise ValueError(f"{text!r}: empty string identifier")
        return node
    if "/" not in text and ":" not in text:
        raise ValueError(
            f"{text!r} is neither a node id (ns=2;s=Line1.Pump1.Temp) "
            "nor a browse path (0:Objects/2:Line1/2:Pump1/2:Temp)"
        )
    path: BrowsePath = []
    for segment in text.split("/"):
        ns, sep, name = segment.partition(":")
        if not sep or not ns.isdigit() or not name or int(ns) > _UINT16:
            raise ValueError(
                f"browse path {text!r}: segment {segment!r} is not <namespace index>:<browse name> "
                "(e.g. 2:Line1)"
            )
        path.append((int(ns), name))
    return path


def node_key(text: str) -> str:
    """Equal for two texts that name the same node (``i=5`` and ``ns=0;i=5``, ``b=0x41`` and ``b=QQ==``)."""
    parsed = parse_node(text)
    if isinstance(parsed, NodeIdSpec):
        ident = parsed.identifier
        shown = ident.hex() if isinstance(ident, bytes) else str(ident)
        return f"ns={parsed.namespace};{parsed.kind}={shown}"
    return "/".join(f"{ns}:{name}" for ns, name in parsed)


def _parse_node_id(text: str) -> NodeIdSpec:
    """asyncua's ``NodeId.from_string`` grammar: ``;``-separated ``key=value``; a string id takes the
    rest of the text (it may hold ``;`` and ``=``)."""
    elements = text.split(";")
    namespace = 0
    kind: IdKind | None = None
    identifier: int | str | uuid.UUID | bytes | None = None
    while elements:
        element = elements.pop(0)
        if not element:
            continue
        key, sep, value = element.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{element!r} is not key=value")
        if key == "ns":
            namespace = _whole(value, "namespace index", _UINT16)
        elif key == "i":
            kind, identifier = "i", _whole(value, "numeric identifier", _UINT32)
        elif key == "s":
            kind, identifier = "s", ";".join((value, *elements))
            elements = []
        elif key == "g":
            try:
                kind, identifier = "g", uuid.UUID(f"urn:uuid:{value}")
            except ValueError:
                raise ValueError(f"g={value} is not a GUID") from None
        elif key == "b":
            kind, identifier = "b", _bytes(value)
        elif key in ("nsu", "srv"):
            raise ValueError(f"{key}= (expanded node ids) is not supported")
        else:
            raise ValueError(f"unknown key {key!r} (ns, i, s, g or b)")
    if kind is None or identifier is None:
        raise ValueError("no identifier: i=, s=, g= or b=")
    return NodeIdSpec(namespace, kind, identifier)


def _whole(value: str, what: str, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a whole number") from None
    if not 0 <= number <= high:
        raise ValueError(f"{what} {number} is outside 0..{high}")
    return number


def _bytes(value: str) -> bytes:
    """``0x``-prefixed hex, else base64, else the ASCII text itself (as asyncua reads it)."""
    if value[:2] == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise ValueError(f"b={value} is not hex") from None
    try:
        return base64.b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"b={value!r} is neither base64 nor ASCII") from None


def check_name(value: str, what: str, allow_slash: bool) -> str:
    """An asset or signal name: no MQTT wildcards, and no ``/`` in a signal."""
    if not value or any(c in value for c in "+#") or (not allow_slash and "/" in value):
        raise ValueError(f"invalid {what} {value!r}" + ("" if allow_slash else " (no '/')"))
    return value
