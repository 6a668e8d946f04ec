"""A dense model's matrix in shared memory (:mod:`hybrid.shared_matrix`) and tabu on it."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import dimod
import numpy as np
import pytest

from qxedge.hybrid import tabu
from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import hand_back_seconds, to_binary
from qxedge.hybrid.portfolio import Portfolio, SolversConfig, run_solver
from qxedge.hybrid.shared_matrix import SharedQubo, room_for
from qxedge.hybrid.tabu import TabuConfig, descend, solve_tabu_shared, tabu_matrix
from qxedge.hybrid.wire import Candidate
from qxedge.testing import random_bqm, sample_energy


@pytest.fixture
def spin_model() -> dimod.BinaryQuadraticModel:
    bqm = random_bqm(60, 1.0, 5, "SPIN")
    bqm.offset = 2.5
    bqm.relabel_variables({i: f"v{i}" if i % 2 else (i, "t") for i in bqm.variables}, inplace=True)
    return bqm


@pytest.fixture
def shared(spin_model: dimod.BinaryQuadraticModel) -> Iterator[SharedQubo]:
    block = SharedQubo.create(spin_model)
    yield block
    block.release()


def test_the_shared_matrix_is_tabus_and_scores_as_dimod(
    spin_model: dimod.BinaryQuadraticModel, shared: SharedQubo
) -> None:
    binary = to_binary(spin_model)
    assert np.array_equal(shared.matrix(), tabu_matrix(binary))
    assert shared.labels == [str(v) for v in spin_model.variables] and shared.spin
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.integers(0, 2, spin_model.num_variables)
        expected = spin_model.energy(dict(zip(spin_model.variables, 2 * x - 1, strict=True)))
        assert shared.energy(x) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_a_solver_process_maps_the_block_by_name_until_the_owner_unlinks_it(shared: SharedQubo) -> None:
    copy = pickle.loads(pickle.dumps(shared))
    assert len(pickle.dumps(shared)) < 8 * shared.n * shared.n / 10  # the name and labels, not the matrix
    assert np.array_equal(copy.matrix(), shared.matrix())
    copy.release()
    shared.release()
    with pytest.raises(FileNotFoundError):
        pickle.loads(pickle.dumps(copy)).matrix()


def test_descend_ends_at_a_one_flip_local_minimum(shared: SharedQubo) -> None:
    q = shared.matrix()
    x = descend(q, Deadline(time.time() + 60), 0.0).astype(np.float64)
    energy = float(x @ q @ x)
    for i in range(len(x)):
        y = x.copy()
        y[i] = 1 - y[i]
        assert float(y @ q @ y) >= energy - 1e-9
    del q


def test_tabu_on_the_shared_matrix_answers_with_a_sample_whose_energy_is_dimods(
    spin_model: dimod.BinaryQuadraticModel, shared: SharedQubo
) -> None:
    handle = pickle.loads(pickle.dumps(shared))  # as a solver process receives it
    candidate = solve_tabu_shared(handle, Deadline(time.time() + 0.3), TabuConfig(seed=3))
    assert candidate.status == "ok" and candidate.sample is not None and candidate.energy is not None
    assert set(candidate.sample.values()) <= {-1, 1}
    assert candidate.energy == pytest.approx(sample_energy(spin_model, candidate.sample), rel=1e-12)
    assert candidate.details["model"] == "shared matrix"


def test_a_backend_without_a_shared_reading_says_so(shared: SharedQubo) -> None:
    candidate = run_solver("sa", SolversConfig(), shared, time.time() + 1)
    assert candidate.status == "error" and "takes no shared matrix" in (candidate.reason or "")


def _blocks() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("psm_*")} if Path("/dev/shm").is_dir() else set()


async def test_the_portfolio_hands_tabu_a_dense_model_in_shared_memory_and_unlinks_it() -> None:
    """A complete model goes to tabu as a shared matrix, scored again by dimod; the block is gone after."""
    bqm = random_bqm(200, 1.0, 9)  # 19,900 interactions: dense and large enough to share
    portfolio = Portfolio(SolversConfig(workers=1, auto=["tabu"]))
    before = _blocks()
    try:
        portfolio.warm_up(["tabu"])
        best, candidates = await portfolio.solve(bqm, "auto", time.time() + 1.5)
    finally:
        portfolio.close()
    tabu = next(c for c in candidates if c.solver == "tabu")
    assert tabu.status == "ok" and tabu.details["model"] == "shared matrix", tabu.reason
    assert tabu.details["ran_in"] == "solver process" and tabu.sample is not None
    assert tabu.energy == sample_energy(bqm, tabu.sample)  # dimod's own energy, not NumPy's
    assert best is not None and best.energy is not None and best.energy <= tabu.energy
    assert _blocks() <= before


def test_beside_a_shared_search_a_pickled_backend_starts_only_with_half_the_time_left() -> None:
    """On a complete n = 1000 with 0.3 s left, sa (0.18 s of set-up predicted, 0.05 s to ship) would fit
    in the time left but not in half of it: it is not started beside tabu's shared search; on a sparse
    model of the same size (nothing shared) it is."""
    portfolio = Portfolio(SolversConfig(workers=1))  # never started: _in_time only plans
    try:
        dense = random_bqm(1000, 1.0, 2)
        kept, hopeless = portfolio._in_time(["tabu", "sa"], 1000, dense.num_interactions, time.time() + 0.3)
        assert kept == ["tabu"]
        assert [c.solver for c in hopeless] == ["sa"] and "half the time left" in (hopeless[0].reason or "")
        sparse = random_bqm(1000, 0.01, 2)
        kept, _ = portfolio._in_time(["tabu", "sa"], 1000, sparse.num_interactions, time.time() + 0.3)
        assert "sa" in kept
    finally:
        portfolio.close()


def test_tabu_plans_its_first_call_on_what_this_process_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guess (TABU_CALL a matrix entry) until a job of 500 variables or more, within 1.25 times
    the size, measured a call; then the slowest of the last three such measurements, whatever was
    measured at other sizes since."""
    monkeypatch.setattr(tabu, "_recent", [])
    assert tabu.planned_call_seconds(2000) == tabu.tabu_call_seconds(2000)
    tabu._remember(100, 5.0)  # too small to say anything about the set-up per entry
    assert tabu.planned_call_seconds(2000) == tabu.tabu_call_seconds(2000)
    for seconds in (0.30, 0.10, 0.12):
        tabu._remember(2000, seconds)
        tabu._remember(1000, 0.5)  # another size between them
    tabu._remember(2000, 0.11)
    assert tabu.planned_call_seconds(2000) == pytest.approx(0.12)  # 0.30 is no longer among the last 3
    assert tabu.planned_call_seconds(2400) == pytest.approx(0.001 + 0.119 * 1.44)
    assert tabu.planned_call_seconds(5000) == tabu.tabu_call_seconds(5000)  # not measured near that size
    assert tabu.tabu_call_seconds(5000) == pytest.approx(3.001)  # 120 ns an entry beyond 2500 (45 below)
    assert tabu.planned_call_seconds(1000) == pytest.approx(0.5)
    assert tabu.planned_call_seconds(100) == tabu.tabu_call_seconds(100)


def test_tabu_starts_on_the_set_up_this_process_measured_when_it_warmed_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Warming up measures a search call's set-up in the worker's own process (a 1 ms call on a random
    matrix of each calibration size), and the portfolio plans tabu's start on it: at n = 1000 the guess
    (45 ns a matrix entry, 1.5 times over) kept a 0.2 s job's tabu from starting at all, where the
    call's set-up measured 10 to 30 ms."""
    monkeypatch.setattr(tabu, "_recent", [])
    guessed = tabu.tabu_startup_seconds(600, 600 * 599 // 2)
    config = SolversConfig(workers=0, auto=["tabu"], tabu=TabuConfig(calibrate_sizes=[600]))
    Portfolio(config).warm_up(["tabu"])
    [(n, per_entry)] = tabu._recent
    assert n == 600 and 0 < per_entry < 1e-6
    planned = tabu.planned_call_seconds(600)
    assert planned == pytest.approx(0.001 + per_entry * 600**2)
    hand_back = hand_back_seconds(600, 600 * 599 // 2)
    assert guessed == pytest.approx(hand_back + 1.5 * tabu.tabu_call_seconds(600) + tabu.MIN_SLICE)
    assert tabu.tabu_startup_seconds(600, 600 * 599 // 2) == pytest.approx(
        hand_back + 1.25 * planned + tabu.MIN_SLICE
    )


class Asked(Exception):
    """Raised by the recording TabuSearch: the search call it was asked for is in ``asked``."""


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The timeouts (ms) of the search calls tabu asks for; the first call raises :class:`Asked`."""
    import dwave.samplers.tabu.tabu_search as native

    timeouts: list[int] = []

    def record(q: np.ndarray, state: np.ndarray, tenure: int, timeout_ms: int, *rest: int) -> None:
        timeouts.append(timeout_ms)
        raise Asked

    monkeypatch.setattr(native, "TabuSearch", record)
    return timeouts


def test_a_slice_searches_at_least_three_times_its_call_set_up(
    monkeypatch: pytest.MonkeyPatch, asked: list[int]
) -> None:
    """With 0.1 s of set-up a call, the first slice is 0.3 s, not the 20 ms (or one set-up) that paid
    0.1 s of set-up for each short slice."""
    monkeypatch.setattr(tabu, "_recent", [(500, 0.099 / 500**2)])  # a call on 500 variables: 0.1 s
    shared = SharedQubo.create(random_bqm(500, 1.0, 4))
    try:
        with pytest.raises(Asked):
            solve_tabu_shared(shared, Deadline(time.time() + 30), TabuConfig())
    finally:
        shared.release()
    assert asked == [300]


def test_a_one_job_run_calibrates_at_its_own_size_and_only_where_it_counts() -> None:
    """`qxedge solve` times tabu's set-up at the job's size alone (a worker at 1000, 1400 and 2000
    variables), and not at all for a small job or one beyond what a calibration may hold."""
    assert TabuConfig().calibrate_sizes == [1000, 1400, 2000]
    assert tabu.calibration_for(1200) == [1200]
    assert tabu.calibration_for(200) == [] and tabu.calibration_for(5000) == []
    with pytest.raises(ValueError, match="calibrate_sizes"):
        TabuConfig(calibrate_sizes=[5000])


@pytest.mark.parametrize(
    ("recent", "left", "safety"),
    [([(500, 0.099 / 500**2)], 0.6, 1.25), ([], 0.06, 1.5)],
    ids=["measured", "guessed"],
)
def test_the_last_call_takes_the_rest_less_its_set_up_a_quarter_over_when_measured(
    monkeypatch: pytest.MonkeyPatch,
    asked: list[int],
    recent: list[tuple[int, float]],
    left: float,
    safety: float,
) -> None:
    """When no second call would fit after the first slice, the only call searches what is left less
    its set-up planned at LAST_SAFETY (1.25) on a figure measured here (0.1 s: 1.5 left 0.05 s of a
    1 s job idle at n = 2000), at SAFETY (1.5) on the guess (a sparse n = 5000 call's set-up took
    0.6 to 2.9 s against 1.1 s guessed)."""

    class FixedLeft(Deadline):
        def left(self) -> float:
            return left

    monkeypatch.setattr(tabu, "_recent", recent)
    planned = tabu.planned_call_seconds(500)
    q = tabu_matrix(to_binary(random_bqm(500, 1.0, 4)))
    with pytest.raises(Asked):
        tabu._search(q, 0.02, FixedLeft(time.time() + 60), TabuConfig(), time.monotonic())
    assert asked == [int(1000 * (left - 0.02 - safety * planned))]  # measured: 455 ms (1.5: 430)


async def test_without_room_in_shared_memory_the_model_is_pickled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A /dev/shm too small for the matrix (a default Docker container has 64 MB) would kill the worker
    with SIGBUS when written: the model goes pickled instead."""
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 1, 1, 1, 1, 1, 1, 0, 255)))
    assert not room_for(200)
    bqm = random_bqm(200, 1.0, 9)
    portfolio = Portfolio(SolversConfig(workers=1, auto=["tabu"]))
    try:
        portfolio.warm_up(["tabu"])
        _, candidates = await portfolio.solve(bqm, "auto", time.time() + 1.5)
    finally:
        portfolio.close()
    tabu_run = next(c for c in candidates if c.solver == "tabu")
    assert tabu_run.status == "ok" and "model" not in tabu_run.details


def test_a_slice_that_finds_nothing_better_is_followed_by_a_fresh_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next slice starts from the best state after a slice that improved it or was short, and
    from a random state after one of STALLED_SLICE or longer that did not: continuing from a state no
    slice improves searched its basin again (two seeds in six stayed 0.5 % above the best known on a
    complete n = 2000 with 1.1 s of search)."""
    import dwave.samplers.tabu.tabu_search as native

    energies = iter([-10.0, -12.0, -12.0, -11.0] + [-11.0] * 1000)
    starts: list[np.ndarray] = []

    class Search:
        def __init__(
            self, q: np.ndarray, state: np.ndarray, tenure: int, timeout_ms: int, *rest: int
        ) -> None:
            time.sleep(timeout_ms / 1000)  # searches its slice, as the real one does
            starts.append(state.copy())
            self.energy = next(energies)
            self.state = np.full(len(q), len(starts) % 2, dtype=np.intc)  # best: all 1, then all 0

        def bestEnergy(self) -> float:
            return self.energy

        def bestSolution(self) -> list[int]:
            return self.state.tolist()

    monkeypatch.setattr(native, "TabuSearch", Search)
    monkeypatch.setattr(tabu, "_recent", [(200, 1e-9)])
    q = tabu.tabu_matrix(random_bqm(200, 1.0, 4))
    found = tabu._search(q, 0.0, Deadline(time.time() + 0.7), TabuConfig(seed=1), time.monotonic())
    assert not isinstance(found, Candidate)
    state, details = found
    assert len(starts) >= 5 and details["slices"] == len(starts)  # slices of 20, 40, 80, 160 ms, ...
    assert (starts[1] == 1).all() and (starts[2] == 0).all()  # the best after each improving slice
    assert (starts[3] == 0).all()  # 80 ms that found nothing better: too short to say, the best again
    assert 0 < starts[4].sum() < len(q)  # 160 ms that found nothing better: a random state
    assert (state == 0).all() and details["restarts"] == len(starts) - 4
