"""The plant's clock: slots on the site's wall clock, daylight-saving days, the speed factor."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qxedge.agent.clock import Clock, Slot, SlotGrid, zone

SEOUL, BERLIN = ZoneInfo("Asia/Seoul"), ZoneInfo("Europe/Berlin")


def at(tz: ZoneInfo, *parts: int) -> int:
    return int(datetime(*parts, tzinfo=tz).timestamp())  # type: ignore[misc]


def day_of_slots(grid: SlotGrid, tz: ZoneInfo, y: int, m: int, d: int) -> list[Slot]:
    """The slots starting on one local day."""
    start, end = at(tz, y, m, d), at(tz, y, m, d + 1)
    slots = [grid.slot_at(start)]
    while grid.after(slots[-1]).start < end:
        slots.append(grid.after(slots[-1]))
    return slots


def test_slots_are_aligned_to_the_local_wall_clock() -> None:
    grid = SlotGrid("Asia/Seoul", 3600)
    now = at(SEOUL, 2026, 6, 1, 8, 42, 17)
    slot = grid.slot_at(now)
    assert slot == Slot(at(SEOUL, 2026, 6, 1, 8), at(SEOUL, 2026, 6, 1, 9))
    assert grid.label(slot) == "2026-06-01T08:00+09:00"
    assert grid.next_boundary(now) == slot.end and grid.next_boundary(slot.end) == slot.end + 3600
    quarter = SlotGrid("Asia/Seoul", 900).slot_at(now)
    assert grid.local(quarter.start).strftime("%H:%M") == "08:30" and quarter.seconds == 900
    assert SlotGrid("Asia/Seoul", 900).slot_of_day(quarter) == 8 * 4 + 2
    # across midnight: the day rolls on, the slot of day starts again
    last = grid.slot_at(at(SEOUL, 2026, 6, 1, 23, 30))
    assert (
        grid.label(grid.after(last)) == "2026-06-02T00:00+09:00" and grid.slot_of_day(grid.after(last)) == 0
    )


def test_slot_lengths_must_divide_a_day_and_zones_must_exist() -> None:
    with pytest.raises(ValueError, match="does not divide a day"):
        SlotGrid("UTC", 7 * 60)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


@pytest.mark.parametrize(
    ("slot_s", "month", "day", "count", "repeated"),
    [
        (3600, 3, 29, 23, ()),  # spring forward: 02:00-03:00 does not exist
        (3600, 10, 25, 25, ("02:00",)),  # fall back: 02:00-03:00 twice
        (900, 3, 29, 92, ()),
        (900, 10, 25, 100, ("02:00", "02:15", "02:30", "02:45")),
        (3600, 6, 1, 24, ()),
    ],
)
def test_daylight_saving_days_neither_skip_nor_double_an_instant(
    slot_s: int, month: int, day: int, count: int, repeated: tuple[str, ...]
) -> None:
    """Europe/Berlin: slots are local; every instant of the day lies in exactly one slot."""
    grid = SlotGrid(BERLIN, slot_s)
    slots = day_of_slots(grid, BERLIN, 2026, month, day)
    assert len(slots) == count
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))  # no gap, no overlap
    assert all(s.seconds == slot_s for s in slots)
    labels = [grid.local(s.start).strftime("%H:%M") for s in slots]
    assert sorted(hhmm for hhmm in set(labels) if labels.count(hhmm) > 1) == list(repeated)
    for hhmm in repeated:  # the two are told apart by their offset
        offsets = {grid.label(s)[-6:] for s in slots if grid.local(s.start).strftime("%H:%M") == hhmm}
        assert offsets == {"+02:00", "+01:00"}
    if month == 3 and slot_s == 3600:
        assert "02:00" not in labels and labels[:3] == ["00:00", "01:00", "03:00"]


def test_two_hour_slots_across_the_changes() -> None:
    grid = SlotGrid(BERLIN, 7200)
    spring = day_of_slots(grid, BERLIN, 2026, 3, 29)
    assert [(grid.local(s.start).strftime("%H:%M"), s.hours) for s in spring[:2]] == [
        ("00:00", 3.0),
        ("04:00", 2.0),
    ]
    fall = day_of_slots(grid, BERLIN, 2026, 10, 25)
    assert [s.hours for s in fall[:3]] == [2.0, 1.0, 2.0]


@settings(max_examples=200, deadline=None)
@given(
    t=st.integers(at(BERLIN, 2026, 1, 1), at(BERLIN, 2027, 1, 1)),
    slot_s=st.sampled_from([900, 1800, 3600, 7200, 86_400]),
    tz=st.sampled_from(["Europe/Berlin", "Asia/Seoul", "America/New_York", "Australia/Lord_Howe"]),
)
def test_every_instant_lies_in_one_slot(t: int, slot_s: int, tz: str) -> None:
    grid = SlotGrid(tz, slot_s)
    slot = grid.slot_at(t)
    assert slot.start <= t < slot.end
    assert grid.slot_at(slot.start) == slot and grid.slot_at(slot.end - 1) == slot
    assert grid.slot_at(slot.end).start == slot.end  # the next one starts where this one ends
    assert grid.local(slot.start).minute * 60 % min(slot_s, 3600) == 0  # on the local wall clock


def test_the_speed_factor_maps_real_time_to_plant_time() -> None:
    grid = SlotGrid("Asia/Seoul", 3600)
    plant0 = at(SEOUL, 2026, 6, 1)
    real0 = time.time() + 10
    clock = Clock(grid, speed=1440, anchor=(real0, plant0))  # an hour every 2.5 s
    assert clock.real(plant0 + 3600) == pytest.approx(real0 + 2.5)
    assert clock.real_seconds(3600) == 2.5
    assert clock.now() == pytest.approx(plant0 - 14_400, abs=1440)  # 10 real seconds before: 4 plant hours
    assert not clock.wall
    wall = Clock(grid)
    assert wall.wall and abs(wall.now() - time.time()) < 1 and wall.real(123.0) == 123.0


async def test_sleeping_until_a_plant_time_takes_its_real_share() -> None:
    grid = SlotGrid("UTC", 3600)
    clock = Clock(grid, speed=36_000, anchor=(time.time(), 0.0))  # an hour every 0.1 s
    await clock.sleep_until(1800)
    assert clock.now() >= 1800


def test_a_clock_needs_a_positive_speed() -> None:
    with pytest.raises(ValueError, match="positive"):
        Clock(SlotGrid("UTC", 3600), speed=0)
