"""The one reconnect backoff of qxedge: exponential, capped, with *equal jitter*.

Every reconnect loop (MQTT, OPC UA, Modbus TCP, Sparkplug B) waits what :meth:`Backoff.next_delay`
returns and logs that very number before it sleeps. The rule is "equal jitter" of the AWS Architecture
Blog's *Exponential Backoff And Jitter*: the n-th delay in a row (n = 0, 1, ...) is drawn uniformly from
``[c/2, c]`` where ``c = min(high, low * 2**n)``. Half the ceiling is a floor, so a device that refuses
at once is never hammered; the other half spreads the agents of a plant that lost the same server at the
same moment. :meth:`Backoff.reset` after a successful connect starts again from ``low``.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays in ``[c/2, c]``, ``c`` doubling from ``low`` up to ``high`` (seconds)."""

    def __init__(self, low: float, high: float, *, rng: random.Random | None = None) -> None:
        if not 0 < low <= high:
            raise ValueError(f"backoff needs 0 < low <= high, got low {low}, high {high}")
        self.low = low
        self.high = high
        self._ceiling = low
        self._rng = rng or random.Random()

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return self._ceiling

    def reset(self) -> None:
        """Connected again: the next delay is drawn from ``[low/2, low]``."""
        self._ceiling = self.low

    def next_delay(self) -> float:
        """The seconds to wait before the next try; the ceiling doubles (up to ``high``) for the one after."""
        c = self._ceiling
        self._ceiling = min(self.high, c * 2)
        return self._rng.uniform(c / 2, c)
