"""What holds the agent's event loop up, for ``/metrics``: how late its timers fire (the loop's lag) and
how long the garbage collector stops the process, per generation.

A reading waits for whatever the loop runs before it, so these two histograms say on a running edge box
what ``bench/latency.py`` measures on a bench: a stall of a few milliseconds (a full evaluation over
thousands of signals, a burst of telemetry, a collection of the young generation) is the tail of the
reading → setpoint latency."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Histogram

LAG_EVERY_S = 0.05  # the probe timer's period: 20 wake-ups a second, a few µs each
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


async def watch_lag(histogram: Histogram, every_s: float = LAG_EVERY_S) -> None:
    """Sleep ``every_s`` again and again; how late each wake-up comes is the loop's lag (epoll's 1 ms
    resolution included: a quiet loop shows up to ~1 ms)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        histogram.observe(max(0.0, loop.time() - due))


@contextlib.contextmanager
def gc_pauses(histogram: Histogram, *labels: str) -> Iterator[None]:
    """Observe each garbage collection's duration, labelled ``labels`` then its generation, while inside
    (the collector is the process's: every thread's collections count)."""
    by_generation = [histogram.labels(*labels, str(generation)) for generation in range(3)]
    started = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        gc.callbacks.remove(on_gc)
