"""Values between OPC UA and the agent: notifications to readings, setpoints to variants. Pure."""

from __future__ import annotations

import math
from datetime import datetime

from qxedge.connectors.opcua.config import OpcUaConfig
from qxedge.core.errors import ConnectorError

_INT_RANGES: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
_NULL_TIME = 0.0  # an OPC UA DateTime of 0 (year 1601) means "no timestamp"; its epoch value is negative


def keepalive_count(cfg: OpcUaConfig) -> int:
    return max(1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms))


def number(value: object) -> float | None:
    if value is True or value is False:
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


def epoch(moment: datetime | None) -> float:
    if moment is None:
        return _NULL_TIME
    ts = moment.timestamp()
    return ts if ts > 0 else _NULL_TIME


def to_variant(value: float, kind: str, what: str) -> bool | int | float:
    if not math.isfinite(value):
        raise ConnectorError(f"{what}: not a finite number")
    if kind == "Boolean":
        return value != 0
    if kind in ("Float", "Double"):
        return value
    low, high = _INT_RANGES[kind]
    number = round(value)
    if not low <= number <= high:
        raise ConnectorError(f"{what}: {number} is out of the range of {kind} [{low}, {high}]")
    return number
