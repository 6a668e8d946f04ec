"""Constrained jobs (issue 22): the milp backend proves the plant problems' optima (brute force agrees),
the penalty route with its rule and repair gives feasible answers, the portfolio returns the best
feasible one."""

from __future__ import annotations

import time
from typing import Any

import dimod
import pytest

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.constrained import (
    best_constrained,
    constrained_job,
    lagrange_multiplier,
    penalty_model,
    solve_penalty,
)
from qxedge.hybrid.milp import MilpConfig, linearise, solve_bqm, solve_milp
from qxedge.hybrid.portfolio import Portfolio, SolversConfig
from qxedge.hybrid.problems import assignment, scheduling, staging
from qxedge.hybrid.repair import compile_cqm, repair
from qxedge.hybrid.wire import Candidate
from qxedge.testing import optimum, random_bqm, wait_until

from .test_problems import assignment_instance, schedule_instance, staging_instance

PROBLEMS = [
    pytest.param(scheduling, schedule_instance, id="scheduling"),
    pytest.param(assignment, assignment_instance, id="assignment"),
    pytest.param(staging, staging_instance, id="staging"),
]
SEEDS = range(4)


def soon(seconds: float = 5.0) -> Deadline:
    return Deadline(time.time() + seconds)


@pytest.mark.parametrize(("problem", "instance"), PROBLEMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_the_milp_optimum_is_the_brute_force_optimum(problem: Any, instance: Any, seed: int) -> None:
    p = instance(seed)
    _, best = problem.brute_force(p)
    found = solve_milp(problem.build_cqm(p), soon(), MilpConfig())
    assert found.status == "ok" and found.feasible and found.details["optimal"]
    assert found.objective == pytest.approx(best) and found.bound == pytest.approx(best) and found.gap == 0
    plan = problem.decode(p, found.sample)
    assert problem.violations(p, plan) == [] and problem.cost(p, plan) == pytest.approx(best)


@pytest.mark.parametrize(("problem", "instance"), PROBLEMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_the_penalty_rule_makes_the_bqm_optimum_the_cqm_optimum(
    problem: Any, instance: Any, seed: int
) -> None:
    """Integral constraints and λ = 1 + the objective's reach: exact on the penalty BQM proves it."""
    p = instance(seed)
    _, best = problem.brute_force(p)
    job = constrained_job(problem.build_cqm(p), 10**6)
    assert job.penalty is not None and job.penalty.exact
    if job.penalty.bqm.num_variables > 20:
        pytest.skip(f"{job.penalty.bqm.num_variables} variables: too many to enumerate here")
    assert optimum(job.penalty.bqm) == pytest.approx(best)
    found = solve_penalty("exact", SolversConfig(), job, soon(20))
    assert found.feasible and found.objective == pytest.approx(best) and found.details.get("optimal")


@pytest.mark.parametrize(("problem", "instance"), PROBLEMS)
@pytest.mark.parametrize("backend", ["greedy", "tabu", "sa"])
def test_the_penalty_route_answers_feasible_plans(problem: Any, instance: Any, backend: str) -> None:
    p = instance(1)
    _, best = problem.brute_force(p)
    found = solve_penalty(backend, SolversConfig(), constrained_job(problem.build_cqm(p), 10**6), soon(0.5))
    assert found.status == "ok" and found.feasible and found.solver.split("+")[0] == backend
    plan = problem.decode(p, found.sample)
    assert problem.violations(p, plan) == [] and problem.cost(p, plan) >= best - 1e-9
    assert found.objective == pytest.approx(problem.cost(p, plan))


def test_repair_makes_a_broken_schedule_feasible_and_polishes_it() -> None:
    p = scheduling.LoadSchedule(
        assets=[
            scheduling.ScheduledAsset(name="press", power_kw=5, runs=2),
            scheduling.ScheduledAsset(name="oven", power_kw=4, runs=3),
        ],
        cap_kw=[6, 9, 9, 6, 9],
        price=scheduling.korean_tou(5),
    )
    cqm = scheduling.build_cqm(p)
    model = compile_cqm(cqm)
    broken = {"press": [0, 1, 2, 3], "oven": [0]}  # too many, too few, slot 0 over the cap
    x = [1 if int(str(v).split("@")[1]) in broken[str(v).split("@")[0]] else 0 for v in model.labels]
    fixed = repair(model, x, time.time() + 5)
    assert fixed.feasible and fixed.complete and fixed.repair_moves > 0
    plan = scheduling.decode(p, {str(v): b for v, b in zip(model.labels, fixed.values, strict=True)})
    assert scheduling.violations(p, plan) == []
    assert fixed.objective == pytest.approx(scheduling.cost(p, plan))


def test_repair_moves_integers_to_meet_constraints() -> None:
    i = dimod.Integer("i", lower_bound=-5, upper_bound=20)
    j = dimod.Integer("j", upper_bound=20)
    x = dimod.Binary("x")
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(i + 2 * j + 3 * x + i * j)
    cqm.add_constraint(i + j >= 7, label="sum")
    cqm.add_constraint(i - 3 * x == 1, label="tie")
    model = compile_cqm(cqm)
    fixed = repair(model, [-5, 0, 0], time.time() + 5)
    sample = dict(zip(model.labels, fixed.values, strict=True))
    assert fixed.feasible and cqm.check_feasible(sample)
    assert fixed.objective == pytest.approx(cqm.objective.energy(sample))


def test_the_penalty_route_shifts_integers_and_leaves_quadratic_constraints_to_the_repair() -> None:
    i = dimod.Integer("i", lower_bound=-3, upper_bound=4)
    x, y = dimod.Binaries("xy")
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(-i - 2 * x - 2 * y + i * x)
    cqm.add_constraint(i + x <= 2, label="lin")
    cqm.add_constraint(x * y <= 0, label="quad")  # not both
    model = penalty_model(cqm, 10**6)
    assert model.shifts == {"i": -3} and model.left_to_repair == ("quad",) and not model.exact
    # on the shifted model i = k - 3: -k - 5x - 2y + kx (+ 3): 1 + 1·7 + 5 + 2 + 1·7·1
    assert model.lagrange == 1 + 7 + 5 + 2 + 7
    assert lagrange_multiplier(cqm) == 1 + 7 + 2 + 2 + 7  # the unshifted objective's own reach
    found = solve_penalty("exact", SolversConfig(), constrained_job(cqm, 10**6), soon(10))
    assert found.feasible and "optimal" not in found.details
    brute = min(
        cqm.objective.energy(s)
        for s in ({"i": a, "x": b, "y": c} for a in range(-3, 5) for b in (0, 1) for c in (0, 1))
        if cqm.check_feasible(s)
    )
    assert found.objective >= brute  # a local optimum of the repair's moves: feasible, maybe not the best


def test_milp_linearises_binary_products_and_refuses_integer_ones() -> None:
    x, y = dimod.Binaries("xy")
    i = dimod.Integer("i", upper_bound=3)
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(-x - y + 3 * x * y)
    cqm.add_constraint(x * y + x >= 1, label="q")
    linear = linearise(cqm, 100)
    assert not isinstance(linear, str) and linear.products == 1
    found = solve_milp(cqm, soon(), MilpConfig())
    assert found.sample == {"x": 1, "y": 0} and found.objective == -1 and found.details["optimal"]
    cqm.set_objective(i * x)
    refused = solve_milp(cqm, soon(), MilpConfig())
    assert refused.status == "refused" and "integer variable 'i'" in (refused.reason or "")


def test_milp_says_when_a_model_is_infeasible() -> None:
    x, y = dimod.Binaries("xy")
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.add_constraint(x + y >= 3, label="never")
    found = solve_milp(cqm, soon(), MilpConfig())
    assert found.feasible is False and found.sample is None and found.details["infeasible"]


def test_milp_keeps_its_deadline_and_reports_its_bound_and_gap() -> None:
    """A multi-dimensional knapsack: past its deadline HiGHS does not start; with one, whatever it has
    comes back with HiGHS's bound and gap."""
    cqm = dimod.ConstrainedQuadraticModel()
    xs = list(dimod.Binaries(range(60)))
    cqm.set_objective(sum(-((k * 37) % 101 + 1) * x for k, x in enumerate(xs)))
    for r in range(30):
        cqm.add_constraint(sum(((k * 13 + r * 7) % 47 + 1) * x for k, x in enumerate(xs)) <= 300, label=r)
    gone = solve_milp(cqm, Deadline(time.time() - 1), MilpConfig())
    assert gone.status == "timeout"
    found = solve_milp(cqm, Deadline(time.time() + 0.3), MilpConfig())
    assert found.status in ("ok", "timeout")
    if found.status == "ok":
        assert found.feasible and found.bound is not None and found.gap is not None
        assert found.bound <= found.objective + 1e-6  # type: ignore[operator]


def test_milp_on_a_plain_bqm_is_the_exact_optimum() -> None:
    bqm = random_bqm(10, 0.5, seed=3)
    found = solve_bqm(bqm, soon(), MilpConfig())
    assert found.status == "ok" and found.energy == pytest.approx(optimum(bqm)) and found.details["optimal"]


def test_the_best_answer_is_feasible_first_then_the_lowest_objective() -> None:
    def c(solver: str, feasible: bool, objective: float) -> Candidate:
        return Candidate(solver=solver, sample={}, feasible=feasible, objective=objective, energy=objective)

    assert best_constrained([c("sa", False, 1.0), c("tabu", True, 5.0)]).solver == "tabu"  # type: ignore[union-attr]
    assert best_constrained([c("greedy", True, 2.0), c("milp", True, 2.0)]).solver == "milp"  # type: ignore[union-attr]
    assert best_constrained([c("sa", False, 3.0), c("tabu", False, 1.0)]).solver == "tabu"  # type: ignore[union-attr]


@pytest.mark.parametrize(("problem", "instance"), PROBLEMS)
async def test_the_portfolio_returns_a_feasible_plan_at_the_brute_force_cost(
    problem: Any, instance: Any
) -> None:
    p = instance(2)
    _, best = problem.brute_force(p)
    portfolio = Portfolio(SolversConfig(workers=0, cqm_auto=["milp", "tabu"]))
    winner, candidates = await portfolio.solve_cqm(problem.build_cqm(p), "auto", time.time() + 5)
    assert winner is not None and winner.feasible and winner.objective == pytest.approx(best)
    plan = problem.decode(p, winner.sample)
    assert problem.violations(p, plan) == [] and problem.cost(p, plan) == pytest.approx(best)
    assert {c.solver.split("+")[0] for c in candidates} >= {"milp", "greedy"}


async def test_a_cqm_neither_route_can_take_still_gets_the_floor() -> None:
    """Integer products (no MILP) in a quadratic constraint (no penalty for it): the floor repairs."""
    i, j = dimod.Integer("i", upper_bound=5), dimod.Integer("j", upper_bound=5)
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(i * j - i - j)
    cqm.add_constraint(i * j >= 6, label="area")
    portfolio = Portfolio(SolversConfig(workers=0, cqm_auto=["milp", "sa"]))
    winner, candidates = await portfolio.solve_cqm(cqm, "auto", time.time() + 3)
    assert winner is not None and winner.feasible
    assert next(c for c in candidates if c.solver == "milp").status == "refused"


async def test_solvers_stopped_by_milps_proof_are_back_without_recycling() -> None:
    """milp proves a plant schedule optimal in milliseconds and tabu (the penalty route) is told to stop:
    its first search slices are short (20, 40 ms, ...), so it is back within the grace and its process
    is kept (it was recycled after every such job with 0.5 s slices). The grace leaves room for a busy
    machine: 250 ms, still half a slice of old."""
    portfolio = Portfolio(SolversConfig(workers=2, cqm_auto=["milp", "tabu"], overrun_grace_ms=250))
    portfolio.warm_up()
    try:
        pool = portfolio.pool
        assert pool is not None
        for seed in range(3):
            p = schedule_instance(seed)
            best, _ = await portfolio.solve_cqm(scheduling.build_cqm(p), "auto", time.time() + 5)
            assert best is not None and best.solver == "milp" and best.details.get("optimal")
            await wait_until(lambda: pool.idle == 2 or portfolio.recycled > 0)
        assert portfolio.recycled == 0
    finally:
        portfolio.close()
