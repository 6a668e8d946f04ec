"""Work that runs on the event loop while it is quick, and in a worker thread once it is not.

Handing a call to a thread and back costs two thread wake-ups: 0.1-0.3 ms on this machine kind, more
than a small evaluation or one audit row takes. A call that was slow once (a big window, a disk that
stalls) must not stall the loop again. :class:`InlineWhileQuick` times every call, on the loop or in a
thread: the next one may run on the loop only while the last took under ``limit_s``. Until a call has
been timed it is not known to be quick.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class InlineWhileQuick:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last_s = math.inf  # how long the last call took

    @property
    def quick(self) -> bool:
        return self.last_s < self.limit_s

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, timed (in whichever thread calls this)."""
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.last_s = time.perf_counter() - started
