"""A long-lived process's memory: what it allocated at start, kept out of the garbage collector's full
passes; and the memory it freed, kept for its next task.

A process's imports and start-up state (modules, configs, model sessions, solver backends: ~236,000
objects in a solver process with every backend warm) live as long as it does, yet every full collection
walks all of them: ~108 ms a pass in a warm solver process (measured while a CI run shared the box),
often enough to take an SA answer past its job's collection deadline, so that only the floor answered
(sparse n = 5000 at 2 s, ``bench/solvers.py``). :func:`freeze_start_up` collects once, then moves every
surviving object to the permanent generation (:func:`gc.freeze`): later full passes walk only what
the process allocated since.

:func:`keep_freed_memory`: glibc gives freed memory at the top of the heap back to the system once it
exceeds 128 KiB, so a solver process's next task faults every page of its large allocations in again.
Tabu's search call (dwave-samplers) copies its n x n matrix into freshly allocated rows each time: at
n = 2000 its set-up took 74 ms a call, 42 ms with the freed rows kept (``bench/anytime.py``; no change
at a sparse n = 5000, 0.68 s a call).
"""

from __future__ import annotations

import ctypes
import gc
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter (malloc.h)


def freeze_start_up() -> None:
    """Call once a process has started (imports done, backends warm), before its first timed work."""
    gc.collect()
    gc.freeze()


def keep_freed_memory(limit_bytes: int) -> bool:
    """Keep up to ``limit_bytes`` of freed heap memory in this process for its next allocations (glibc's
    ``mallopt(M_TRIM_THRESHOLD)``), rather than handing it back to the system after each task: its
    resident memory then stays near its largest task's. Whether it applied: not on other C libraries
    or systems, nor for a ``limit_bytes`` of 0."""
    if limit_bytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, min(limit_bytes, 2**31 - 1)))
