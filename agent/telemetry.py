"""Telemetry upstream: per asset, its features, scores and decisions on ``qx/v1/{site}/telemetry``.

Every ``every_s`` the agent puts one record per asset in the disk-backed outbox (stream ``telemetry``),
which sends them in order over the uplink at QoS 1 and survives broker outages, agent crashes and
reboots. A record (JSON, schema version 1)::

    {"v": 1, "site": "gumi-line-3", "seq": 4711, "ts": 1764086400.0, "asset": "line1/pump3",
     "readings": {"temp": 71.3, ...},                       # newest reading of each signal
     "features": {"temp.mean": 70.9, "temp.slope": 0.02, ...},   # the window statistics
     "scores": {"anomaly": 0.41},                            # each model's latest score
     "decisions": {"setpoint": 0.6}}                         # the setpoint in force

``seq`` counts the site's telemetry records, without gaps, across restarts: the upstream side
de-duplicates by it (a record acknowledged just before a crash may come twice) and sees any loss as a
gap (only the outbox's overflow policy drops records, and it counts and alarms when it does).

The publisher is an :class:`~qxedge.connectors.plant.EvaluationObserver`: after each evaluation the
agent calls ``evaluated`` with the readings, scores and setpoint of each asset that changed and the
window statistics of that evaluation; ``run`` (in the agent's TaskGroup) puts the records in the outbox.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

from qxedge.agent._jsonbytes import dumps
from qxedge.agent._patterns import AssetFilter
from qxedge.agent.settings import TelemetryConfig as TelemetryConfig
from qxedge.connectors.mqtt import site_topic
from qxedge.connectors.outbox import Outbox
from qxedge.connectors.plant import AssetStats, Evaluation

STREAM = "telemetry"
SLICE = 25  # records put in the outbox between two turns of the loop (~70 µs each at 10 signals)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class TelemetryPublisher:
    """``evaluated`` collects, ``run`` puts one record per asset in the outbox every ``every_s``."""

    name = "telemetry"

    def __init__(self, site: str, config: TelemetryConfig, outbox: Outbox) -> None:
        self.site = site
        self.config = config
        self.outbox = outbox
        self._features: AssetStats | None = None  # the statistics of the newest evaluation
        self.topic = site_topic(site, "telemetry")
        self.records = 0
        self.refused = 0
        # asset -> its newest metrics, and when they came: two dicts, not a (ts, metrics) tuple per
        # observation (a dict of floats is not tracked by the collector, a tuple is: one per reading)
        self._seen: dict[str, dict[str, float]] = {}
        self._seen_at: dict[str, float] = {}
        self._reported = AssetFilter(config.assets)

    def evaluated(self, evaluation: Evaluation) -> None:
        ts, reported, seen, seen_at = evaluation.ts, self._reported, self._seen, self._seen_at
        for asset, metrics in evaluation.assets.items():
            if reported(asset):
                seen[asset], seen_at[asset] = dict(metrics), ts
        self._features = evaluation.features

    def anchor(self, checkpoint: Mapping[str, Any]) -> bool:
        """An audit checkpoint (``{"id", "hash", "ts"}``) into the telemetry stream, through the outbox:
        ``{"v": 1, "seq": ..., "site": ..., "ts": ..., "audit_checkpoint": {...}}`` (no ``asset``).
        False when the outbox refuses it."""

        def make(seq: int) -> bytes:
            doc = {"v": 1, "seq": seq, "site": self.site, "ts": checkpoint["ts"]}
            return dumps({**doc, "audit_checkpoint": dict(checkpoint)})

        return self.outbox.put(STREAM, self.topic, make) is not None

    async def run(self) -> None:
        every = self.config.every_s
        due = time.monotonic()
        while True:
            due += every
            delay = due - time.monotonic()
            if delay < 0:  # a stalled loop: skip the missed slots rather than bursting
                due += -delay // every * every + every
                delay = due - time.monotonic()
            await asyncio.sleep(delay)
            await self.publish(time.time())

    async def publish(self, now: float) -> int:
        """One record per observed asset into the outbox; the number accepted. ``SLICE`` records at a
        time, the loop running in between: a plant of a thousand assets would stall it ~0.1 s at once."""
        assets = sorted(self._seen)
        accepted = 0
        for start in range(0, len(assets), SLICE):
            if start:
                await asyncio.sleep(0)
            # readings and features as of now (an evaluation may have run since the slice before)
            last = self._features if self.config.features else None
            chunk = assets[start : start + SLICE]
            features = {} if last is None else last.by_asset(chunk)
            for asset in chunk:
                record = self.record(
                    asset, self._seen_at[asset], self._seen[asset], features.get(asset, {}), now
                )

                def make(seq: int, record: dict[str, Any] = record) -> bytes:
                    return dumps({"v": 1, "seq": seq, **record})

                if self.outbox.put(STREAM, self.topic, make) is None:
                    self.refused += 1
                else:
                    accepted += 1
        self.records += accepted
        return accepted

    def record(
        self,
        asset: str,
        ts: float,
        metrics: Mapping[str, float],
        features: Mapping[str, float],
        now: float,
    ) -> dict[str, Any]:
        readings: dict[str, float] = {}
        scores: dict[str, float] = {}
        decisions: dict[str, float] = {}
        for key, value in metrics.items():
            if not _finite(value):
                continue
            if key.startswith("score/"):
                scores[key[len("score/") :]] = value
            elif key == "setpoint":
                decisions["setpoint"] = value
            else:
                readings[key] = value
        out: dict[str, Any] = {"site": self.site, "ts": now, "asset": asset, "observed_at": ts}
        if self.config.readings:
            out["readings"] = readings
        if self.config.features:
            out["features"] = dict(features)
        out["scores"] = scores
        out["decisions"] = decisions
        return out
