"""The anytime solvers (sa, tabu) and the floor (greedy): answers before the deadline, the budget used,
a cut obeyed, and the floor's local minimum. No timing is asserted beyond "returned before the deadline",
with a generous slack for slow CI machines."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import dimod
import numpy as np
import pytest
from dwave.samplers.sa.sampler import _default_ising_beta_range

from qxedge.hybrid import floor
from qxedge.hybrid.annealing import SaConfig, default_beta_range, solve_sa
from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import model_arrays
from qxedge.hybrid.qaoa import QaoaConfig, solve_qaoa
from qxedge.hybrid.solvers import solve_greedy
from qxedge.hybrid.tabu import TabuConfig, solve_tabu
from qxedge.hybrid.wire import Candidate
from qxedge.testing import optimum, random_bqm, sample_energy

SLACK = 0.5  # seconds past the deadline still counted in time (a slow CI machine), never more


def run(solver: str, bqm: dimod.BinaryQuadraticModel, deadline: Deadline, **cfg: Any) -> Candidate:
    if solver == "sa":
        return solve_sa(bqm, deadline, SaConfig(**cfg))
    if solver == "tabu":
        return solve_tabu(bqm, deadline, TabuConfig(**cfg))
    return solve_greedy(bqm, deadline)


SMALL = random_bqm(30, 0.3, seed=1)
LARGER = random_bqm(600, 0.02, seed=2, vartype=dimod.SPIN)


@pytest.mark.parametrize("solver", ["sa", "tabu", "greedy"])
@pytest.mark.parametrize(("bqm", "budget"), [(SMALL, 0.05), (SMALL, 0.4), (LARGER, 0.4)])
def test_each_answers_with_a_valid_sample_before_its_deadline(
    solver: str, bqm: dimod.BinaryQuadraticModel, budget: float
) -> None:
    deadline = Deadline(time.time() + budget)
    candidate = run(solver, bqm, deadline)
    assert time.time() <= deadline.at() + SLACK
    assert candidate.status == "ok", candidate.reason
    assert candidate.sample is not None and candidate.energy is not None
    assert candidate.energy == pytest.approx(sample_energy(bqm, candidate.sample))


def test_sa_reads_more_with_a_longer_budget() -> None:
    cfg = {"num_sweeps": 2000, "min_reads": 1, "target_reads": 10_000, "seed": 3}  # anneals never longer
    short = run("sa", SMALL, Deadline(time.time() + 0.05), **cfg)
    long = run("sa", SMALL, Deadline(time.time() + 0.5), **cfg)
    assert short.status == long.status == "ok"
    assert long.details["reads"] > 2 * short.details["reads"]
    assert set(long.details["sweeps"]) == {2000} and long.details["stopped"] == "budget"


def test_sa_anneals_longer_once_the_budget_holds_target_reads() -> None:
    cfg = {"num_sweeps": 50, "min_reads": 2, "target_reads": 10, "seed": 3}
    short = run("sa", SMALL, Deadline(time.time() + 0.05), **cfg)
    long = run("sa", SMALL, Deadline(time.time() + 1.0), **cfg)
    assert short.status == long.status == "ok"
    assert long.details["sweeps_done"] > 2 * short.details["sweeps_done"]
    assert max(long.details["sweeps"]) > 50


def test_sa_with_max_reads_does_that_many_and_repeats_itself_for_a_seed() -> None:
    cfg = {"num_sweeps": 200, "max_reads": 5, "seed": 7}
    first = run("sa", SMALL, Deadline(time.time() + 60), **cfg)
    again = run("sa", SMALL, Deadline(time.time() + 60), **cfg)
    assert first.details["reads"] == 5 and first.details["sweeps"] == [200]
    assert first.details["stopped"] == "max_reads"
    assert first.sample == again.sample


def test_sa_holds_at_most_max_sample_mb_of_samples_at_once() -> None:
    # 30 variables and 300 bytes: 10 reads a round, so 30 reads take three rounds (whatever the load)
    cfg = {"num_sweeps": 20, "max_reads": 30, "max_sample_mb": 0.0003}
    candidate = run("sa", SMALL, Deadline(time.time() + 60), **cfg)
    assert candidate.status == "ok" and candidate.details["reads"] == 30
    assert candidate.details["rounds"] >= 3


def test_tabu_searches_in_more_slices_with_a_longer_budget() -> None:
    short = run("tabu", SMALL, Deadline(time.time() + 0.1), slice_seconds=0.05, seed=1)
    long = run("tabu", SMALL, Deadline(time.time() + 0.8), slice_seconds=0.05, seed=1)
    assert short.status == long.status == "ok"
    assert long.details["slices"] > short.details["slices"] >= 1
    assert long.details["searched_s"] > 2 * short.details["searched_s"]


@dataclass
class Cut:
    value: float  # what a worker's shared RawValue("d") holds: epoch s


@pytest.mark.parametrize(("solver", "cfg"), [("sa", {}), ("tabu", {"slice_seconds": 0.1})])
def test_a_cut_ends_the_search_early_with_its_best_so_far(solver: str, cfg: dict[str, Any]) -> None:
    cut = Cut(time.time() + 60)
    deadline = Deadline(time.time() + 60, cut)
    cutter = threading.Timer(0.3, lambda: setattr(cut, "value", time.time() + 0.1))
    cutter.start()
    try:
        candidate = run(solver, LARGER, deadline, **cfg)
    finally:
        cutter.cancel()
    assert cut.value < deadline.due - 30  # it was cut
    assert time.time() <= cut.value + SLACK
    assert candidate.status == "ok" and candidate.sample is not None
    assert candidate.energy == pytest.approx(sample_energy(LARGER, candidate.sample))


def test_sa_says_at_once_when_its_set_up_cannot_fit() -> None:
    bqm = random_bqm(1000, 0.1, seed=4)  # 50,000 interactions: ~20 ms of set-up predicted
    deadline = Deadline(time.time() + 0.008)
    candidate = run("sa", bqm, deadline)
    assert candidate.status == "timeout" and "set-up predicted" in (candidate.reason or "")
    assert time.time() <= deadline.at() + SLACK


def test_tabu_says_at_once_when_its_set_up_cannot_fit() -> None:
    bqm = random_bqm(1000, 0.01, seed=5)  # a 1000 x 1000 matrix: ~60 ms a call predicted
    deadline = Deadline(time.time() + 0.02)
    candidate = run("tabu", bqm, deadline)
    assert candidate.status == "timeout" and "predicted" in (candidate.reason or "")
    assert time.time() <= deadline.at() + SLACK


def test_tabu_refuses_what_its_dense_matrix_cannot_hold() -> None:
    candidate = run("tabu", SMALL, Deadline(time.time() + 1), max_variables=10)
    assert candidate.status == "refused" and "30 variables > max 10" in (candidate.reason or "")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("vartype", [dimod.BINARY, dimod.SPIN])
def test_default_beta_range_is_dwaves(seed: int, vartype: dimod.Vartype) -> None:
    bqm = random_bqm(40, 0.3, seed=seed, vartype=vartype)
    bqm.set_linear(0, 0.0)  # zero biases are left out of the smallest ones
    bqm.set_quadratic(*next(iter(bqm.quadratic))[0:2], 0.0)
    spin = bqm.change_vartype(dimod.SPIN, inplace=False)
    h, row, col, j, _ = model_arrays(spin)
    assert default_beta_range(h, row, col, j) == pytest.approx(
        _default_ising_beta_range(spin.linear, spin.quadratic)
    )


def test_default_beta_range_of_a_model_without_biases_is_dwaves_fallback() -> None:
    bqm = dimod.BinaryQuadraticModel({"a": 0.0, "b": 0.0}, {("a", "b"): 0.0}, 0.0, dimod.SPIN)
    h, row, col, j, _ = model_arrays(bqm)
    assert default_beta_range(h, row, col, j) == [0.1, 1.0]


# The floor


@pytest.fixture(params=["numpy-dense", "dwave-steepest-descent"])
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the floor through one implementation, whatever the model's density."""
    monkeypatch.setattr(floor, "DENSE_MIN_FRACTION", 0.0 if request.param == "numpy-dense" else 2.0)
    return str(request.param)


def single_flips_do_not_lower(bqm: dimod.BinaryQuadraticModel, sample: dict[str, int]) -> bool:
    variables = list(bqm.variables)
    values = np.array([sample[str(v)] for v in variables])
    flipped = np.tile(values, (len(values), 1))
    idx = np.arange(len(values))
    flipped[idx, idx] = (1 - values) if bqm.vartype is dimod.BINARY else -values
    energies = bqm.energies((flipped, variables))
    here = bqm.energy((values, variables))
    return bool(np.all(energies >= here - 1e-9 * max(1.0, abs(here))))


@pytest.mark.parametrize(
    "bqm",
    [
        random_bqm(40, 0.5, seed=11),
        random_bqm(300, 0.02, seed=12, vartype=dimod.SPIN),
        dimod.generators.gnp_random_bqm(80, 0.3, "BINARY", random_state=13),  # real-valued biases
    ],
)
def test_the_floor_is_a_one_flip_local_minimum(method: str, bqm: dimod.BinaryQuadraticModel) -> None:
    candidate = solve_greedy(bqm, Deadline(time.time() + 30))
    assert candidate.status == "ok" and candidate.sample is not None
    assert candidate.details["method"] == method and candidate.details["local_minimum"] is True
    assert candidate.details["descents"] == 3
    assert single_flips_do_not_lower(bqm, candidate.sample)
    assert candidate.energy == pytest.approx(sample_energy(bqm, candidate.sample))


def cardinality(n: int, k: int) -> dimod.BinaryQuadraticModel:
    """(sum x - k)^2: every 1-flip local minimum has sum x = k, the optimum 0."""
    bqm = dimod.BinaryQuadraticModel({i: 1.0 - 2 * k for i in range(n)}, {}, float(k * k), dimod.BINARY)
    for i in range(n):
        for j in range(i + 1, n):
            bqm.add_quadratic(i, j, 2.0)
    return bqm


@pytest.mark.parametrize(
    "bqm",
    [
        dimod.BinaryQuadraticModel({i: (-1) ** i * (i + 1.5) for i in range(12)}, {}, 3.0, dimod.BINARY),
        dimod.BinaryQuadraticModel({i: 0.5 - i % 3 for i in range(12)}, {}, 0.0, dimod.SPIN),
        cardinality(12, 5),
    ],
)
def test_the_floor_finds_the_optimum_of_a_model_without_false_minima(
    method: str, bqm: dimod.BinaryQuadraticModel
) -> None:
    candidate = solve_greedy(bqm)
    assert candidate.energy == pytest.approx(optimum(bqm))


def test_the_floor_answers_an_empty_and_a_single_variable_model() -> None:
    empty = dimod.BinaryQuadraticModel({}, {}, 2.5, dimod.BINARY)
    assert solve_greedy(empty).energy == 2.5
    one = dimod.BinaryQuadraticModel({"x": -1.0}, {}, 0.0, dimod.SPIN)
    assert solve_greedy(one).sample == {"x": 1}


def test_the_floor_stops_at_the_deadline_with_what_it_has() -> None:
    bqm = random_bqm(400, 1.0, seed=6)  # dense: NumPy's descent, which looks at the deadline
    candidate = solve_greedy(bqm, Deadline(time.time() - 1))
    assert candidate.status == "ok" and candidate.details["local_minimum"] is False
    assert candidate.details["descents"] == 1
    assert candidate.energy == pytest.approx(sample_energy(bqm, candidate.sample or {}))


# QAOA: its optimiser already stops for the deadline; its set-up and last circuit must fit too


@pytest.mark.parametrize("device", ["qxedge.cpu", "lightning.qubit"])
def test_qaoa_answers_a_short_budget_in_time(device: str) -> None:
    cfg = QaoaConfig(device=device)
    solve_qaoa(random_bqm(4, 0.5, seed=4), Deadline(time.time() + 30), cfg)  # a worker's warm-up
    bqm = random_bqm(14, 0.5, seed=14)
    deadline = Deadline(time.time() + 0.3)
    candidate = solve_qaoa(bqm, deadline, cfg)
    assert time.time() <= deadline.at() + SLACK
    assert candidate.status == "ok", candidate.reason
    assert candidate.details["evaluations"] >= 1
    assert candidate.energy == pytest.approx(sample_energy(bqm, candidate.sample or {}))


def test_qaoa_says_at_once_when_a_circuit_cannot_fit_the_budget() -> None:
    bqm = random_bqm(20, 0.5, seed=20)  # 2^20 costs to compute and sort: about a second
    deadline = Deadline(time.time() + 0.3)
    candidate = solve_qaoa(bqm, deadline, QaoaConfig(device="qxedge.cpu"))
    assert candidate.status == "timeout" and "predicted" in (candidate.reason or "")
    assert time.time() <= deadline.at()
