"""The reference plant problems: every optimum of the BQM is feasible and decodes to the brute-force
optimum (gap 0 on these instances), the greedy repair makes infeasible plans feasible."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.problems import assignment, scheduling, staging
from qxedge.hybrid.solvers import ExactConfig, SaConfig, all_energies, bits_of, solve_sa

RNG_SEEDS = range(4)


def optima(bqm: Any) -> list[dict[str, int]]:
    """Every minimum-energy assignment of a small BQM, by enumeration."""
    assert bqm.num_variables <= ExactConfig().max_variables + 2, bqm.num_variables
    energies = all_energies(bqm)
    best = energies.min()
    indices = np.flatnonzero(np.isclose(energies, best, rtol=0, atol=1e-6))
    labels = list(bqm.variables)
    return [dict(zip(labels, bits_of(int(i), len(labels)).tolist(), strict=True)) for i in indices]


def schedule_instance(seed: int) -> scheduling.LoadSchedule:
    rng = np.random.default_rng(seed)
    price = scheduling.korean_tou(4)
    assets = [
        scheduling.ScheduledAsset(
            name=f"a{i}", power_kw=int(rng.integers(2, 6)), runs=int(rng.integers(1, 3))
        )
        for i in range(2)
    ]
    cap = int(rng.integers(5, 9))
    return scheduling.LoadSchedule(
        assets=assets, cap_kw=[cap] * 4, price=[p + 10 * t for t, p in enumerate(price)]
    )


def test_korean_tariff_periods() -> None:
    day = scheduling.korean_tou(24)
    assert day[3] < day[9] < day[14] and day[11] == day[14] and day[22] == day[3]


def test_scheduling_repair_and_setpoints() -> None:
    p = scheduling.LoadSchedule(
        assets=[
            scheduling.ScheduledAsset(name="press", power_kw=5, runs=2),
            scheduling.ScheduledAsset(name="oven", power_kw=4, runs=3),
        ],
        cap_kw=[6, 9, 9, 6, 9],
        price=scheduling.korean_tou(5),
    )
    broken = {"press": [0, 1, 2, 3], "oven": [0]}  # too many, too few, and slot 0 over the cap
    assert scheduling.violations(p, broken)
    fixed = scheduling.repair(p, broken)
    assert scheduling.violations(p, fixed) == []
    assert scheduling.setpoints(p, fixed, fixed["press"][0])["press"] == 1.0


def assignment_instance(seed: int) -> assignment.Assignment:
    rng = np.random.default_rng(seed)
    jobs, machines = [f"j{i}" for i in range(4)], ["m0", "m1"]
    return assignment.Assignment(
        jobs=jobs,
        machines=machines,
        processing=rng.integers(1, 20, (4, 2)).astype(float).tolist(),
        setup=np.triu(rng.integers(0, 10, (4, 4)), 1).astype(float).tolist(),
        capacity=[3, 2],
    )


def test_assignment_repair() -> None:
    p = assignment_instance(1)
    fixed = assignment.repair(p, {"j0": "m1", "j1": "m1", "j2": "m1", "j3": None})  # m1 over capacity
    assert assignment.violations(p, fixed) == []
    assert sum(assignment.setpoints(p, fixed).values()) > 0


def staging_instance(seed: int) -> staging.Staging:
    rng = np.random.default_rng(seed)
    units = [
        staging.Unit(name="c1", capacity_kw=4, cost=float(rng.integers(5, 10)), min_up=2),
        staging.Unit(name="c2", capacity_kw=3, cost=float(rng.integers(3, 8)), min_down=2, on_before=True),
    ]
    return staging.Staging(units=units, demand_kw=[int(d) for d in rng.integers(0, 7, 3)])


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize(
    ("problem", "instance"),
    [(scheduling, schedule_instance), (assignment, assignment_instance), (staging, staging_instance)],
    ids=["scheduling", "assignment", "staging"],
)
def test_optima_are_feasible_and_optimal(problem: Any, instance: Any, seed: int) -> None:
    """Every optimum of the BQM decodes to a feasible plan at the brute-force optimum (gap 0)."""
    p = instance(seed)
    reference, best = problem.brute_force(p)
    assert reference is not None
    for sample in optima(problem.build(p)):
        plan = problem.decode(p, sample)
        assert problem.violations(p, plan) == [], plan
        gap = (problem.cost(p, plan) - best) / abs(best) if best else problem.cost(p, plan)
        assert gap == pytest.approx(0.0), f"gap {gap:.2%}"


def test_staging_checks_minimum_up_and_down_times() -> None:
    p = staging.Staging(
        units=[staging.Unit(name="c", capacity_kw=5, cost=1, min_up=3, min_down=2)],
        demand_kw=[0, 0, 0, 0, 0, 0],
    )
    assert staging.violations(p, {"c": [0, 1, 0, 0, 0, 0]})  # on for one slot only
    assert staging.violations(p, {"c": [1, 1, 1, 0, 1, 1]})  # off for one slot only
    assert staging.violations(p, {"c": [0, 0, 0, 0, 1, 1]}) == []  # cut short by the horizon end
    fixed = staging.repair(p, {"c": [0, 1, 0, 0, 0, 0]})
    assert staging.violations(p, fixed) == []


def test_a_larger_schedule_through_sa_and_repair_reports_its_gap() -> None:
    """Seeded SA with a fixed number of reads and no deadline pressure: the same answer on any machine."""
    p = scheduling.LoadSchedule(
        assets=[
            scheduling.ScheduledAsset(name=f"a{i}", power_kw=k, runs=r)
            for i, (k, r) in enumerate([(5, 3), (4, 2), (3, 4), (6, 2)])
        ],
        cap_kw=[10] * 6,
        price=scheduling.korean_tou(6),
    )
    _, best = scheduling.brute_force(p)
    candidate = solve_sa(
        scheduling.build(p), Deadline(time.time() + 3600), SaConfig(num_sweeps=1000, max_reads=20, seed=1)
    )
    assert candidate.sample is not None
    plan = scheduling.repair(p, scheduling.decode(p, candidate.sample))
    assert scheduling.violations(p, plan) == []
    gap = (scheduling.cost(p, plan) - best) / best
    print(f"SA + repair on 24 x-variables: gap {gap:.2%}")
    assert gap < 0.05
