"""The base-load forecast: what the rest of the plant draws in each slot of the horizon ahead.

Learnt online from the readings: each slot's mean base load (``observe``) updates

- a **profile per slot of day** (the slot's wall-clock start: 08:00 is one key): exponential smoothing
  over days, ``profile = alpha x today + (1 - alpha) x profile`` (alpha 0.5: half the same slot
  yesterday, half the days before);
- **today's level**: how far the last slot was above or below its profile.

A slot ``h`` slots ahead is forecast as its profile plus today's deviation damped by ``damping ** h``
(the near slots follow today, the far ones the profile). A slot of day with no profile yet (the first
day) falls back to **persistence**: the last slot's mean, or the latest reading before any slot closed.
``method: persistence`` uses that alone (the plain rule, the bench's reference: ``bench/forecast.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from qxedge.agent.settings import ForecastConfig


class BaseLoadForecast:
    """Per slot of day profile and today's level; ``profile`` is shared with the plan state on disk."""

    def __init__(self, config: ForecastConfig, profile: dict[int, float] | None = None) -> None:
        self.config = config
        self.profile: dict[int, float] = {} if profile is None else profile
        self.last: float | None = None  # the last closed slot's mean base load
        self.deviation = 0.0  # ... minus its profile before it was learnt

    def observe(self, key: int, kw: float) -> None:
        """A slot of day ``key`` closed with a mean base load of ``kw``."""
        seen = self.profile.get(key)
        self.deviation = 0.0 if seen is None else kw - seen
        a = self.config.alpha
        self.profile[key] = kw if seen is None else a * kw + (1 - a) * seen
        self.last = kw

    def predict(self, keys: Sequence[int], now_kw: float | None) -> list[float] | None:
        """The base load of the slots of day ``keys`` (the next slot first); ``now_kw`` is the latest
        reading. None when there is nothing to go by (no reading, no slot closed, no ``base_kw``)."""
        level = self.last if self.last is not None else now_kw
        if level is None:
            level = self.config.base_kw
        if level is None:
            return None
        if self.config.method == "persistence":
            return [level] * len(keys)
        out = []
        damping = self.config.damping
        deviation = self.deviation if self.last is not None else 0.0
        for h, key in enumerate(keys, start=1):
            seen = self.profile.get(key)
            out.append(level if seen is None else max(0.0, seen + deviation * damping**h))
        return out
