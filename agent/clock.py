"""The plant's clock: slots aligned to the local wall clock of the site, and a clock that may run fast.

**Slots** (:class:`SlotGrid`) are defined in local time: a slot boundary is an instant at which the
site's wall clock reads a multiple of the slot length after local midnight (``slot_minutes`` divides a
day: 15, 30, 60 ...). Every instant lies in exactly one slot, so a daylight-saving change neither skips
nor doubles one in execution:

- spring forward (Europe/Berlin, 02:00 CET -> 03:00 CEST): the local hour 02:00-03:00 does not exist,
  so that day has 23 hourly slots; the slot 01:00-03:00 local lasts one real hour;
- fall back (03:00 CEST -> 02:00 CET): the local hour 02:00-03:00 happens twice, so that day has 25
  hourly slots, two of them starting at 02:00 local (with offsets +02:00 and +01:00); they are two
  slots, each executed once;
- with slots longer than the shift, a boundary the clock jumps over does not exist: two-hour slots on
  the spring-forward day run 00:00-04:00 local (three real hours); on the fall-back day the slot from
  02:00 CEST ends at the repeated 02:00 CET (one real hour).

A slot is known by its start (epoch seconds, an int): unique across days and restarts. Its price is
billed for its real length (:attr:`Slot.hours`).

**The clock** (:class:`Clock`) maps real time to plant time: ``plant = plant0 + (real - real0) x
speed``. A plant runs at speed 1 (plant time is the wall clock). ``qxedge demo`` runs the same code at a
speed factor (1440: an hour-long slot every 2.5 s), the one difference between the two.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_S = 86_400
MAX_SHIFT_S = 4 * 3600  # far more than any daylight-saving shift (Antarctica/Troll: 2 h)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Asia/Seoul``); ValueError naming it when it is unknown."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Seoul)") from exc


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One slot of the plant's clock: ``[start, end)`` in epoch seconds (plant time)."""

    start: int
    end: int

    @property
    def seconds(self) -> int:
        return self.end - self.start

    @property
    def hours(self) -> float:
        return self.seconds / 3600


class SlotGrid:
    """The slots of a time zone: boundaries where the local wall clock reads a multiple of ``slot_s``."""

    def __init__(self, tz: ZoneInfo | str, slot_s: int) -> None:
        if slot_s <= 0 or DAY_S % slot_s:
            raise ValueError(f"a slot of {slot_s} s does not divide a day")
        self.tz = zone(tz) if isinstance(tz, str) else tz
        self.slot_s = slot_s

    def offset(self, t: int) -> int:
        """The zone's UTC offset (seconds) in force at instant ``t``."""
        delta = datetime.fromtimestamp(t, self.tz).utcoffset()
        return 0 if delta is None else int(delta.total_seconds())

    def _is_boundary(self, t: int) -> bool:
        return (t + self.offset(t)) % self.slot_s == 0

    def _change(self, lo: int, hi: int) -> int:
        """The first instant in ``(lo, hi]`` whose offset differs from ``lo``'s (one must)."""
        before = self.offset(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.offset(mid) == before:
                lo = mid
            else:
                hi = mid
        return hi

    def next_boundary(self, t: float) -> int:
        """The first slot boundary strictly after ``t``."""
        s, t0 = self.slot_s, math.floor(t)
        while True:
            off = self.offset(t0)
            candidate = ((t0 + off) // s + 1) * s - off
            if self.offset(candidate) == off:  # no change of offset in between (they are months apart)
                return candidate
            change = self._change(t0, candidate)
            if self._is_boundary(change):
                return change
            t0 = change  # the local clock jumped past a multiple: go on under the new offset

    def start_of(self, t: float) -> int:
        """The last slot boundary at or before ``t``."""
        s, t0 = self.slot_s, math.floor(t)
        off = self.offset(t0)
        candidate = ((t0 + off) // s) * s - off
        if self.offset(candidate) == off:
            return candidate
        change = self._change(candidate, t0)  # the offset changed in (candidate, t0]
        return change if self._is_boundary(change) else self.start_of(change - 1)

    def slot_at(self, t: float) -> Slot:
        start = self.start_of(t)
        return Slot(start, self.next_boundary(start))

    def after(self, slot: Slot) -> Slot:
        return Slot(slot.end, self.next_boundary(slot.end))

    def slots(self, first: Slot, n: int) -> list[Slot]:
        """``n`` consecutive slots from ``first``."""
        out = [first]
        while len(out) < n:
            out.append(self.after(out[-1]))
        return out[:n]

    def between(self, start: float, end: float, limit: int | None = None) -> list[Slot]:
        """The slots wholly inside ``[start, end)`` (at most ``limit`` of them)."""
        first = self.slot_at(start)
        slot = first if first.start >= start else self.after(first)
        out: list[Slot] = []
        while slot.end <= end and (limit is None or len(out) < limit):
            out.append(slot)
            slot = self.after(slot)
        return out

    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.tz)

    def label(self, slot: Slot) -> str:
        """The slot's local start, e.g. ``2026-10-25T02:00+01:00`` (the offset tells a repeated hour)."""
        return self.local(slot.start).isoformat(timespec="minutes")

    def slot_of_day(self, slot: Slot) -> int:
        """Which slot of the local day it is by its wall-clock start (``02:00`` is 2 for hourly slots:
        the two slots of a repeated hour share it, a skipped hour has none)."""
        at = self.local(slot.start)
        return (at.hour * 3600 + at.minute * 60 + at.second) // self.slot_s


class Clock:
    """Plant time from real time: ``plant0 + (real - real0) x speed``; at speed 1 with no anchor it is
    the wall clock. Sleeps are in real time, so a compressed clock (the demo) runs the same code fast."""

    def __init__(self, grid: SlotGrid, speed: float = 1.0, anchor: tuple[float, float] | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"a clock's speed must be positive, got {speed}")
        self.grid = grid
        self.speed = speed
        self.anchor = anchor  # (real, plant): the plant clock reads `plant` at real time `real`

    @property
    def wall(self) -> bool:
        """Whether plant time is the wall clock."""
        return self.speed == 1.0 and (self.anchor is None or self.anchor[0] == self.anchor[1])

    def now(self) -> float:
        real = time.time()
        if self.anchor is None:
            return real
        real0, plant0 = self.anchor
        return plant0 + (real - real0) * self.speed

    def real(self, plant_ts: float) -> float:
        """The real (epoch) time at which the plant clock reads ``plant_ts``."""
        if self.anchor is None:
            return plant_ts
        real0, plant0 = self.anchor
        return real0 + (plant_ts - plant0) / self.speed

    def real_seconds(self, plant_s: float) -> float:
        return plant_s / self.speed

    async def sleep_until(self, plant_ts: float) -> None:
        await asyncio.sleep(max(0.0, self.real(plant_ts) - time.time()))
