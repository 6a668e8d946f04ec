"""The loop-lag and collector-pause histograms behind ``qxedge_loop_lag_seconds`` and
``qxedge_gc_pause_seconds``."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry, Histogram

from qxedge.agent._stalls import BUCKETS, gc_pauses, watch_lag


def histogram(name: str, labels: tuple[str, ...] = ()) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram(name, "test", list(labels), registry=registry, buckets=BUCKETS)


def test_each_collection_is_observed_under_its_generation_while_inside() -> None:
    registry, pauses = histogram("pauses", ("generation",))

    def count(generation: int) -> float:
        return registry.get_sample_value("pauses_count", {"generation": str(generation)}) or 0.0

    with gc_pauses(pauses):
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
        assert count(0) >= 1 and count(2) >= 2
        assert (registry.get_sample_value("pauses_sum", {"generation": "2"}) or 0) > 0
    seen = count(2)
    gc.collect(2)
    assert count(2) == seen, "the callback is gone once outside"


async def test_a_blocked_loop_shows_as_lag() -> None:
    registry, lag = histogram("lag")
    watcher = asyncio.create_task(watch_lag(lag, every_s=0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.06)  # noqa: ASYNC251 (on purpose: the loop held 60 ms, the timer due within 10 ms >= 50 ms late)
    await asyncio.sleep(0.05)
    watcher.cancel()
    total = registry.get_sample_value("lag_count") or 0
    within_25ms = registry.get_sample_value("lag_bucket", {"le": "0.025"}) or 0
    assert total >= 3 and total - within_25ms >= 1
