"""``qxedge discover modbus://``: ranges of a Modbus TCP device under every decoding, and a ``modbus``
connector entry that reads one chosen register."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from pydantic import ValidationError

from qxedge.agent.discover import (
    MAX_BITS_READ,
    MAX_REGISTERS_READ,
    Target,
    checked_entry,
    emit_json,
    problem,
    safe_name,
    snippet_yaml,
)
from qxedge.connectors.modbus import (
    MAX_BITS,
    MAX_REGISTERS,
    REGISTER_TYPES,
    ModbusDevice,
    ModbusPoint,
    decode_registers,
)
from qxedge.connectors.modbus.config import BIT_TABLES, Table
from qxedge.core.errors import ConnectorError

_OPTIONS: dict[str, Table] = {"holding": "holding", "input": "input", "coils": "coil", "discrete": "discrete"}


async def discover_modbus(where: Target, args: argparse.Namespace) -> int:
    from qxedge.connectors.modbus import DevicePoller, DeviceRefused, LinkDown

    ranges = [(table, r) for option, table in _OPTIONS.items() for r in getattr(args, option) or []]
    if not ranges:
        return _usage("give at least one range: --holding A-B, --input A-B, --coils A-B or --discrete A-B")
    for table, (start, end) in ranges:
        limit = MAX_BITS_READ if table in BIT_TABLES else MAX_REGISTERS_READ
        if end - start + 1 > limit:
            return _usage(f"{table} {start}-{end} spans {end - start + 1} addresses: at most {limit} at once")
    try:
        device = _device(where, args, ranges)
    except ValueError as exc:
        return _usage(str(exc))
    label = f"modbus://{where.host}:{where.port} unit {args.unit}"
    poller = DevicePoller(device.model_copy(update={"timeout_s": args.timeout}), "discover", (0.5, 1.0))
    try:
        await poller.connect()
    except LinkDown as exc:
        raise ConnectorError(f"{label}: {exc}") from exc
    results: list[dict[str, Any]] = []
    failed = False
    try:
        for table, (start, end) in ranges:
            step = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
            raw: list[int] = []
            try:
                for at in range(start, end + 1, step):
                    got = await poller.read(table, at, min(step, end + 1 - at))
                    raw.extend(int(x) for x in got[: min(step, end + 1 - at)])  # bits come in bytes
            except DeviceRefused as exc:
                failed = True
                print(f"qxedge discover: {label}: {exc}", file=sys.stderr)
                continue
            except LinkDown as exc:
                raise ConnectorError(f"{label}: {exc} (within {args.timeout:g} s)") from exc
            results.append({"table": table, "start": start, "values": raw})
    finally:
        poller.close()
    point = device.points[0]
    shown = device.model_dump(mode="json", exclude_defaults=True, exclude={"points"})
    shown["points"] = [{"asset": point.asset, "signal": point.signal, "table": point.table}]
    shown["points"][0].update(
        point.model_dump(mode="json", exclude_defaults=True, exclude={"asset", "signal"})
    )
    entry = checked_entry({"modbus": {"devices": [shown]}})
    now = _value_now(point, results, device)
    if args.json:
        emit_json({"device": label, "ranges": [_as_json(r, args) for r in results], "snippet": entry})
        return 1 if failed else 0
    for r in results:
        print("\n".join(_table_lines(r, label, args)))
        print()
    comments = [
        "config snippet (checked by qxedge's config model): one point, "
        f"{point.table} {point.address} as {point.value_type}"
        + ("" if now is None else f" (reads {now} now)"),
        "more points: --pick, --type, --byte-order, --word-order, --scale, --offset, --asset, --signal",
    ]
    print(snippet_yaml(entry, comments), end="")
    return 1 if failed else 0


def _device(
    where: Target, args: argparse.Namespace, ranges: list[tuple[Table, tuple[int, int]]]
) -> ModbusDevice:
    """The snippet's device: one point at ``--pick`` (default: the first address read); ValueError."""
    pick = ranges[0][1][0] if args.pick is None else args.pick
    table = next((t for t, (a, b) in ranges if a <= pick <= b), None)
    if table is None:
        raise ValueError(f"--pick {pick} is in none of the ranges read")
    kind = args.type or ("bool" if table in BIT_TABLES else "uint16")
    point: dict[str, Any] = {
        "asset": args.asset,
        "signal": args.signal or f"{table}{pick}",
        "table": table,
        "address": pick,
        "type": kind,
    }
    if kind != "bool":
        point.update(
            byte_order=args.byte_order, word_order=args.word_order, scale=args.scale, offset=args.offset
        )
    try:
        return ModbusDevice(
            name=safe_name(where.host) or "device1",
            host=where.host,
            port=where.port,
            unit=args.unit,
            points=[ModbusPoint.model_validate(point)],
        )
    except ValidationError as exc:
        problems = "; ".join(problem(e) for e in exc.errors())
        raise ValueError(f"the snippet's point: {problems}") from None


def _value_now(point: ModbusPoint, results: list[dict[str, Any]], device: ModbusDevice) -> str | None:
    from qxedge.connectors.modbus import Codec

    for r in results:
        at = point.address - r["start"]
        if r["table"] == point.table and at >= 0 and at + point.width <= len(r["values"]):
            return _shown(
                Codec(point, device.byte_order, device.word_order).decode(r["values"], at), point.type
            )
    return None


def _table_lines(r: dict[str, Any], label: str, args: argparse.Namespace) -> list[str]:
    table, start, values = r["table"], r["start"], r["values"]
    head = f"{label}: {table} {start}..{start + len(values) - 1}"
    if table in BIT_TABLES:
        return [head, "addr  value", *(f"{start + i:<5} {int(v)}" for i, v in enumerate(values))]
    scaled = (
        "" if (args.scale, args.offset) == (1.0, 0.0) else f", value = raw * {args.scale:g} + {args.offset:g}"
    )
    rows = [("addr", "order", "raw", *REGISTER_TYPES)]
    for d in decode_registers(values, start, scale=args.scale, offset=args.offset):
        first = d.order == "ABCD"
        raw = f"0x{values[d.address - start]:04x}" if first else ""
        rows.append(
            (
                str(d.address) if first else "",
                d.order,
                raw,
                *(_shown(d.values.get(t), t) for t in REGISTER_TYPES),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        head + scaled,
        *(
            "  ".join(
                c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ),
    ]


def _shown(value: float | None, kind: str | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:.7g}" if kind == "float32" else f"{value:.10g}"


def _as_json(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    doc: dict[str, Any] = {"table": r["table"], "start": r["start"], "raw": r["values"]}
    if r["table"] not in BIT_TABLES:
        doc["decodings"] = [
            {"address": d.address, "order": d.order, **{k: _json_number(v) for k, v in d.values.items()}}
            for d in decode_registers(r["values"], r["start"], scale=args.scale, offset=args.offset)
        ]
    return doc


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _usage(message: str) -> int:
    print(f"qxedge discover: error: {message}", file=sys.stderr)
    return 2
