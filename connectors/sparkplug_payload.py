"""Sparkplug B v3.0 payloads and topics: ids, device-id mapping, metric values in and out.

The payload classes are generated from the specification's schema (``sparkplug_b.proto`` beside this
file; the command is in its header). Everything here is pure (no I/O), shared by the edge node
(``sparkplug_node``) and the source (``sparkplug_source``).
"""

from __future__ import annotations

import math
import time

from qxedge.connectors.sparkplug_b_pb2 import Payload as Payload
from qxedge.core.errors import PayloadError, RejectCode

Metric = Payload.Metric

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"

# Datatype codes (specification section 6.4.16)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_INT_TYPES = frozenset({INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64})


def device_id(asset: str, separator: str) -> str:
    """The Sparkplug device id of an agent asset: ``line1/pump1`` → ``line1:pump1`` (``/`` is a topic
    level separator and may not appear in an id; ``+`` and ``#`` cannot appear in asset ids)."""
    return asset.replace("/", separator)


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    return f"{NAMESPACE}/{group}/{kind}/{node}" + ("" if device is None else f"/{device}")


def ms(ts: float) -> int:
    """Epoch seconds → the integer milliseconds Sparkplug timestamps carry."""
    return round(ts * 1000)


def now_ms() -> int:
    return ms(time.time())


def set_value(metric: Metric, datatype: int, value: float | bool | str | None) -> None:
    """Fill ``metric`` with ``value`` encoded for ``datatype`` (None → ``is_null``)."""
    if value is None:
        metric.is_null = True
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == STRING:
        metric.string_value = str(value)
    elif datatype in (INT64, UINT64):
        metric.long_value = int(value) % (1 << 64)
    elif datatype in _INT_TYPES:
        metric.int_value = int(value) % (1 << 32)
    else:
        raise ValueError(f"cannot encode datatype {datatype}")


def number(metric: Metric, datatype: int) -> float | None:
    """A metric's value as a float (booleans 1.0 / 0.0); None for null, non-numeric and non-finite
    values. ``datatype`` comes from the birth when the metric (a DATA one) does not carry its own."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    if kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    if kind in ("double_value", "float_value"):
        value = metric.double_value if kind == "double_value" else metric.float_value
        return value if math.isfinite(value) else None
    if kind in ("int_value", "long_value"):
        raw = metric.int_value if kind == "int_value" else metric.long_value
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:  # two's complement in the unsigned field (some encoders use the type's width)
            if raw >= 1 << (bits - 1) and raw < 1 << bits:
                raw -= 1 << bits
            elif raw >= 1 << 31 and kind == "int_value":
                raw -= 1 << 32
        return float(raw)
    return None  # strings, bytes, datasets, templates: not readings


def decode(payload: bytes, max_bytes: int) -> Payload:
    """Parse a Sparkplug B payload; PayloadError with the reason (code ``oversize`` or
    ``invalid_protobuf``) when it is not one. String fields that are not UTF-8 come back as bytes
    (proto2): callers check the names they use."""
    if len(payload) > max_bytes:
        raise PayloadError(
            f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}", RejectCode.OVERSIZE
        )
    message = Payload()
    try:
        message.ParseFromString(payload)
    except Exception as exc:  # google.protobuf.message.DecodeError, RuntimeWarning-free
        reason = f"not a Sparkplug B payload ({type(exc).__name__}: {exc})"[:200]
        raise PayloadError(reason, RejectCode.INVALID_PROTOBUF) from exc
    return message


def rebirth_request() -> bytes:
    """The NCMD payload asking an edge node for its births again."""
    payload = Payload(timestamp=now_ms())
    metric = payload.metrics.add(name=REBIRTH, timestamp=payload.timestamp, datatype=BOOLEAN)
    metric.boolean_value = True
    return payload.SerializeToString()
