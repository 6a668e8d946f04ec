"""The tariff by local time of day and day type, and the planning config that holds it."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from qxedge.agent.settings import PlanningConfig
from qxedge.agent.tariff import LIGHT, MID, PEAK, TariffConfig


def test_the_default_is_the_korean_time_of_use_tariff_on_weekdays() -> None:
    tariff = TariffConfig()
    monday = [tariff.price(datetime(2026, 6, 1, h)) for h in range(24)]
    assert monday[:8] == [LIGHT] * 8 and monday[8:11] == [MID] * 3
    assert monday[11] == PEAK and monday[12] == MID and monday[13:18] == [PEAK] * 5
    assert monday[18:22] == [MID] * 4 and monday[22:] == [LIGHT] * 2
    assert tariff.price(datetime(2026, 6, 1, 11, 59)) == PEAK  # within a period
    sunday = {tariff.price(datetime(2026, 6, 7, h)) for h in range(24)}
    assert sunday == {LIGHT}  # weekends: the holiday periods unless given


def test_day_types_weekend_days_and_listed_holidays() -> None:
    tariff = TariffConfig(
        weekday={"00:00": 1, "09:00": 3},
        weekend={"00:00": 2},
        holiday={"00:00": 0.5},
        holidays=[date(2026, 6, 3)],
        weekend_days=["fri", "sat"],
    )
    assert tariff.day_type(date(2026, 6, 1)) == "weekday" and tariff.price(datetime(2026, 6, 1, 10)) == 3
    assert tariff.day_type(date(2026, 6, 3)) == "holiday" and tariff.price(datetime(2026, 6, 3, 10)) == 0.5
    assert tariff.day_type(date(2026, 6, 5)) == "weekend" and tariff.price(datetime(2026, 6, 5, 10)) == 2
    assert tariff.day_type(date(2026, 6, 7)) == "weekday"  # Sunday is a working day here


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ({"08:00": 1}, 'must start at "00:00"'),
        ({"00:00": 1, "8:00": 2}, "HH:MM"),
        ({"00:00": 1, "24:00": 2}, "HH:MM"),
        ({"00:00": -1}, "finite number >= 0"),
        ({"00:00": float("nan")}, "finite number >= 0"),
    ],
)
def test_bad_periods(periods: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TariffConfig(weekday=periods)


def test_periods_must_start_on_slot_boundaries() -> None:
    doc = {"cap_kw": 100, "slot_minutes": 60, "tariff": {"weekday": {"00:00": 1, "08:30": 2}}}
    with pytest.raises(ValueError, match="08:30, not on a slot boundary"):
        PlanningConfig.model_validate(doc)
    assert PlanningConfig.model_validate({**doc, "slot_minutes": 30}).slot_s == 1800


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slot_minutes": 7}, "does not divide a day"),
        ({"timezone": "Asia/Nowhere"}, "unknown time zone"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
    ],
)
def test_bad_clock_settings(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlanningConfig.model_validate({"cap_kw": 100, **change})
