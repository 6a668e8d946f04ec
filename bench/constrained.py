"""Constrained jobs (issue 22): HiGHS to a proven optimum against the penalty route at matched time.

    ./run bench constrained [--repeats 5] [--quick] [--save]

The plant problems at a day's size, built as CQMs (``build_cqm``): ``scheduling`` (8 assets, 24 hourly
slots, the Korean time-of-use tariff, a peak cap), ``staging`` (4 compressors with minimum up and down
times over 24 slots), ``assignment`` (10 jobs on 3 machines with setup costs). The baseline is the
``milp`` backend: HiGHS's time to a proven optimum (the median of ``--repeats``, in this process). The
penalty route (CQM -> penalty BQM -> ``greedy`` / ``sa`` / ``tabu`` -> repair and polish, its BQM built
inside the time) then gets the same time (``matched``) and 100 times it; each row says its objective,
its gap to the proven optimum and the ratio of its time to HiGHS's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.constrained import constrained_job, solve_penalty
from qxedge.hybrid.milp import MilpConfig, solve_milp
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.problems import assignment, scheduling, staging
from qxedge.hybrid.wire import Candidate
from qxedge.testing.bench_results import Results, add_save_option


def problems(quick: bool) -> dict[str, tuple[Any, Any]]:
    rng = np.random.default_rng(7)
    slots = 8 if quick else 24
    assets = [
        scheduling.ScheduledAsset(
            name=f"a{i}",
            power_kw=int(rng.integers(3, 12)),
            runs=int(rng.integers(1, 5)),
            earliest=int(rng.integers(0, slots // 3)),
        )
        for i in range(3 if quick else 8)
    ]
    day = scheduling.LoadSchedule(assets=assets, cap_kw=[25] * slots, price=scheduling.korean_tou(slots))
    units = [
        staging.Unit(name=f"c{i}", capacity_kw=15 + 10 * i, cost=8.0 + 3 * i, min_up=2 + i % 2, min_down=2)
        for i in range(2 if quick else 4)
    ]
    demand = [int(15 + 15 * np.sin(t / slots * 6.28) + rng.integers(0, 8)) for t in range(slots)]
    plant = staging.Staging(units=units, demand_kw=demand)
    jobs = 5 if quick else 10
    shop = assignment.Assignment(
        jobs=[f"j{i}" for i in range(jobs)],
        machines=["m0", "m1", "m2"],
        processing=rng.integers(1, 30, (jobs, 3)).astype(float).tolist(),
        setup=np.triu(rng.integers(0, 12, (jobs, jobs)), 1).astype(float).tolist(),
        capacity=[jobs // 3 + 1] * 3,
    )
    return {"scheduling": (scheduling, day), "staging": (staging, plant), "assignment": (assignment, shop)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller problems, one repeat")
    add_save_option(parser)
    args = parser.parse_args()
    saved = Results(__file__, parser, args)
    repeats = 1 if args.quick else args.repeats
    solvers = SolversConfig()
    rows: list[dict[str, Any]] = []
    for name, (module, p) in problems(args.quick).items():
        cqm = module.build_cqm(p)
        runs = [solve_milp(cqm, Deadline(time.time() + 60), MilpConfig()) for _ in range(repeats)]
        best = runs[0].objective
        assert all(r.details.get("optimal") for r in runs), f"{name}: HiGHS did not prove an optimum"
        milp_s = statistics.median(r.seconds for r in runs)
        rows.append(row(name, cqm, "milp (baseline)", milp_s, milp_s, runs[0], best, milp_s))
        for factor, label in ((1, "matched"), (100, "100x")):
            budget = max(milp_s * factor, 0.002)
            for backend in ("greedy", "sa", "tabu"):
                started = time.perf_counter()
                deadline = Deadline(time.time() + budget)
                job = constrained_job(cqm, solvers.penalty_max_interactions)
                found = solve_penalty(backend, solvers, job, deadline)
                took = time.perf_counter() - started
                route = f"{backend} penalty, {label}"
                rows.append(row(name, cqm, route, budget, took, found, best, milp_s))
    for r in rows:
        print("  " + ", ".join(f"{k} {v}" for k, v in r.items()))
    saved.records("HiGHS's proven optimum against the penalty route at matched time", rows)
    matched = [r for r in rows if r["route"].endswith("matched")]
    hits = sum(1 for r in matched if r["gap %"] == 0)
    saved.note(f"at matched time the penalty route reached the optimum in {hits} of {len(matched)} runs")
    saved.save()


def row(
    problem: str, cqm: Any, route: str, budget: float, took: float, found: Candidate, best: float | None,
    milp_s: float,
) -> dict[str, Any]:  # fmt: skip
    objective = found.objective
    gap = None if objective is None or not best else round(100 * (objective - best) / abs(best), 2)
    return {
        "problem": problem,
        "variables": cqm.num_variables(),
        "constraints": len(cqm.constraints),
        "route": route,
        "budget ms": round(budget * 1000, 2),
        "took ms": round(took * 1000, 2),
        "status": found.status,
        "feasible": found.feasible,
        "objective": objective,
        "gap %": gap,
        "time / HiGHS": round(took / milp_s, 1),
    }


if __name__ == "__main__":
    main()
