"""Solver backends that misbehave on purpose, to test the pool and the worker around them.

Register one with ``qxedge.hybrid.backends.register(NAME, FACTORY)``: the factories are module-level
functions, so solver processes receive them too.

- :func:`stubborn`: ignores its deadline (sleeps ``STUBBORN_S``), as a solver stuck in native code would;
- :func:`patient`: waits for its deadline (or a cut) in small steps, then answers all zeros, as an
  anytime solver that uses its whole budget does;
- :func:`heap`: answers at once, saying in its details how many objects its process has frozen
  (:func:`gc.get_freeze_count`, see :mod:`qxedge.core.heap`) and when it began (``began_at``, epoch s);
- :func:`freed`: answers at once, saying how much of 64 MiB it freed went back to the system
  (:func:`given_back_after_freeing`).
"""

from __future__ import annotations

import gc
import os
import resource
import time
from typing import TYPE_CHECKING

import dimod
import numpy as np

from qxedge.hybrid.backends import Backend, Deadline
from qxedge.hybrid.solvers import finish

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig
    from qxedge.hybrid.wire import Candidate

STUBBORN_S = 3600.0


def _stubborn(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    started = time.monotonic()
    time.sleep(STUBBORN_S)
    return finish(bqm, "stubborn", np.zeros(bqm.num_variables), started)


def _patient(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    started = time.monotonic()
    while deadline.left() > 0:
        time.sleep(min(0.01, max(0.0, deadline.left())))
    return finish(bqm, "patient", np.zeros(bqm.num_variables), started, details={"stopped_at": time.time()})


def _heap(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    started, began_at = time.monotonic(), time.time()
    details = {"frozen": gc.get_freeze_count(), "began_at": began_at}
    return finish(bqm, "heap", np.zeros(bqm.num_variables), started, details=details)


def _freed(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    started = time.monotonic()
    details = {"given_back": given_back_after_freeing()}
    return finish(bqm, "freed", np.zeros(bqm.num_variables), started, details=details)


def given_back_after_freeing(pieces: int = 4096) -> int:
    """Bytes of resident memory this process gave back after allocating ``pieces`` of 16 KiB (malloc's
    heap, not mmap; 64 MiB by default) and freeing them all (Linux: /proc). Nothing else is allocated
    from malloc's heap meanwhile (the list first, /proc read unbuffered), so the pieces are at its top."""
    statm = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        allocated: list[bytearray | None] = [None] * pieces
        for i in range(pieces):
            allocated[i] = bytearray(16 * 1024)  # bytearray writes every byte: resident
        before = _resident(statm)
        allocated.clear()
        return before - _resident(statm)
    finally:
        os.close(statm)


def _resident(statm: int) -> int:
    return int(os.pread(statm, 100, 0).split()[1]) * resource.getpagesize()


def stubborn(config: SolversConfig) -> Backend:
    return Backend("stubborn", _stubborn)


def patient(config: SolversConfig) -> Backend:
    return Backend("patient", _patient)


def heap(config: SolversConfig) -> Backend:
    return Backend("heap", _heap)


def freed(config: SolversConfig) -> Backend:
    return Backend("freed", _freed)
