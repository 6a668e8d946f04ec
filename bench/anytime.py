"""The anytime solvers: their set-up, the floor beside dwave's steepest descent, and deadlines kept.

    ./run bench anytime [--models small,sparse,complete] [--budgets 0.05,0.3,1,3] [--repeats 3] [--quick]

Models, integer biases in [-100, 100]: ``small`` n = 100 and 250 at density 0.1, ``sparse`` n = 5000
with 10 interactions per variable on average, ``complete`` n = 2000 (1,999,000 interactions).

1. Set-up, per model: dwave-samplers' SimulatedAnnealingSampler, 1 read x 10 sweeps, with its own
   default beta range (the baseline: almost all of it is set-up) and with the same range from
   :func:`~qxedge.hybrid.annealing.default_beta_range`; the time per sweep (the median time between
   reads of 3 x 100 sweeps); the tabu matrix, and a TabuSearch call with a 1 ms limit (its set-up), in a
   child process that gives freed memory back (glibc's default) and in one that keeps it, as solver
   processes do (``solvers.keep_freed_bytes``).
2. The floor's descent (:func:`~qxedge.hybrid.floor.floor`, and the whole ``greedy`` candidate)
   against dwave's SteepestDescentSolver from the same three starts (all zeros and two random states;
   the baseline) in one call, the best of ``--repeats``.
3. ``greedy``, ``sa`` and ``tabu`` under each budget, in this process: the status, the seconds past the
   deadline (negative: in time) and what they did with the budget (reads and sweeps, slices).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import dimod
import numpy as np
from dwave.samplers import SimulatedAnnealingSampler, SteepestDescentSolver
from dwave.samplers.tabu.tabu_search import TabuSearch

from qxedge.core.heap import keep_freed_memory
from qxedge.hybrid.annealing import SaConfig, default_beta_range, solve_sa
from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import model_arrays
from qxedge.hybrid.floor import floor
from qxedge.hybrid.solvers import solve_greedy
from qxedge.hybrid.tabu import TabuConfig, solve_tabu, tabu_matrix
from qxedge.testing import random_bqm
from qxedge.testing.bench_results import Results, add_save_option


def complete(n: int, seed: int) -> dimod.BinaryQuadraticModel:
    rng = np.random.default_rng(seed)
    row, col = np.triu_indices(n, 1)
    linear = rng.integers(-100, 101, n).astype(float)
    quadratic = rng.integers(-100, 101, len(row)).astype(float)
    return dimod.BinaryQuadraticModel.from_numpy_vectors(linear, (row, col, quadratic), 0.0, dimod.BINARY)


def models(names: list[str]) -> dict[str, dimod.BinaryQuadraticModel]:
    out = {}
    if "small" in names:
        out["n=100 d=0.1"] = random_bqm(100, 0.1, seed=100)
        out["n=250 d=0.1"] = random_bqm(250, 0.1, seed=250)
    if "sparse" in names:
        out["n=5000 sparse"] = random_bqm(5000, 10 / 5000, seed=5000)
    if "complete" in names:
        out["n=2000 complete"] = complete(2000, seed=2000)
    return out


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def setup_figures(bqm: dimod.BinaryQuadraticModel, repeats: int) -> dict[str, Any]:
    n, m = bqm.num_variables, bqm.num_interactions
    spin = bqm.change_vartype(dimod.SPIN, inplace=False)
    h, row, col, j, _ = model_arrays(spin)
    beta = default_beta_range(h, row, col, j)
    sampler = SimulatedAnnealingSampler()
    dwave_setup = best_of(1, lambda: sampler.sample(bqm, num_reads=1, num_sweeps=10, seed=1))
    ours = best_of(repeats, lambda: sampler.sample(spin, num_reads=1, num_sweeps=10, beta_range=beta, seed=1))
    ends: list[float] = []

    def read_ended() -> bool:
        ends.append(time.perf_counter())
        return False

    sampler.sample(spin, num_reads=3, num_sweeps=100, beta_range=beta, seed=1, interrupt_function=read_ended)
    per_sweep = float(np.median(np.diff(ends))) / 100
    built = time.perf_counter()
    q = tabu_matrix(bqm)
    matrix = time.perf_counter() - built
    given_back, kept = (tabu_call_setup(q, keep, repeats) for keep in (0, 512 << 20))
    return {
        "variables": n,
        "interactions": m,
        "SA set-up, dwave's beta range s": round(dwave_setup, 4),
        "SA set-up, NumPy beta range s": round(ours, 4),
        "ratio": round(dwave_setup / ours, 1),
        "SA sweep us": round(per_sweep * 1e6, 2),
        "SA sweep ns per (n + 2m)": round(per_sweep / (n + 2 * m) * 1e9, 2),
        "tabu matrix s": round(matrix, 4),
        "TabuSearch call set-up s": round(given_back, 4),
        "the same, freed memory kept s": round(kept, 4),
        "kept ratio": round(given_back / kept, 2),
    }


def tabu_call_setup(q: np.ndarray, keep_bytes: int, repeats: int) -> float:
    """A TabuSearch call's set-up on ``q`` (a 1 ms call, less that 1 ms): the median of ``repeats``
    calls after a first one, in a forked child process that keeps ``keep_bytes`` of freed memory
    (:func:`~qxedge.core.heap.keep_freed_memory`, as a solver process does; 0: glibc's default)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=_time_calls, args=(q, keep_bytes, repeats, queue))
    child.start()
    took: float = queue.get()
    child.join()
    return took


def _time_calls(q: np.ndarray, keep_bytes: int, repeats: int, queue: Any) -> None:
    keep_freed_memory(keep_bytes)
    n = len(q)
    times = []
    for seed in range(repeats + 1):
        began = time.perf_counter()
        TabuSearch(q, np.zeros(n, dtype=np.intc), min(20, n // 4), 1, 1_000_000, seed)
        times.append(time.perf_counter() - began - 0.001)
    queue.put(float(np.median(times[1:])))


def floor_figures(bqm: dimod.BinaryQuadraticModel, repeats: int) -> dict[str, Any]:
    n = bqm.num_variables
    rng = np.random.default_rng(0)
    starts = np.vstack([np.zeros((1, n), dtype=np.int8), rng.integers(0, 2, (2, n), dtype=np.int8)])
    descent = best_of(repeats, lambda: floor(bqm, None))
    candidate = best_of(repeats, lambda: solve_greedy(bqm))
    dwave = best_of(repeats, lambda: SteepestDescentSolver().sample(bqm, initial_states=starts))
    return {
        "method": floor(bqm, None).method,
        "floor ms": round(descent * 1e3, 2),
        "greedy candidate ms": round(candidate * 1e3, 2),
        "dwave SD ms": round(dwave * 1e3, 2),
        "dwave / floor": round(dwave / descent, 2),
    }


def deadline_rows(name: str, bqm: dimod.BinaryQuadraticModel, budgets: list[float]) -> list[dict[str, Any]]:
    rows = []
    for budget in budgets:
        for solver in ("greedy", "sa", "tabu"):
            deadline = Deadline(time.time() + budget)
            if solver == "greedy":
                c = solve_greedy(bqm, deadline)
            elif solver == "sa":
                c = solve_sa(bqm, deadline, SaConfig())
            else:
                c = solve_tabu(bqm, deadline, TabuConfig())
            late = time.time() - deadline.at()
            d = c.details
            did = (
                f"{d.get('reads')} reads, sweeps {d.get('sweeps')}"
                if solver == "sa" and c.status == "ok"
                else f"{d.get('slices')} slices, {d.get('searched_s')} s searched"
                if solver == "tabu" and c.status == "ok"
                else f"{d.get('descents')} descents, {d.get('method')}"
                if solver == "greedy"
                else (c.reason or "")[:60]
            )
            rows.append(
                {
                    "model": name,
                    "budget s": budget,
                    "solver": solver,
                    "status": c.status,
                    "past the deadline s": round(late, 3),
                    "energy": c.energy,
                    "what it did": did,
                }
            )
            print(f"  {name:<16} {budget:>5} s {solver:<7} {c.status:<8} {late:+.3f} s  {c.energy}  {did}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small,sparse,complete")
    parser.add_argument("--budgets", default="0.05,0.3,1,3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small models, budgets 0.05 and 0.3 s")
    add_save_option(parser)
    args = parser.parse_args()
    saved = Results(__file__, parser, args)
    names = ["small"] if args.quick else args.models.split(",")
    budgets = [0.05, 0.3] if args.quick else [float(b) for b in args.budgets.split(",")]
    cases = models(names)

    print("1. set-up (SA: 1 read x 10 sweeps; tabu: the matrix and a 1 ms call)")
    setups = [{"model": name} | setup_figures(bqm, args.repeats) for name, bqm in cases.items()]
    for row in setups:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    saved.records("set-up of SA and tabu, and SA's time per sweep", setups)

    print("2. the floor (greedy) beside dwave's SteepestDescentSolver, 3 starts each, best of", args.repeats)
    floors = [{"model": name} | floor_figures(bqm, args.repeats) for name, bqm in cases.items()]
    for row in floors:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    saved.records("the floor against dwave's SteepestDescentSolver, 3 starts each", floors)

    print("3. deadlines: seconds past the deadline (negative: in time)")
    rows = [row for name, bqm in cases.items() for row in deadline_rows(name, bqm, budgets)]
    saved.records("each solver under each budget", rows)
    worst = max(r["past the deadline s"] for r in rows)
    late = [r for r in rows if r["past the deadline s"] > 0]
    print(f"latest answer: {worst:+.3f} s against its deadline; {len(late)} of {len(rows)} past it")
    saved.note(f"latest answer {worst:+.3f} s against its deadline; {len(late)} of {len(rows)} past it")
    saved.save()


if __name__ == "__main__":
    main()
