"""Sensor readings: the columnar batch that moves through the agent, and the JSON reading codec.

Wire format (ARCHITECTURE.md section 3), one message per signal or one per asset::

    plant/line1/pump1/temp   {"ts": 1764086400.125, "value": 71.3}
    plant/line1/pump1        {"ts": "2026-11-25T18:00:00Z", "values": {"temp": 71.3, "power": 15.2}}

``ts`` (epoch seconds or RFC 3339 with an offset) is optional: the receive time is used when absent; a
``ts`` further ahead of the receive time than ``max_ahead_s`` (a wrong clock, or milliseconds) is
rejected, since it would never leave the feature window. Values are finite
numbers or booleans (stored as 1.0 / 0.0). Anything else is rejected with a reason; a message is
accepted or rejected as a whole.

Readings move in batches of parallel lists, never as one object per reading: the decoder appends four
scalars per reading and the feature window turns a batch into one Polars frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from qxedge.core.errors import PayloadError


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
            raise PayloadError(f"topic does not match {self.pattern}")
        asset = "/".join(levels[i] for i in self._asset_levels)
        signal = levels[-1] if len(levels) == self._depth else None
        if not asset or signal == "" or "" in (levels[i] for i in self._asset_levels):
            raise PayloadError(f"topic has an empty level (pattern {self.pattern})")
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
        raise PayloadError(f"{where}: not a finite number ({str(value)[:40]})")
    raise PayloadError(f"{where}: expected a number or a boolean, got {type(value).__name__}")


def _signal_name(name: str) -> str:
    if not name or "/" in name or "+" in name or "#" in name:
        raise PayloadError(f"values: invalid signal name {name!r}")
    return name


def _timestamp(raw: object, received_at: float, max_ahead_s: float) -> float:
    if raw is None:
        return received_at
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadError(f"ts: not an RFC 3339 time ({raw[:40]!r})") from exc
        if moment.tzinfo is None:
            raise PayloadError(f"ts: RFC 3339 needs a time zone offset or Z ({raw[:40]!r})")
        ts = moment.timestamp()
    else:
        ts = _number(raw, "ts") if not isinstance(raw, bool) else math.nan
        if not ts > 0:
            raise PayloadError(f"ts: expected epoch seconds > 0 or an RFC 3339 string, got {str(raw)[:40]}")
    if ts > received_at + max_ahead_s:
        hint = " (milliseconds? ts is in seconds)" if ts > received_at * 100 else ""
        raise PayloadError(f"ts: {ts - received_at:.0f} s in the future{hint}")
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
                rejected.append(Rejected(topic, payload, str(exc)))
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # what the checks missed
                reason = f"invalid payload ({type(exc).__name__}: {exc})"[:200]
                rejected.append(Rejected(topic, payload, reason))

    def _decode_one(self, topic: str, payload: bytes, received_at: float, into: ReadingBatch) -> None:
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                f"payload of {len(payload)} bytes exceeds the limit of {self.max_payload_bytes}"
            )
        asset, signal = self.pattern.match(topic)
        try:
            doc = orjson.loads(payload)  # strict JSON, ~7x json.loads on a 100-value batch
        except orjson.JSONDecodeError:  # bad or non-strict (NaN, huge ints): json.loads says why
            doc = _loads_slow(payload)
        if type(doc) is not dict:
            raise PayloadError(f"payload must be a JSON object, got {type(doc).__name__}")
        ts = _timestamp(doc.get("ts"), received_at, self.max_ahead_s)
        if signal is not None:
            if "value" not in doc:
                raise PayloadError('missing "value" (the batch form "values" goes on the asset topic)')
            into.append(asset, signal, ts, _number(doc["value"], "value"))
            return
        values = doc.get("values")
        if type(values) is not dict or not values:
            raise PayloadError('an asset topic needs a non-empty "values" object')
        names = list(values)
        numbers = list(values.values())
        if not self._signals.issuperset(names):  # new signal names: check them once
            for name in names:
                _signal_name(name)
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
    """The standard library's parser: the reason of a rejection, or NaN / 1e999 / huge ints that
    orjson refuses outright and the number checks then reject as not finite."""
    try:
        return json.loads(payload)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise PayloadError(f"payload is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise PayloadError("payload is nested too deeply") from exc
