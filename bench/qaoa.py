"""QAOA scaling: circuit evaluations per second against n on default.qubit, lightning.qubit and qxedge.cpu
(same run), the largest n whose full QAOA solve (``hybrid/qaoa.py``) ends within 1 s and 10 s, and QAOA's
raw quality by depth.

    ./run bench qaoa [--sizes 8,12,16,20,24] [--max-eval-s 6] [--depth-sizes 8,12,16] [--only-depths]
                     [--quick]

1. Rates: the project's own circuit (``solve_qaoa``: p = 2 layers of RZ / IsingZZ / RX on a random QUBO
   of density 0.5, integer biases in [-100, 100], ``qml.probs`` of every basis state). Each (device, n)
   is solved twice with the optimiser capped at 6 and at 6 + K evaluations (no polish, 100 shots); the
   rate is K / (extra seconds), so the set-up (every assignment's energy, the device) cancels out.
   ``default.qubit`` is the baseline; the ratios are lightning / default and qxedge.cpu (the same circuit
   without gates, ``hybrid/statevector.py`` on NumPy) / lightning at each n. A size is skipped when the
   previous one's time per evaluation, times 2^(step), exceeds ``--max-eval-s``.
2. Full solve: ``solve_qaoa(bqm, no deadline, QaoaConfig(device=D))`` (p = 2, COBYLA up to 150
   evaluations, 1000 shots, steepest-descent polish) on lightning.qubit (the default) and qxedge.cpu, for
   growing even n, until one takes more than 10 s or n reaches ``--full-max-n``.

3. Depths: QAOA's raw quality for p = 1..3 (and p = 2 on the plain expectation), before any classical
   polishing, on ``--depth-seeds`` instances of each n in ``--depth-sizes`` (density 0.5, no deadline,
   COBYLA up to 150 evaluations, 1000 shots, on the default device): the best of the shots over the
   optimum, the expectation over the optimum, the probability of the optimum, and that probability over
   uniform random guessing's 2^-n. ``--only-depths`` runs this table alone.

GPUs: ``bench/qaoa_gpu.py`` (``qxedge.gpu``). ``lightning.gpu`` is tried here and reported as not
measured when it cannot start.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import dimod

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.qaoa import QaoaConfig, solve_qaoa
from qxedge.hybrid.solvers import all_energies
from qxedge.testing import random_bqm
from qxedge.testing.bench_results import Results, add_save_option

DEVICES = ("default.qubit", "lightning.qubit", "qxedge.cpu")


def instance(n: int, seed: int = 1) -> dimod.BinaryQuadraticModel:
    return random_bqm(n, 0.5, seed)


def timed_solve(bqm: dimod.BinaryQuadraticModel, cfg: QaoaConfig) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    candidate = solve_qaoa(bqm, Deadline(time.time() + 3600), cfg)
    seconds = time.perf_counter() - started
    if candidate.status != "ok":
        raise SystemExit(f"qaoa at n = {bqm.num_variables}: {candidate.status} ({candidate.reason})")
    return seconds, int(candidate.details["evaluations"]), candidate.details


def evaluation_rate(device: str, n: int, extra: int) -> tuple[float, float]:
    """(evaluations per second, seconds of the base solve) for the project's circuit on ``device``."""
    bqm = instance(n)
    base = QaoaConfig(device=device, max_qubits=n, maxiter=6, polish=False, shots=100)
    t_a, e_a, details = timed_solve(bqm, base)
    if details.get("device") != device:
        raise SystemExit(f"{device} is not available here: {details.get('device')}")
    t_b, e_b, _ = timed_solve(bqm, base.model_copy(update={"maxiter": 6 + extra}))
    if e_b <= e_a or t_b <= t_a:  # COBYLA converged early, or noise: fall back to the plain average
        return (e_b + 1) / t_b, t_a
    return (e_b - e_a) / (t_b - t_a), t_a


def rates(sizes: list[int], max_eval_s: float, budget_s: float, results: Results) -> None:
    print(f"circuit evaluations per second (p = 2, density 0.5; cap {max_eval_s:g} s per evaluation):")
    heads = f"{'default.qubit':>14}  {'lightning.qubit':>16}  {'qxedge.cpu':>11}  {'lightning/default':>17}"
    print(f"  {'n':>3}  {heads}  {'qxedge.cpu/lightning':>20}")
    table = results.table(
        f"circuit evaluations per second (p = 2, density 0.5; cap {max_eval_s:g} s per evaluation)",
        ["n", *DEVICES, "lightning / default", "qxedge.cpu / lightning"],
    )
    per_eval: dict[str, float] = {}
    last_n: dict[str, int] = {}
    for n in sizes:
        row: dict[str, float | str] = {}
        for device in DEVICES:
            estimate = per_eval.get(device, 0.0) * 2.0 ** (n - last_n.get(device, n))
            if device in per_eval and estimate > max_eval_s:
                row[device] = f"skip (~{estimate:.0f} s)"
                continue
            # about budget_s of extra evaluations at the extrapolated speed (10 for a device's first size)
            extra = int(min(40, max(3, budget_s / estimate))) if estimate > 0 else 10
            rate, _ = evaluation_rate(device, n, extra)
            per_eval[device], last_n[device] = 1.0 / rate, n
            row[device] = rate
        cells = [f"{v:14.1f}" if isinstance(v, float) else f"{v:>14}" for v in (row[d] for d in DEVICES)]
        d, light, ours = row["default.qubit"], row["lightning.qubit"], row["qxedge.cpu"]
        ratio = f"x{light / d:.1f}" if isinstance(d, float) and isinstance(light, float) else "-"
        ratio_ours = f"x{ours / light:.1f}" if isinstance(ours, float) and isinstance(light, float) else "-"
        line = f"  {n:>3}  {cells[0]}  {cells[1]:>16}  {cells[2]:>11}  {ratio:>17}  {ratio_ours:>20}"
        print(line, flush=True)
        table.add(n, *(row[d] for d in DEVICES), ratio, ratio_ours)


def full_solves(device: str, limit_s: float, n_max: int, results: Results) -> None:
    cfg = QaoaConfig(device=device, max_qubits=n_max)
    print(
        f"full solve on {device} (p = {cfg.layers}, COBYLA <= {cfg.maxiter} evaluations, "
        f"{cfg.shots} shots, polish), no deadline:"
    )
    table = results.table(
        f"full solve on {device} (p = {cfg.layers}, COBYLA <= {cfg.maxiter} evaluations, {cfg.shots} shots, "
        "polish), no deadline",
        ["n", "seconds", "evaluations", "P(optimum)"],
    )
    within: dict[float, int] = {}
    for n in range(4, n_max + 1, 2):
        seconds, evaluations, details = timed_solve(instance(n), cfg)
        optimum = details["p_optimum"]
        print(f"  n = {n:>2}: {seconds:6.2f} s, {evaluations} evaluations, P(optimum) {optimum:.3g}")
        table.add(n, seconds, evaluations, optimum)
        for bound in (1.0, 10.0):
            if seconds <= bound:
                within[bound] = n
        if seconds > limit_s:
            break
    else:
        print(f"  (stopped at --full-max-n {n_max})")
    for bound in (1.0, 10.0):
        print(f"  largest n solved within {bound:g} s: {within.get(bound, 'none')}")
        results.note(f"{device}: largest n solved within {bound:g} s: {within.get(bound, 'none')}")


def depths(sizes: list[int], seeds: int, results: Results) -> None:
    title = "QAOA raw quality (no polishing), linear-ramp start, COBYLA, 1000 shots"
    print(f"{title}:")
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
    widths = (3, 11, 2, 16, 10, 8, 10, 6, 8)
    print("  " + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    table = results.table(title, list(header))
    for n in sizes:
        for seed in range(seeds):
            bqm = random_bqm(n, 0.5, 77 * n + seed)
            opt = float(all_energies(bqm).min())
            for objective, p in [("expectation", 2), ("cvar", 1), ("cvar", 2), ("cvar", 3)]:
                cfg = QaoaConfig(
                    layers=p, polish=False, maxiter=150, objective=objective, max_qubits=max(n, 20)
                )
                started = time.perf_counter()
                candidate = solve_qaoa(bqm, Deadline(time.time() + 600), cfg)
                seconds = time.perf_counter() - started
                if candidate.status != "ok" or candidate.raw_best_energy is None:
                    raise SystemExit(f"qaoa at n = {n}: {candidate.status} ({candidate.reason})")
                d = candidate.details
                cells = (
                    n,
                    objective,
                    p,
                    f"{candidate.raw_best_energy / opt:.1%}",
                    f"{d['expectation'] / opt:.1%}",
                    d["p_optimum"],
                    d["p_optimum"] * 2**n,
                    d["evaluations"],
                    seconds,
                )
                print(
                    f"  {n:>3} {objective:>11} {p:>2} {cells[3]:>16} {cells[4]:>10} {d['p_optimum']:>8.4f} "
                    f"{cells[6]:>10.0f} {d['evaluations']:>6} {seconds:>8.2f}",
                    flush=True,
                )
                table.add(*cells)


def gpu_note() -> str:
    import pennylane as qml

    try:
        qml.device("lightning.gpu", wires=2)
    except Exception as exc:  # no plugin, no CUDA, no GPU: each raises its own error
        return f"lightning.gpu: not measured, no GPU here ({type(exc).__name__}: {str(exc)[:100]})"
    return "lightning.gpu: available, not part of this benchmark (bench/qaoa_gpu.py measures qxedge.gpu)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,12,16,20,24", help="qubit counts of the rate table")
    parser.add_argument(
        "--max-eval-s", type=float, default=6.0, help="skip sizes slower than this per evaluation"
    )
    parser.add_argument(
        "--extra-s", type=float, default=1.5, help="about this long of extra evaluations per cell"
    )
    parser.add_argument("--full-max-n", type=int, default=24, help="largest n tried for the full solve")
    parser.add_argument("--depth-sizes", default="8,12,16", help="qubit counts of the depth table")
    parser.add_argument("--depth-seeds", type=int, default=2, help="instances per size in the depth table")
    parser.add_argument("--only-depths", action="store_true", help="the depth table alone")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="n = 8, 12, full solves up to n = 10 and the depth table at n = 8 (smoke test)",
    )
    add_save_option(parser)
    args = parser.parse_args()
    results = Results(__file__, parser, args)
    sizes = [int(s) for s in args.sizes.split(",")]
    depth_sizes = [int(s) for s in args.depth_sizes.split(",")]
    if args.quick:
        sizes, args.max_eval_s, args.extra_s, args.full_max_n = [8, 12], 1.0, 0.3, 10
        depth_sizes, args.depth_seeds = [8], 1
    import pennylane as qml

    print(
        f"python {sys.version.split()[0]}, pennylane {qml.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    note = gpu_note()
    print(note)
    results.note(note)
    started = time.perf_counter()
    if not args.only_depths:
        rates(sizes, args.max_eval_s, args.extra_s, results)
        for device in ("lightning.qubit", "qxedge.cpu"):
            full_solves(device, 10.0, args.full_max_n, results)
    depths(depth_sizes, args.depth_seeds, results)
    print(f"total {time.perf_counter() - started:.0f} s")
    results.save()


if __name__ == "__main__":
    main()
