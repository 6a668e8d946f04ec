"""Sensor readings: the columnar batch that moves through the agent, and the JSON reading codec.

Wire format (ARCHITECTURE.md section 3), one message per signal or one per asset::

    plant/line1/pump1/temp   {"ts": 1764086400.125, "value": 71.3}
    plant/line1/pump1        {"ts": "2026-11-25T18:00:00Z", "values": {"temp": 71.3, "power": 15.2}}

The payload is strict UTF-8 JSON (RFC 8259: no byte order mark, no lone surrogate, no NaN or
Infinity), an object with exactly one of ``value`` (signal topic) and ``values`` (asset topic).
``ts`` is optional: the receive time is used when absent. It is epoch seconds > 0 or an RFC 3339
date-time, ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`` (``T`` may be ``t`` or a space and ``Z``
may be ``z``, as RFC 3339 section 5.6 allows; no basic format, no comma, no leap second). A ``ts``
further ahead of the receive time than ``max_ahead_s`` (a wrong clock, or milliseconds) is rejected,
since it would never leave the feature window. Values are finite numbers or booleans (stored as 1.0 /
0.0). Signal names (the last topic level, the keys of ``values``) have 1 to ``MAX_NAME_CHARS``
characters, none of them ``/ + #``, a control character (C0, DEL, C1) or a lone surrogate. Anything
else is rejected with a reason and a :class:`RejectCode`; a message is accepted or rejected as a whole.

Readings move in batches of parallel lists, never as one object per reading: the decoder appends four
scalars per reading and the feature window turns a batch into one Polars frame.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from qxedge.core.errors import PayloadError, RejectCode

MAX_NAME_CHARS = 128
# what a signal name may not hold: C0, DEL, C1, surrogates (and in a topic level / + #)
_CONTROL = "\x00-\x1f\x7f-\x9f\ud800-\udfff"
_NAME_FORBIDDEN = re.compile(f"[/+#{_CONTROL}]")
_METRIC_FORBIDDEN = re.compile(f"[{_CONTROL}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# RFC 3339 section 5.6 date-time; datetime.fromisoformat then checks the ranges (month 13, hour 24...)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


@dataclass(slots=True)
class ReadingBatch:
    """Readings as parallel columns: ``assets[i]``, ``signals[i]``, ``ts[i]``, ``values[i]``."""

    assets: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def append(self, asset: str, signal: str, ts: float, value: float) -> None:
        self.assets.append(asset)
        self.signals.append(signal)
        self.ts.append(ts)
        self.values.append(value)

    def extend(self, other: ReadingBatch) -> None:
        self.assets.extend(other.assets)
        self.signals.extend(other.signals)
        self.ts.extend(other.ts)
        self.values.extend(other.values)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that was not accepted, with the reason that goes to the dead letter."""

    topic: str
    payload: bytes
    reason: str
    code: RejectCode = RejectCode.INVALID


class TopicPattern:
    """Maps a topic such as ``plant/line1/pump1/temp`` to ``("line1/pump1", "temp")``.

    The pattern (``plant/{line}/{asset}/{signal}``) holds literal levels and ``{name}`` placeholders;
    ``{signal}`` must be the last level. The asset id is the placeholder levels before the signal,
    joined with ``/``. A topic one level shorter (no signal) is an asset topic for the batch form.
    """

    _CACHE_LIMIT = 100_000

    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        if levels[-1] != "{signal}":
            raise ValueError("the last topic level must be {signal}")
        self.pattern = pattern
        self._literals: list[tuple[int, str]] = []
        self._asset_levels: list[int] = []
        for i, level in enumerate(levels[:-1]):
            if level.startswith("{") and level.endswith("}") and len(level) > 2:
                self._asset_levels.append(i)
            elif "{" in level or "}" in level or level in ("+", "#") or not level:
                raise ValueError(f"invalid topic level {level!r}: use a literal or a {{name}} placeholder")
            else:
                self._literals.append((i, level))
        if not self._asset_levels:
            raise ValueError("the pattern needs at least one placeholder before {signal} to name the asset")
        self._depth = len(levels)
        self._cache: dict[str, tuple[str, str | None]] = {}

    def match(self, topic: str) -> tuple[str, str | None]:
        """Return ``(asset, signal)``; ``signal`` is None on an asset topic. Raise PayloadError otherwise."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        levels = topic.split("/")
        if len(levels) not in (self._depth, self._depth - 1) or any(
            levels[i] != lit for i, lit in self._literals
        ):
            raise PayloadError(f"topic does not match {self.pattern}", RejectCode.BAD_TOPIC)
        asset = "/".join(levels[i] for i in self._asset_levels)
        signal = levels[-1] if len(levels) == self._depth else None
        if not asset or signal == "" or "" in (levels[i] for i in self._asset_levels):
            raise PayloadError(f"topic has an empty level (pattern {self.pattern})", RejectCode.BAD_TOPIC)
        if _METRIC_FORBIDDEN.search(asset) is not None:
            raise PayloadError(
                f"topic has a control character in its asset levels ({asset[:40]!r})", RejectCode.BAD_TOPIC
            )
        if signal is not None:
            check_name(signal, "topic")
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = hit = (asset, signal)
        return hit


def _number(value: object, where: str) -> float:
    # bool first: it is an int subclass, and True is a legitimate reading (a limit switch).
    if value is True or value is False:
        return 1.0 if value else 0.0
    if type(value) is float or type(value) is int:
        try:
            number = float(value)
        except OverflowError:  # an int of 400 digits
            number = math.inf
        if math.isfinite(number):
            return number
        raise PayloadError(f"{where}: not a finite number ({str(value)[:40]})", RejectCode.BAD_VALUE)
    raise PayloadError(
        f"{where}: expected a number or a boolean, got {type(value).__name__}", RejectCode.BAD_VALUE
    )


def name_problem(name: object, *, topic_level: bool = True) -> str | None:
    """Why ``name`` cannot be a signal name, or None when it can (the rules in the module docstring).
    ``topic_level=False`` allows ``/ + #`` (Sparkplug metric names such as ``Inputs/temp``)."""
    if type(name) is not str:
        return f"not text ({type(name).__name__})"
    if not name:
        return "empty"
    if len(name) > MAX_NAME_CHARS:
        return f"{len(name)} characters, over the limit of {MAX_NAME_CHARS}"
    bad = (_NAME_FORBIDDEN if topic_level else _METRIC_FORBIDDEN).search(name)
    if bad is not None:
        rule = "no / + #, control characters or lone surrogates" if topic_level else "no control characters"
        return f"contains {bad.group()!r} ({rule})"
    return None


def check_name(name: str, where: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise PayloadError(f"{where}: invalid signal name {name[:40]!r}: {problem}", RejectCode.BAD_NAME)
    return name


def _timestamp(raw: object, received_at: float, max_ahead_s: float) -> float:
    if raw is None:
        return received_at
    if type(raw) is str:
        if _RFC3339.fullmatch(raw) is None:
            raise PayloadError(
                f"ts: not an RFC 3339 date-time with a Z or +HH:MM offset, like 2026-11-25T18:00:00.5+09:00"
                f" ({raw[:40]!r})",
                RejectCode.BAD_TS,
            )
        try:
            moment = datetime.fromisoformat(raw.upper())
        except ValueError as exc:  # a field out of range (hour 24, second 60, day 31 of a 30-day month)
            raise PayloadError(f"ts: not a valid time ({raw!r}: {exc})", RejectCode.BAD_TS) from exc
        ts = moment.timestamp()
        if not ts > 0:
            raise PayloadError(f"ts: before 1970 ({raw!r})", RejectCode.BAD_TS)
    else:
        try:
            ts = _number(raw, "ts") if type(raw) is not bool else math.nan
        except PayloadError:  # not a number, or not finite
            ts = math.nan
        if not ts > 0:
            raise PayloadError(
                f"ts: expected epoch seconds > 0 or an RFC 3339 string, got {str(raw)[:40]}",
                RejectCode.BAD_TS,
            )
    if ts > received_at + max_ahead_s:
        hint = " (milliseconds? ts is in seconds)" if ts > received_at * 100 else ""
        raise PayloadError(f"ts: {ts - received_at:.4g} s in the future{hint}", RejectCode.BAD_TS)
    return ts


class ReadingDecoder:
    """Decodes MQTT messages in the reading format into a ReadingBatch, rejecting bad ones with a reason."""

    def __init__(self, pattern: TopicPattern, max_payload_bytes: int, max_ahead_s: float = 300.0) -> None:
        self.pattern = pattern
        self.max_payload_bytes = max_payload_bytes
        self.max_ahead_s = max_ahead_s
        self._signals: set[str] = set()  # signal names of the batch form already checked

    def decode(
        self,
        messages: Iterable[tuple[str, bytes]],
        received_at: float,
        into: ReadingBatch,
        rejected: list[Rejected],
    ) -> None:
        """Append the readings of every valid message to ``into`` and every invalid one to ``rejected``."""
        for topic, payload in messages:
            try:
                self._decode_one(topic, payload, received_at, into)
            except PayloadError as exc:
                rejected.append(Rejected(topic, payload, str(exc), exc.code))
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # what the checks missed
                reason = f"invalid payload ({type(exc).__name__}: {exc})"[:200]
                rejected.append(Rejected(topic, payload, reason, RejectCode.INVALID))

    def _decode_one(self, topic: str, payload: bytes, received_at: float, into: ReadingBatch) -> None:
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                f"payload of {len(payload)} bytes exceeds the limit of {self.max_payload_bytes}",
                RejectCode.OVERSIZE,
            )
        asset, signal = self.pattern.match(topic)
        try:
            # strict UTF-8 JSON (no BOM, no lone surrogate, no NaN), ~7x json.loads on a 100-value batch
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:  # bad, or valid with ints beyond 64 bits: json.loads decides
            doc = _loads_slow(payload)
        if type(doc) is not dict:
            raise PayloadError(
                f"payload must be a JSON object, got {type(doc).__name__}", RejectCode.WRONG_SHAPE
            )
        if signal is not None:
            if "value" not in doc or "values" in doc:
                raise PayloadError(
                    'a signal topic takes "value" alone: '
                    + ('"values" goes on the asset topic' if "values" in doc else 'missing "value"'),
                    RejectCode.WRONG_SHAPE,
                )
            ts = _timestamp(doc.get("ts"), received_at, self.max_ahead_s)
            into.append(asset, signal, ts, _number(doc["value"], "value"))
            return
        values = doc.get("values")
        if type(values) is not dict or not values or "value" in doc:
            raise PayloadError(
                'an asset topic needs a non-empty "values" object'
                + (' and no "value"' if "value" in doc else ""),
                RejectCode.WRONG_SHAPE,
            )
        ts = _timestamp(doc.get("ts"), received_at, self.max_ahead_s)
        names = list(values)
        numbers = list(values.values())
        if not self._signals.issuperset(names):  # new signal names: check them once
            for name in names:
                check_name(name, "values")
            if len(self._signals) < 100_000:
                self._signals.update(names)
        # fast path: plain floats whose sum is finite (a NaN or an infinity makes the sum non-finite)
        if set(map(type, numbers)) != _FLOATS or not math.isfinite(sum(numbers)):
            numbers = [_number(v, f"values.{name}") for name, v in zip(names, numbers, strict=True)]
        n = len(names)
        into.assets.extend([asset] * n)
        into.signals.extend(names)
        into.ts.extend([ts] * n)
        into.values.extend(numbers)


_FLOATS = {float}


def _loads_slow(payload: bytes) -> object:
    """What orjson refused, parsed as strictly by the standard library: the reason of a rejection, or
    a document with integers beyond 64 bits (valid JSON). ``json.loads`` on bytes would guess UTF-16
    and accept a byte order mark or encoded surrogates: the bytes are decoded here, strictly."""
    try:
        text = payload.decode("utf-8")  # strict: no encoded surrogates (ED A0 80), no overlong forms
    except UnicodeDecodeError as exc:
        reason = f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        raise PayloadError(reason, RejectCode.INVALID_UTF8) from exc
    if text.startswith("\ufeff"):
        raise PayloadError(
            "payload is not valid UTF-8 JSON (it starts with a byte order mark)", RejectCode.INVALID_UTF8
        )
    if "\x00" in text:
        raise PayloadError("payload is not valid UTF-8 JSON (NUL bytes: UTF-16?)", RejectCode.INVALID_UTF8)
    try:
        doc = json.loads(text, parse_constant=_not_json, parse_float=_finite, parse_int=_finite)
    except ValueError as exc:  # json.JSONDecodeError (PayloadError from the hooks passes through)
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError(f"payload is not valid JSON ({exc})", RejectCode.INVALID_JSON) from exc
    except RecursionError as exc:
        raise PayloadError("payload is nested too deeply", RejectCode.INVALID_JSON) from exc
    if _has_lone_surrogate(doc):
        reason = "payload is not valid Unicode (a \\u escape of a lone surrogate, e.g. \\ud800)"
        raise PayloadError(reason, RejectCode.INVALID_UTF8)
    return doc


def _not_json(constant: str) -> float:
    raise PayloadError(f"not a finite number ({constant} is not JSON)", RejectCode.BAD_VALUE)


def _finite(text: str) -> float:
    number = float(text)  # "1e999" and 400-digit integers give inf, never an exception
    if math.isinf(number):
        raise PayloadError(f"not a finite number ({text[:40]})", RejectCode.BAD_VALUE)
    return number


def _has_lone_surrogate(doc: object) -> bool:
    stack = [doc]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if _SURROGATE.search(item) is not None:
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False
