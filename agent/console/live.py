"""``LiveView``: what the console shows of each asset, kept from the agent's evaluations.

An :class:`~qxedge.connectors.plant.EvaluationObserver`: after each evaluation the agent tells it every
asset that changed, with its signals' newest readings, each model's newest score (``score/<model>``)
and its setpoint. It keeps the newest of each asset and a short history for the plots: one point per
``step_s`` (a newer evaluation within a step replaces the step's point), ``history_s`` back, so an
agent evaluating on every reading costs the same memory as one evaluating once a second. At most
``max_assets`` assets are kept (the first ones seen; the rest are counted): a topic naming new assets
by the thousand cannot grow it without bound.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping

from qxedge.connectors.plant import Evaluation

MAX_ASSETS = 2000
MAX_POINTS = 600  # per asset: a plot of 600 points is as fine as the screen


class LiveView:
    name = "console"

    def __init__(self, history_s: float, every_s: float, max_assets: int = MAX_ASSETS) -> None:
        self.history_s = history_s
        self.step_s = max(every_s, history_s / MAX_POINTS)
        self.max_assets = max_assets
        self.latest: dict[str, tuple[float, dict[str, float]]] = {}  # asset -> (ts, metrics)
        self.history: dict[str, deque[tuple[float, dict[str, float]]]] = {}
        self.ignored = 0  # assets not kept (over max_assets)
        self.evaluated_at = 0.0
        self._tick = asyncio.Event()

    def evaluated(self, evaluation: Evaluation) -> None:
        """On the event loop, after each evaluation: O(assets that changed)."""
        ts = evaluation.ts
        self.evaluated_at = ts
        points = math.ceil(self.history_s / self.step_s) + 1
        for asset, metrics in evaluation.assets.items():
            if asset not in self.latest and len(self.latest) >= self.max_assets:
                self.ignored += 1
                continue
            values = {k: float(v) for k, v in metrics.items()}
            self.latest[asset] = (ts, values)
            history = self.history.get(asset)
            if history is None:
                history = self.history[asset] = deque(maxlen=points)
            if history and ts - history[-1][0] < self.step_s:
                history[-1] = (history[-1][0], values)  # the step's newest
            else:
                history.append((ts, values))
            while history and history[0][0] < ts - self.history_s:
                history.popleft()
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def changed(self, timeout_s: float) -> bool:
        """Wait for the next evaluation (True) or ``timeout_s`` (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._tick.wait()
        except TimeoutError:
            return False
        return True

    def series(self, asset: str) -> list[tuple[float, Mapping[str, float]]]:
        """The asset's history, oldest first (empty for an asset never seen)."""
        return list(self.history.get(asset, ()))
