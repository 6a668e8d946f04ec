"""``qxedge discover``: what a plant endpoint holds, and a config snippet to read it.

- ``discover opcua://HOST:PORT[/path]`` browses the address space
  (:func:`~qxedge.connectors.opcua.browse_server`) and lists each variable (node id, browse path, data
  type, access, value now); the numeric ones become the ``nodes`` of an ``opcua`` connector entry
  (asset from the parent objects' names, signal from the variable's name), checked by the agent's own
  config model before it is printed.
- ``discover modbus://HOST[:PORT] --unit N --holding A-B`` (``--input``, ``--coils``, ``--discrete``)
  reads the ranges and shows each register under every decoding of the connector
  (:func:`~qxedge.connectors.modbus.decode_registers`), and an entry that reads one register
  (``--pick``, ``--type``, ``--byte-order``, ``--word-order``, ``--scale``, ``--offset``).

Errors (unreachable, a security mismatch, an exception response, a timeout) are ConnectorErrors: one
line on stderr, exit 1. Bad arguments exit 2. The drivers are imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from qxedge.connectors.opcua import OpcUaSecurity
from qxedge.core.errors import ConnectorError

PASSWORD_ENV = "QXEDGE_OPCUA_PASSWORD"
MAX_REGISTERS_READ = 1000  # per range: 8 reads of 125
MAX_BITS_READ = 8000
_TABLE_OPTIONS = {"holding": "holding", "input": "input", "coils": "coil", "discrete": "discrete"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str  # opcua or modbus
    host: str
    port: int
    path: str

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.path}"


def target(text: str) -> Target:
    """``opcua://host[:port][/path]`` (or ``opc.tcp://``), ``modbus://host[:port]``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    scheme = {"opcua": "opcua", "opc.tcp": "opcua", "modbus": "modbus", "modbus+tcp": "modbus"}.get(
        parts.scheme
    )
    if scheme is None or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected opcua://HOST:PORT or modbus://HOST:PORT, got {text!r}")
    if scheme == "modbus" and parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{text!r}: a modbus:// target has no path (give --unit N)")
    return Target(scheme, parts.hostname, port or (4840 if scheme == "opcua" else 502), parts.path)


def address_range(text: str) -> tuple[int, int]:
    """``A-B`` (both included) or ``A``: 0-based protocol addresses."""
    first, sep, last = text.strip().partition("-")
    try:
        start, end = int(first), int(last) if sep else int(first)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a range like 0-9 (0-based addresses, both ends included)"
        ) from None
    if not 0 <= start <= end <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: addresses must run upwards within 0..65535")
    return start, end


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def add_parser(sub: Any) -> None:
    """Register ``discover`` on the CLI's subparsers."""
    p = sub.add_parser(
        "discover",
        help="browse an OPC UA server or read a Modbus range, and print a config snippet for it",
        description="Browse opcua://HOST:PORT or read modbus://HOST:PORT ranges; print what is there and "
        "a `connectors:` entry (checked by the config model) to paste into the agent's config.",
    )
    p.add_argument(
        "target", type=target, metavar="URL", help="opcua://HOST:PORT[/path] or modbus://HOST:PORT"
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per request (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object: what was found and the snippet")
    ua = p.add_argument_group("opcua://")
    ua.add_argument("--root", default="i=85", help="node id or browse path to start at (default: Objects)")
    ua.add_argument("--depth", type=_count, default=6, help="levels below the root (default 6)")
    ua.add_argument("--max-nodes", type=_count, default=2000, help="stop after this many (default 2000)")
    ua.add_argument("--include-standard", action="store_true", help="also namespace 0 (Server, ...)")
    ua.add_argument("--by-path", action="store_true", help="snippet names nodes by browse path, not node id")
    ua.add_argument(
        "--security",
        default="None:None",
        metavar="POLICY:MODE",
        help="None:None (default), Basic256Sha256:Sign or Basic256Sha256:SignAndEncrypt",
    )
    ua.add_argument("--certificate", type=Path, help="client application instance certificate")
    ua.add_argument("--private-key", type=Path, help="its private key")
    ua.add_argument("--server-certificate", type=Path, help="pin the server's certificate")
    ua.add_argument("--username", help=f"user identity; the password from ${PASSWORD_ENV} or --password-file")
    ua.add_argument("--password-file", type=Path, help="a file holding the password (first line)")
    mb = p.add_argument_group("modbus://")
    mb.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    for option, table in _TABLE_OPTIONS.items():
        mb.add_argument(
            f"--{option}",
            type=address_range,
            action="append",
            metavar="A-B",
            help=f"{table} range",
        )
    mb.add_argument("--pick", type=int, metavar="ADDR", help="the snippet's address (default: the first)")
    mb.add_argument("--type", help="its type (default uint16 on registers, bool on coils / discrete inputs)")
    mb.add_argument("--byte-order", choices=["big", "little"], default="big")
    mb.add_argument("--word-order", choices=["big", "little"], default="big")
    mb.add_argument("--scale", type=float, default=1.0, help="value = raw * scale + offset (all decodings)")
    mb.add_argument("--offset", type=float, default=0.0)
    mb.add_argument("--asset", default="line1/device1", help="the snippet's asset (default line1/device1)")
    mb.add_argument("--signal", help="the snippet's signal (default: table and address, e.g. holding0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    where: Target = args.target
    misplaced = _misplaced(args, where.scheme)
    if misplaced:
        other = "modbus://" if where.scheme == "opcua" else "opcua://"
        return _usage(f"{', '.join(misplaced)}: for {other} targets")
    if not args.timeout > 0:
        return _usage("--timeout must be > 0")
    if args.verbose == 0:  # asyncua warns of insecure endpoints and revised session timeouts
        for noisy in ("asyncua", "pymodbus"):  # the error that matters is the one said on stderr
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if where.scheme == "opcua":
        from qxedge.agent.discover_opcua import discover_opcua

        return asyncio.run(discover_opcua(where.endpoint, args))
    from qxedge.agent.discover_modbus import discover_modbus

    return asyncio.run(discover_modbus(where, args))


_OPCUA_ONLY = ("root", "depth", "max_nodes", "include_standard", "by_path", "security", "certificate",
               "private_key", "server_certificate", "username", "password_file")  # fmt: skip
_MODBUS_ONLY = ("unit", "holding", "input", "coils", "discrete", "pick", "type", "byte_order",
                "word_order", "scale", "offset", "asset", "signal")  # fmt: skip


def _misplaced(args: argparse.Namespace, scheme: str) -> list[str]:
    """Options of the other scheme that were given (differ from their defaults)."""
    names = _MODBUS_ONLY if scheme == "opcua" else _OPCUA_ONLY
    defaults = {"root": "i=85", "depth": 6, "max_nodes": 2000, "security": "None:None", "unit": 1,
                "byte_order": "big", "word_order": "big", "scale": 1.0, "offset": 0.0,
                "asset": "line1/device1"}  # fmt: skip
    return [
        "--" + name.replace("_", "-")
        for name in names
        if getattr(args, name) not in (None, False, defaults.get(name))
    ]


def _usage(message: str) -> int:
    print(f"qxedge discover: error: {message}", file=sys.stderr)
    return 2


@dataclass(frozen=True, slots=True)
class Access:
    """Security and user identity for one session (the :class:`~qxedge.connectors.opcua._session.Identity`
    of an OPC UA config, from command-line options)."""

    security: OpcUaSecurity
    username: str | None = None
    password: SecretStr | None = None
    user_certificate: Path | None = None
    user_private_key: Path | None = None
    user_private_key_password: SecretStr | None = None


def access(args: argparse.Namespace) -> Access:
    """The options as an :class:`Access`; ValueError with what is wrong."""
    policy, _, mode = args.security.partition(":")
    try:
        security = OpcUaSecurity.model_validate(
            {
                "policy": policy,
                "mode": mode or ("None" if policy == "None" else "SignAndEncrypt"),
                "certificate": _absolute(args.certificate),
                "private_key": _absolute(args.private_key),
                "server_certificate": _absolute(args.server_certificate),
            }
        )
    except ValidationError as exc:
        raise ValueError("--security: " + "; ".join(problem(e) for e in exc.errors())) from None
    password = os.environ.get(PASSWORD_ENV)
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise ValueError(
                f"--password-file {args.password_file}: cannot read a first line ({exc})"
            ) from None
    if password is not None and args.username is None:
        raise ValueError("a password needs --username")
    return Access(security, args.username, SecretStr(password) if password is not None else None)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.resolve()  # the snippet is pasted into a config elsewhere


def problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def snippet_yaml(entry: dict[str, Any], comments: list[str]) -> str:
    """``connectors:`` with one entry, as YAML to paste, under a few comment lines."""
    head = "".join(f"# {line}\n" for line in comments)
    return head + yaml.safe_dump({"connectors": [entry]}, sort_keys=False, allow_unicode=True, width=200)


def checked_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` once the agent's config model accepted it as a ``connectors:`` item; ConnectorError
    (a bug of discover: never print a snippet that would not load) otherwise."""
    from qxedge.agent.config import ConnectorEntry

    try:
        ConnectorEntry.model_validate(entry, context={"base_dir": Path.cwd()})
    except ValidationError as exc:
        raise ConnectorError(
            "the snippet does not pass the config model: " + "; ".join(problem(e) for e in exc.errors())
        ) from exc
    return entry


def safe_name(text: str) -> str:
    """A name a config accepts as an asset level or a signal: lower case, ``[a-z0-9_.-]``."""
    return _UNSAFE.sub("_", text).strip("_").lower() or "x"


def emit_json(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, default=str))
