"""The energy tariff by local time of day and day type (weekday, weekend, listed holidays).

Each day type has its periods: a mapping from the local time a price starts (``"HH:MM"``) to the price
per kWh, starting at ``"00:00"``. A slot is priced by the period its local start falls in (the periods
must start on slot boundaries: the config checks it). The default is the Korean industrial time-of-use
tariff (summer weekday: light 22-08, peak 11-12 and 13-18, mid otherwise; weekends and holidays light all
day); prices are indicative: give the contract's own.
"""

from __future__ import annotations

import bisect
import math
import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LIGHT, MID, PEAK = 94.0, 145.0, 211.0
KOREAN_WEEKDAY = {
    "00:00": LIGHT,
    "08:00": MID,
    "11:00": PEAK,
    "12:00": MID,
    "13:00": PEAK,
    "18:00": MID,
    "22:00": LIGHT,
}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Periods = dict[str, float]


def _parse(periods: Periods) -> list[tuple[int, float]]:
    """``{"00:00": 94, "08:00": 145}`` -> [(0, 94.0), (480, 145.0)] (minute of day, price)."""
    out = []
    for at, price in periods.items():
        m = _HHMM.match(at)
        if m is None:
            raise ValueError(f'{at!r}: a period starts at a local time HH:MM (quote it in YAML: "08:00")')
        if not math.isfinite(price) or price < 0:
            raise ValueError(f"{at}: price {price} is not a finite number >= 0")
        out.append((int(m[1]) * 60 + int(m[2]), float(price)))
    out.sort()
    if not out or out[0][0] != 0:
        raise ValueError('the periods must start at "00:00"')
    return out


class TariffConfig(BaseModel):
    """Price per kWh by local time of day, for weekdays, weekend days and listed holidays."""

    model_config = ConfigDict(extra="forbid")
    weekday: Periods = Field(
        default_factory=lambda: dict(KOREAN_WEEKDAY), description='local start "HH:MM" -> price per kWh'
    )
    weekend: Periods | None = Field(None, description="default: the holiday periods")
    holiday: Periods = Field(default_factory=lambda: {"00:00": LIGHT}, description="holidays (and weekends)")
    holidays: list[date] = Field(default_factory=list, description="dates priced as holidays, YYYY-MM-DD")
    weekend_days: list[Weekday] = Field(["sat", "sun"], description="the days priced as the weekend")
    _parsed: dict[str, list[tuple[int, float]]] = PrivateAttr(default_factory=dict)

    @field_validator("weekday", "weekend", "holiday")
    @classmethod
    def _periods(cls, periods: Periods | None) -> Periods | None:
        if periods is not None:
            _parse(periods)
        return periods

    @model_validator(mode="after")
    def _prepare(self) -> TariffConfig:
        holiday = _parse(self.holiday)
        self._parsed = {
            "weekday": _parse(self.weekday),
            "weekend": holiday if self.weekend is None else _parse(self.weekend),
            "holiday": holiday,
        }
        return self

    def day_type(self, day: date) -> Literal["weekday", "weekend", "holiday"]:
        if day in self.holidays:
            return "holiday"
        return "weekend" if WEEKDAYS[day.weekday()] in self.weekend_days else "weekday"

    def price(self, local: datetime) -> float:
        """The price per kWh at local time ``local``."""
        periods = self._parsed[self.day_type(local.date())]
        minute = local.hour * 60 + local.minute
        return periods[bisect.bisect_right(periods, (minute, math.inf)) - 1][1]

    def period_starts(self) -> set[int]:
        """Every minute of the day at which some period starts."""
        return {minute for periods in self._parsed.values() for minute, _ in periods}
