"""OPC UA node references parsed without asyncua (connectors.opcua.nodes), checked against asyncua."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from asyncua import ua
from hypothesis import example, given
from hypothesis import strategies as st

from qxedge.connectors.opcua.nodes import NodeIdSpec, node_key, parse_node

namespaces = st.integers(min_value=0, max_value=2**16 - 1)
strings = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda s: s.strip() == s
)


def _as_asyncua(text: str) -> tuple[int, object]:
    node = ua.NodeId.from_string(text)
    return node.NamespaceIndex, node.Identifier


def _spec(text: str) -> NodeIdSpec:
    parsed = parse_node(text)
    assert isinstance(parsed, NodeIdSpec)
    return parsed


@given(namespaces, st.integers(min_value=0, max_value=2**32 - 1))
def test_numeric_ids_parse_as_asyncua_does(ns: int, number: int) -> None:
    text = f"ns={ns};i={number}"
    spec = _spec(text)
    assert (spec.namespace, spec.identifier) == _as_asyncua(text)
    assert node_key(text) == node_key(f"i={number}" if ns == 0 else f"ns={ns};i={number}")


@given(namespaces, strings)
def test_string_ids_parse_as_asyncua_does(ns: int, name: str) -> None:
    text = f"ns={ns};s={name}"
    spec = _spec(text)
    assert spec.kind == "s"
    assert (spec.namespace, spec.identifier) == _as_asyncua(text)


@given(namespaces, st.uuids(), st.binary(min_size=1, max_size=16))
@example(2, uuid.UUID(int=0), bytes.fromhex("d310"))  # base64 "0xA=": read as hex by asyncua too
def test_guid_and_byte_ids_parse_as_asyncua_does(ns: int, guid: uuid.UUID, raw: bytes) -> None:
    b64 = base64.b64encode(raw).decode()
    # base64 text that starts with "0x" (bytes d3 1x ...) is hex to asyncua and to us alike: ambiguous
    forms = [f"ns={ns};g={guid}", f"ns={ns};b=0x{raw.hex()}"]
    if not b64.startswith("0x"):
        forms.append(f"ns={ns};b={b64}")
    for text in forms:
        spec = _spec(text)
        assert (spec.namespace, spec.identifier) == _as_asyncua(text)
    if not b64.startswith("0x"):
        assert node_key(f"ns={ns};b=0x{raw.hex()}") == node_key(f"ns={ns};b={b64}")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ns=2;i=x", "numeric identifier 'x' is not a whole number"),
        ("ns=70000;i=1", "namespace index 70000 is outside 0..65535"),
        ("i=-1", "numeric identifier -1 is outside"),
        ("ns=2;g=not-a-guid", "is not a GUID"),
        ("ns=2", "no identifier"),
        ("ns=2;x=1", "unknown key 'x'"),
        ("ns=2;srv=1;i=1", "srv= (expanded node ids) is not supported"),
        ("ns=2;i", "'i' is not key=value"),
        ("ns=1;s=", "empty string identifier"),
        ("nsu=urn:x;s=A", "nsu= (namespace URI) node ids are not supported"),
        ("Temp", "neither a node id"),
        ("0:Objects/Line1", "segment 'Line1' is not <namespace index>:<browse name>"),
        ("", "empty node"),
    ],
)
def test_bad_nodes_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_node(text)


def test_browse_paths_are_namespace_and_name_pairs() -> None:
    assert parse_node("0:Objects/2:Line1/2:Pump 1") == [(0, "Objects"), (2, "Line1"), (2, "Pump 1")]
    assert node_key("0:Objects/2:Line1") == node_key(" 0:Objects/2:Line1 ")
    assert node_key("0:Objects/2:Line1") != node_key("0:Objects/3:Line1")
