"""Tabu search that fills its budget (the ``tabu`` backend, registered in :mod:`hybrid.solvers`).

dwave-samplers' TabuSearch (the MST2 multistart tabu search that its TabuSampler runs) on a dense
matrix built once, called in slices of at most ``slice_seconds``, the first from a steepest descent
(:func:`descend`), each next one with a fresh seed from the best state so far, or from a random state
when the slice before searched ``STALLED_SLICE`` or longer and found nothing better (a state no slice
improves holds the search in its basin: on a complete n = 2000 two seeds in six stayed 0.5 % above
the best known with 1.1 s of search, which every seed reached restarting, ad hoc). A deadline brought
forward (a cut) ends it within one slice.
Slices start at 20 ms and double, so a job that another solver settles early (a proven optimum) stops
tabu at once, but each searches at least ``SETUP_SHARE`` times its call's own set-up (the matrix
copies each call makes), planned on what this process measured on its recent jobs. A dense model's
matrix may come in shared memory (:func:`solve_tabu_shared`, :mod:`hybrid.shared_matrix`) instead of
as a model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import finish, hand_back_seconds, model_arrays, timed_out, to_binary
from qxedge.hybrid.wire import Candidate

if TYPE_CHECKING:
    from qxedge.hybrid.shared_matrix import SharedQubo


RECENT_MIN_VARIABLES = 500  # a measured call of fewer variables says nothing about larger ones
CALIBRATION_MAX = 2500  # larger calibrations would hold hundreds of MB for a while at each start


class TabuConfig(BaseModel):
    """Tabu search that fills its budget in slices, each continuing from the best state so far (or
    afresh, once a slice of STALLED_SLICE or more found nothing better)."""

    model_config = ConfigDict(extra="forbid")
    slice_seconds: float = Field(
        0.5, gt=0, description="the longest search call: a cut or the deadline ends tabu within one slice"
    )
    max_variables: int = Field(
        5000, ge=1, description="the search holds about 5 dense n x n copies of the model: 1 GB at 5000"
    )
    seed: int | None = None
    calibrate_sizes: list[Annotated[int, Field(ge=RECENT_MIN_VARIABLES, le=CALIBRATION_MAX)]] = Field(
        [1000, 1400, 2000],
        max_length=8,
        description="at warm-up, the worker and each solver process time a search call's set-up on a "
        "random matrix of each of these sizes (500 to 2500): a job of about such a size (within 1.25 "
        "times) plans tabu's start on that figure, not on the guess",
    )


# Each TabuSearch call copies the matrix three times before it searches (its constructor: a Python-level
# loop, then two C++ copies): 0.03..0.2 s at n = 2000, 0.4..2.3 s at n = 5000 measured (bench/anytime.py,
# the more the busier the machine), 10..90 ns per matrix entry (25 ns quiet, 52..55 ns at a load of 3.5
# at n = 1000..3000, 2026-12-07, ad hoc). The first call is predicted at TABU_CALL per entry (SAFETY
# times that to start one), or TABU_CALL_LARGE beyond the sizes a calibration may cover; later ones at
# the slowest call measured. A call predicted too fast costs that call (the portfolio stops waiting at
# its deadline; the floor answers) and its process (recycled), which the next job then lacks.
TABU_CALL = 45e-9
TABU_CALL_LARGE = 120e-9  # a process's first call at sparse n = 5000 took 0.6 to 2.9 s (26 to 116 ns an
# entry): at 45 ns tabu started at 2 s and overran, its process recycled (a bench run and a rerun)
TABU_RESTARTS = 1_000_000  # TabuSampler's default: the time limit ends a slice
MIN_SLICE = 0.002  # a slice shorter than this is not worth a call
FIRST_SLICE = 0.02  # the first slice; each next one twice as long, up to slice_seconds
SAFETY = 1.5  # a call's set-up may take this many times the slowest measured (a busy machine): kept
# for it when another call is to follow
LAST_SAFETY = 1.25  # the same for the last call, which takes the rest, on a set-up measured here (an
# overrun costs that call, and its process: recycled): 1.5 kept 0.06 s of a 1 s job idle at n = 2000
# and kept a 0.2 s job's tabu from starting at n = 1000 (first_call_safety)
SETUP_SHARE = 3  # a slice searches at least this many times its call's set-up (up to slice_seconds)
STALLED_SLICE = 0.1  # a slice this long that finds nothing better ends the best state's turn: the next
# starts from a random state. A shorter one may have lacked the time: restarting after stalls of 20 to
# 80 ms left sparse n = 2000 jobs at 0.2 s 0.08 to 0.14 % above the best, against 0.01 to 0.08 %


def tabu_call_seconds(variables: int) -> float:
    """A search call's own set-up predicted before one was measured (its copies of the matrix)."""
    per_entry = TABU_CALL if variables <= CALIBRATION_MAX else TABU_CALL_LARGE
    return 0.001 + per_entry * variables * variables


# the set-up per matrix entry that this process measured: its calibration (:func:`calibrate`, when it
# warmed up) and the slowest call of each of its recent jobs of at least RECENT_MIN_VARIABLES variables.
# A job's first call is planned on the slowest of the last RECENT of these of about its size, rather
# than the guess TABU_CALL (on a quiet machine 10 to 25 ns measured against 45 guessed: at n = 1000 the
# guess kept a 0.2 s job's tabu from starting at all, and at n = 2000 it kept 0.1 s more back than the
# call took, of a 1 s job)
RECENT = 3
RECENT_SIZE_RATIO = 1.25  # a measurement stands for sizes within this factor of its own (the time per
# entry grows with the matrix: a bench run planned n = 5000 on n = 2000's and overran)
KEPT = 16  # measurements kept, all sizes together
_recent: list[tuple[int, float]] = []  # (variables, seconds per matrix entry)


def _alike(variables: int) -> list[float]:
    """This process's last RECENT measurements (set-up per matrix entry) on models of about this size."""
    return [
        per
        for n, per in _recent
        if variables >= RECENT_MIN_VARIABLES and n / RECENT_SIZE_RATIO <= variables <= n * RECENT_SIZE_RATIO
    ][-RECENT:]


def planned_call_seconds(variables: int) -> float:
    """A search call's set-up as a job plans its first call: the slowest of this process's last
    RECENT measurements (per matrix entry) on models of about this size when it has any, else
    :func:`tabu_call_seconds`."""
    alike = _alike(variables)
    if alike:
        return 0.001 + max(alike) * variables * variables
    return tabu_call_seconds(variables)


def first_call_safety(variables: int) -> float:
    """How many times its planned set-up a job's first call keeps: LAST_SAFETY on a figure measured
    here at about this size, SAFETY on the guess (a sparse n = 5000 call's set-up took 0.6 to 2.9 s
    against 1.1 s guessed: planned 1.25 times over, tabu started at 2 s and overran)."""
    return LAST_SAFETY if _alike(variables) else SAFETY


def _remember(variables: int, seconds: float) -> None:
    if variables >= RECENT_MIN_VARIABLES:
        _recent.append((variables, max(0.0, seconds - 0.001) / (variables * variables)))
        del _recent[:-KEPT]


def calibrate(sizes: Iterable[int], seed: int = 0) -> None:
    """Measure a search call's set-up in this process on a random matrix of each size (three 1 ms calls
    each: the first grows the heap, which a solver process keeps for its jobs
    (:func:`~qxedge.core.heap.keep_freed_memory`); the slower of the other two is remembered), so that
    the first job of about such a size plans on this machine's figure, not on the guess: at warm-up,
    before any job's clock (about 0.2 s and 130 MB for a while at n = 2000)."""
    from dwave.samplers.tabu.tabu_search import TabuSearch

    rng = np.random.default_rng(seed)
    for n in sizes:
        q = rng.random((n, n))
        q += q.T  # TabuSearch takes a symmetric matrix
        state = np.zeros(n, dtype=np.intc)
        took = []
        for _ in range(3):
            began = time.monotonic()
            TabuSearch(q, state, min(20, n // 4), 1, TABU_RESTARTS, int(rng.integers(2**32)))
            took.append(time.monotonic() - began - 0.001)
        _remember(n, max(took[1:]))


def calibration_for(variables: int) -> list[int]:
    """What a one-job run (``qxedge solve``) calibrates: the job's own size when it is one a
    calibration is kept for, else nothing (a small job's set-up is milliseconds)."""
    return [variables] if RECENT_MIN_VARIABLES <= variables <= CALIBRATION_MAX else []


def tabu_startup_seconds(variables: int, interactions: int) -> float:
    """The least time before tabu has an answer: a call's set-up as planned (:func:`planned_call_seconds`,
    with room for a busy machine), the shortest slice worth a call and the hand-back."""
    set_up = first_call_safety(variables) * planned_call_seconds(variables)
    return hand_back_seconds(variables, interactions) + set_up + MIN_SLICE


def tabu_matrix(binary: dimod.BinaryQuadraticModel, out: np.ndarray | None = None) -> np.ndarray:
    """The symmetric matrix TabuSearch takes, as dwave's ``TabuSampler._bqm_to_tabu_qubo`` builds it:
    linear biases on the diagonal, each quadratic bias halved on both sides; ``binary.variables``
    order; written into ``out`` (n x n float64, e.g. shared memory) when given. Written entry by entry:
    a sparse model touches only its own entries (0.14 s at n = 5000, 2.0 s for dwave's sum of the
    dense triangle and its transpose)."""
    linear, row, col, bias, _ = model_arrays(binary)
    n = len(linear)
    if out is None:
        q = np.zeros((n, n), dtype=np.float64)
    else:
        q = out
        q.fill(0.0)
    half = 0.5 * np.asarray(bias, dtype=np.float64)
    q[row, col] = half
    q[col, row] = half
    q[np.diag_indices(n)] = linear
    return q


def descend(q: np.ndarray, deadline: Deadline, margin: float) -> np.ndarray:
    """A steepest 1-flip descent from all zeros on tabu's matrix (``E(x) = x @ Q @ x``, the greedy
    construction): tabu's first state. Tabu from this local minimum reached the best energy known on a
    complete n = 2000 model in 0.1 s of search, where random starts took 0.25 to 1 s and more (ad hoc,
    on the bench's instance). Flipping i changes the energy by ``2 (1 - 2 x_i) g_i + Q_ii`` with
    ``g = Q @ x``; it stops early, not at a local minimum, once ``deadline`` is ``margin`` away."""
    n = len(q)
    x = np.zeros(n, dtype=np.float64)
    if n == 0:
        return x.astype(np.intc)
    diagonal = np.diagonal(q).copy()
    g = np.zeros(n, dtype=np.float64)
    sign = np.ones(n, dtype=np.float64)  # 1 - 2 x
    delta = diagonal.copy()
    tol = 1e-12 * max(1.0, float(np.abs(diagonal).max())) * n
    flips = 0
    while True:
        i = int(delta.argmin())
        if delta[i] >= -tol:
            break
        if sign[i] > 0:
            x[i] = 1.0
            g += q[i]
        else:
            x[i] = 0.0
            g -= q[i]
        sign[i] = -sign[i]
        np.multiply(sign, g, out=delta)
        delta *= 2.0
        delta += diagonal
        flips += 1
        if flips % 32 == 0 and deadline.left() <= margin:
            break
    return x.astype(np.intc)


def solve_tabu(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: TabuConfig) -> Candidate:
    """Slices of ``slice_seconds`` (longer when a call's own set-up is longer: half of each call is
    search), the first from a steepest descent (:func:`descend`), each next one from the best state so
    far with a fresh seed (from a random state after a slice of STALLED_SLICE or more that found nothing
    better), until the next would not end before the deadline."""
    started = time.monotonic()
    n, m = bqm.num_variables, bqm.num_interactions
    if n == 0:
        return finish(bqm, "tabu", np.zeros(0), started)
    refused = _refused(n, m, deadline, cfg, started)
    if refused is not None:
        return refused
    found = _search(tabu_matrix(to_binary(bqm)), hand_back_seconds(n, m), deadline, cfg, started)
    if isinstance(found, Candidate):
        return found
    state, details = found
    return finish(bqm, "tabu", state, started, details=details)


def solve_tabu_shared(model: SharedQubo, deadline: Deadline, cfg: TabuConfig) -> Candidate:
    """:func:`solve_tabu` on a dense model's matrix in shared memory (no model to rebuild: the search
    starts at once); the candidate's energy is ``offset + x @ Q @ x`` (the worker scores it again with
    dimod on the job's model)."""
    started = time.monotonic()
    n = model.n
    m = n * (n - 1) // 2
    refused = _refused(n, m, deadline, cfg, started)
    if refused is not None:
        return refused
    try:
        found = _search(model.matrix(), hand_back_seconds(n, m), deadline, cfg, started)
        if isinstance(found, Candidate):
            return found
        state, details = found
        energy = model.energy(state)
    finally:
        model.release()
    values = np.asarray(state, dtype=np.int64)
    if model.spin:
        values = 2 * values - 1
    return Candidate(
        solver="tabu",
        energy=energy,
        seconds=round(time.monotonic() - started, 6),
        sample={label: int(x) for label, x in zip(model.labels, values.tolist(), strict=True)},
        details={**details, "model": "shared matrix"},
    )


def _refused(n: int, m: int, deadline: Deadline, cfg: TabuConfig, started: float) -> Candidate | None:
    if n > cfg.max_variables:
        return Candidate(solver="tabu", status="refused", reason=f"{n} variables > max {cfg.max_variables}")
    if deadline.left() < tabu_startup_seconds(n, m):
        return timed_out(
            "tabu",
            started,
            f"a search call on the {n} x {n} matrix is predicted to need {planned_call_seconds(n):.3f} s "
            f"before it searches, more than the {max(0.0, deadline.left()):.3f} s left",
        )
    return None


def _search(
    q: np.ndarray, hand_back: float, deadline: Deadline, cfg: TabuConfig, started: float
) -> tuple[np.ndarray, dict[str, Any]] | Candidate:
    """The search calls on ``q``: the best state and the details, or a ``timeout`` candidate."""
    from dwave.samplers.tabu.tabu_search import TabuSearch

    n = len(q)
    call_setup, last_safety = planned_call_seconds(n), first_call_safety(n)
    rng = np.random.default_rng(cfg.seed)
    best_state = start = descend(q, deadline, hand_back + last_safety * call_setup + MIN_SLICE)
    tenure = min(20, n // 4)  # TabuSampler's default
    best_energy, slices, searched, measured, restarts = np.inf, 0, 0.0, 0.0, 0
    while True:
        rest = deadline.left() - hand_back - last_safety * call_setup  # what a last call would search
        if rest < MIN_SLICE:
            break
        left = deadline.left() - hand_back - SAFETY * call_setup
        # slices double from FIRST_SLICE up to slice_seconds: early in a job, when a proven optimum
        # from another solver may end it, tabu stops within a few milliseconds of being told to
        # a slice searches at least SETUP_SHARE times its call's set-up (up to slice_seconds, or one
        # set-up when that is longer): at n = 2000, slices of 20 to 80 ms each paid 0.1 s of set-up
        shortest = min(SETUP_SHARE * call_setup, max(cfg.slice_seconds, call_setup))
        wanted = max(min(cfg.slice_seconds, FIRST_SLICE * 2**slices), shortest)
        if left - wanted < SAFETY * call_setup + max(MIN_SLICE, call_setup):
            wanted = rest  # no further call would fit after this one: this one takes the rest
        slice_ms = int(1000 * wanted)
        began = time.monotonic()
        search = TabuSearch(q, start, tenure, slice_ms, TABU_RESTARTS, int(rng.integers(2**32)))
        took = time.monotonic() - began
        slices += 1
        searched += slice_ms / 1000
        measured = max(measured, took - slice_ms / 1000)  # the slowest call so far
        call_setup, last_safety = measured, LAST_SAFETY
        if search.bestEnergy() < best_energy:
            best_energy = search.bestEnergy()
            best_state = start = np.asarray(search.bestSolution(), dtype=np.intc)
        elif wanted >= STALLED_SLICE:  # stuck in the best state's basin: the next slice starts afresh
            start = rng.integers(0, 2, n, dtype=np.intc)
            restarts += 1
    if slices == 0:
        return timed_out(
            "tabu",
            started,
            f"after the set-up, no search call on the {n} x {n} matrix fitted in the time left",
        )
    if measured > 0:
        _remember(n, measured)
    return best_state, {
        "slices": slices,
        "restarts": restarts,
        "searched_s": round(searched, 3),
        "call_setup_s": round(measured, 4),
    }
