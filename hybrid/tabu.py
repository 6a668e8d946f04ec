"""Tabu search that fills its budget (the ``tabu`` backend, registered in :mod:`hybrid.solvers`).

dwave-samplers' TabuSearch (the MST2 multistart tabu search that its TabuSampler runs) on a dense
matrix built once, called in slices of at most ``slice_seconds``, each from the best state so far with
a fresh seed: a deadline brought forward (a cut) ends it within one slice. Slices start at 20 ms and
double, so a job that another solver settles early (a proven optimum) stops tabu at once.
"""

from __future__ import annotations

import time

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import finish, hand_back_seconds, model_arrays, timed_out, to_binary
from qxedge.hybrid.wire import Candidate


class TabuConfig(BaseModel):
    """Tabu search that fills its budget in slices, each continuing from the best state so far."""

    model_config = ConfigDict(extra="forbid")
    slice_seconds: float = Field(
        0.5, gt=0, description="the longest search call: a cut or the deadline ends tabu within one slice"
    )
    max_variables: int = Field(
        5000, ge=1, description="the search holds about 5 dense n x n copies of the model: 1 GB at 5000"
    )
    seed: int | None = None


# Each TabuSearch call copies the matrix three times before it searches (its constructor: a Python-level
# loop, then two C++ copies): 0.03..0.2 s at n = 2000, 0.4..2.3 s at n = 5000 measured (bench/anytime.py,
# the more the busier the machine), 10..90 ns per matrix entry. The first call is predicted at
# TABU_CALL per entry; later ones at the slowest call measured.
TABU_CALL = 60e-9
TABU_RESTARTS = 1_000_000  # TabuSampler's default: the time limit ends a slice
MIN_SLICE = 0.002  # a slice shorter than this is not worth a call
FIRST_SLICE = 0.02  # the first slice; each next one twice as long, up to slice_seconds
SAFETY = 1.5  # a call's set-up may take this many times the slowest measured (a busy machine)


def tabu_call_seconds(variables: int) -> float:
    """A search call's own set-up predicted before one was measured (its copies of the matrix)."""
    return 0.001 + TABU_CALL * variables * variables


def tabu_startup_seconds(variables: int, interactions: int) -> float:
    """The least time before tabu has an answer: a call's set-up (with room for a busy machine), the
    shortest slice worth a call and the hand-back."""
    return hand_back_seconds(variables, interactions) + SAFETY * tabu_call_seconds(variables) + MIN_SLICE


def tabu_matrix(binary: dimod.BinaryQuadraticModel) -> np.ndarray:
    """The symmetric matrix TabuSearch takes, as dwave's ``TabuSampler._bqm_to_tabu_qubo`` builds it:
    linear biases on the diagonal, each quadratic bias halved on both sides; ``binary.variables``
    order. Written entry by entry: a sparse model touches only its own entries (0.14 s at n = 5000,
    2.0 s for dwave's sum of the dense triangle and its transpose)."""
    linear, row, col, bias, _ = model_arrays(binary)
    n = len(linear)
    q = np.zeros((n, n), dtype=np.float64)
    half = 0.5 * np.asarray(bias, dtype=np.float64)
    q[row, col] = half
    q[col, row] = half
    q[np.diag_indices(n)] = linear
    return q


def solve_tabu(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: TabuConfig) -> Candidate:
    """Slices of ``slice_seconds`` (longer when a call's own set-up is longer: half of each call is
    search), each from the best state so far with a fresh seed, until the next would not end before
    the deadline."""
    from dwave.samplers.tabu.tabu_search import TabuSearch

    started = time.monotonic()
    n, m = bqm.num_variables, bqm.num_interactions
    if n == 0:
        return finish(bqm, "tabu", np.zeros(0), started)
    if n > cfg.max_variables:
        return Candidate(solver="tabu", status="refused", reason=f"{n} variables > max {cfg.max_variables}")
    hand_back = hand_back_seconds(n, m)
    call_setup = tabu_call_seconds(n)
    if deadline.left() < tabu_startup_seconds(n, m):
        return timed_out(
            "tabu",
            started,
            f"a search call on the {n} x {n} matrix is predicted to need {call_setup:.3f} s before it "
            f"searches, more than the {max(0.0, deadline.left()):.3f} s left",
        )
    q = tabu_matrix(to_binary(bqm))
    rng = np.random.default_rng(cfg.seed)
    best_state = rng.integers(0, 2, n).astype(np.intc)
    tenure = min(20, n // 4)  # TabuSampler's default
    best_energy, slices, searched, measured = np.inf, 0, 0.0, 0.0
    while True:
        left = deadline.left() - hand_back - SAFETY * call_setup
        if left < MIN_SLICE:
            break
        # slices double from FIRST_SLICE up to slice_seconds: early in a job, when a proven optimum
        # from another solver may end it, tabu stops within a few milliseconds of being told to
        wanted = min(cfg.slice_seconds, FIRST_SLICE * 2**slices)
        slice_ms = int(1000 * min(max(wanted, call_setup), left))
        began = time.monotonic()
        search = TabuSearch(q, best_state, tenure, slice_ms, TABU_RESTARTS, int(rng.integers(2**32)))
        took = time.monotonic() - began
        slices += 1
        searched += slice_ms / 1000
        measured = max(measured, took - slice_ms / 1000)  # the slowest call so far
        call_setup = measured
        if search.bestEnergy() < best_energy:
            best_energy = search.bestEnergy()
            best_state = np.asarray(search.bestSolution(), dtype=np.intc)
    if slices == 0:
        return timed_out(
            "tabu",
            started,
            f"after the set-up, no search call on the {n} x {n} matrix fitted in the time left",
        )
    details = {"slices": slices, "searched_s": round(searched, 3), "call_setup_s": round(measured, 4)}
    return finish(bqm, "tabu", best_state, started, details=details)
