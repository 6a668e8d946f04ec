"""Solver quality and speed on generated instances, beside dwave-samplers' SA with its defaults.

    ./run bench solvers [--deadline-ms 2000] [--seeds 2]

Instances: random QUBOs with integer biases in [-100, 100]; n = 12..20 at density 0.5, whose optimum is
known by enumeration, and n = 100..250 at density 0.1, whose best known energy is the best of every
run here plus a long SA run (100 reads x 10,000 sweeps). For each solver (in this process) and for
``auto`` (the portfolio's process pool, as a worker runs it) it prints the gap to the best known,
``(E - E_best) / |E_best|``, and the seconds to its answer, under the deadline; ``qaoa raw`` is QAOA's
best shot, ``qaoa`` the same run after its steepest-descent polish. The baseline is
``SimulatedAnnealingSampler().sample(bqm)`` with its defaults, in the same run.
Then QAOA's raw quality for p = 1..3 on n <= 16, before any classical polishing: the best of the
shots over the optimum, the expectation over the optimum, the probability of the optimum, and that
probability over uniform random guessing's 2^-n.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import dimod
from dwave.samplers import SimulatedAnnealingSampler

from qxedge.hybrid.portfolio import Portfolio, SolversConfig, run_solver
from qxedge.hybrid.qaoa import QaoaConfig
from qxedge.hybrid.solvers import all_energies
from qxedge.testing import random_bqm
from qxedge.testing.bench_results import Results, add_save_option

NAMES = ("exact", "sa", "tabu", "qaoa raw", "qaoa", "auto", "SA defaults")


def instance(n: int, density: float, seed: int) -> dimod.BinaryQuadraticModel:
    return random_bqm(n, density, seed)


def gap(energy: float | None, best: float) -> float:
    return float("nan") if energy is None else (energy - best) / abs(best)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline-ms", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only-qaoa-depths", action="store_true")
    add_save_option(parser)
    args = parser.parse_args()
    saved = Results(__file__, parser, args)
    if not args.only_qaoa_depths:
        await portfolio_table(args, saved)
    qaoa_depths(args, saved)
    saved.save()


async def portfolio_table(args: argparse.Namespace, saved: Results) -> None:
    cfg = SolversConfig()
    portfolio = Portfolio(cfg)
    portfolio.warm_up()
    budget = args.deadline_ms / 1000
    rows = []
    print(f"deadline {args.deadline_ms} ms; auto = {cfg.auto} on {cfg.workers} processes\n")
    print(f"{'n':>4} {'seed':>4} {'best known':>11}  " + "  ".join(f"{s:>16}" for s in NAMES))
    for n, density in [(12, 0.5), (16, 0.5), (20, 0.5), (100, 0.1), (150, 0.1), (250, 0.1)]:
        for seed in range(args.seeds):
            bqm = instance(n, density, 1000 * n + seed)
            results: dict[str, tuple[float | None, float]] = {}
            for name in ("exact", "sa", "tabu", "qaoa"):
                started = time.monotonic()
                c = run_solver(name, cfg, bqm, time.time() + budget)
                results[name] = (c.energy if c.status == "ok" else None, time.monotonic() - started)
                if name == "qaoa":
                    results["qaoa raw"] = (c.raw_best_energy if c.status == "ok" else None, results[name][1])
            started = time.monotonic()
            best_auto, _ = await portfolio.solve(bqm, "auto", time.time() + budget)
            results["auto"] = (best_auto.energy if best_auto else None, time.monotonic() - started)
            started = time.monotonic()
            direct = SimulatedAnnealingSampler().sample(bqm)
            results["SA defaults"] = (float(direct.first.energy), time.monotonic() - started)
            if n <= 20:
                best = float(all_energies(bqm).min())
            else:
                long = SimulatedAnnealingSampler().sample(bqm, num_reads=100, num_sweeps=10_000, seed=seed)
                best = min([float(long.first.energy)] + [e for e, _ in results.values() if e is not None])
            rows.append((n, results, best))
            cells = []
            for name in NAMES:
                energy, seconds = results[name]
                cells.append(
                    f"{'-':>16}" if energy is None else f"{gap(energy, best):>7.2%} {seconds:>6.2f}s"
                )
            print(f"{n:>4} {seed:>4} {best:>11.0f}  " + "  ".join(cells))
    portfolio.close()

    print("\nmean gap to the best known (seconds to answer), small n = 12..20 / large n = 100..250:")
    summary = saved.table(
        f"mean gap to the best known and seconds to answer, deadline {args.deadline_ms} ms, "
        f"{args.seeds} seed(s) per n",
        ["solver", "n 12..20 gap %", "seconds", "best", "n 100..250 gap %", "seconds", "best"],
    )
    for name in NAMES:
        parts = []
        cells: list[str | float | None] = [name]
        for small in (True, False):
            picked = [(r[name], best) for n, r, best in rows if (n <= 20) == small and r[name][0] is not None]
            if not picked:
                parts.append(f"{'refused':>24}")
                cells += ["refused", None, None]
                continue
            gaps = [gap(e, best) for (e, _), best in picked]
            secs = [s for (_, s), _ in picked]
            parts.append(
                f"{statistics.mean(gaps):>8.3%} ({statistics.mean(secs):5.2f} s) {sum(g == 0 for g in gaps)}"
                f"/{len(gaps)} best"
            )
            cells += [
                100 * statistics.mean(gaps),
                statistics.mean(secs),
                f"{sum(g == 0 for g in gaps)}/{len(gaps)}",
            ]
        print(f"  {name:<12} " + "   ".join(parts))
        summary.add(*cells)


def qaoa_depths(args: argparse.Namespace, saved: Results) -> None:
    print("\nQAOA raw quality (no polishing), linear-ramp start, COBYLA, 1000 shots:")
    header = (
        "n",
        "objective",
        "p",
        "best shot / opt",
        "<E> / opt",
        "P(opt)",
        "x uniform",
        "evals",
        "seconds",
    )
    print("  " + " ".join(f"{h:>{w}}" for h, w in zip(header, (3, 11, 2, 16, 10, 8, 10, 6, 8), strict=True)))
    table = saved.table(
        "QAOA raw quality (no polishing), linear-ramp start, COBYLA, 1000 shots", list(header)
    )
    for n in (8, 12, 16):
        for seed in range(args.seeds):
            bqm = instance(n, 0.5, 77 * n + seed)
            opt = float(all_energies(bqm).min())
            for objective, p in [("expectation", 2), ("cvar", 1), ("cvar", 2), ("cvar", 3)]:
                started = time.monotonic()
                qcfg = SolversConfig(
                    qaoa=QaoaConfig(layers=p, polish=False, maxiter=150, objective=objective)
                )
                c = run_solver("qaoa", qcfg, bqm, time.time() + 60)
                assert c.raw_best_energy is not None
                d = c.details
                print(
                    f"  {n:>3} {objective:>11} {p:>2} {c.raw_best_energy / opt:>16.1%} "
                    f"{d['expectation'] / opt:>10.1%} {d['p_optimum']:>8.4f} {d['p_optimum'] * 2**n:>10.0f} "
                    f"{d['evaluations']:>6} {time.monotonic() - started:>8.2f}"
                )
                table.add(
                    n,
                    objective,
                    p,
                    f"{c.raw_best_energy / opt:.1%}",
                    f"{d['expectation'] / opt:.1%}",
                    d["p_optimum"],
                    d["p_optimum"] * 2**n,
                    d["evaluations"],
                    time.monotonic() - started,
                )


if __name__ == "__main__":
    asyncio.run(main())
