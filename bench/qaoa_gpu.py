"""QAOA statevector on a CUDA GPU (``qaoa.device: qxedge.gpu``, hybrid/statevector.py): checked against
lightning.qubit, timed against the card's own copy bandwidth and against lightning.qubit on the same
machine's CPUs.

    ./run bench qaoa_gpu [--check 3,7,12,17,22] [--sizes 20,24,26,28,30,32] [--rates 8,12,...]
                         [--solve-max-n 30 | --solve-sizes 28,30] [--quick]

Without CuPy or a CUDA GPU it says so and exits 0 (a developer's box, CI). On a GPU machine:

1. Check: the state of the project's circuit (``hybrid.qaoa.PennyLaneCircuit``, p = 2, random Ising
   h and J of density 0.5, random angles) on lightning.qubit against ``GpuStatevector`` in complex128
   for each group size K: the largest |amplitude difference| must be <= 1e-9 (exit 1 otherwise);
   complex64's is printed beside it.
2. Layer time against a floor: a device-to-device copy of 4 GiB gives the card's bandwidth B (bytes
   read + written per second); a layer must at least read and write the state once and read the cost
   diagonal once, so floor = (2 x state + diagonal) / B. Each (n, dtype, K) prints the median of
   CUDA-event-timed layers, the bandwidth its passes reach (each pass reads and writes the state; the
   first one also reads the diagonal) and time / floor.
3. Circuit evaluations per second (p = 2, the expectation reduced on the GPU) against lightning.qubit's
   ``probs`` on this machine's CPUs at the sizes where lightning takes under ``--max-cpu-s``.
4. Full solves: ``solve_qaoa`` with ``device: qxedge.gpu`` (otherwise the defaults: p = 2, CVaR, COBYLA
   <= 150 evaluations, 1000 shots, polish) for growing n until one takes more than 10 s; the largest n
   within 1 s and within 10 s. The kernels are compiled once before (NVRTC, printed apart).
5. Solver workers: a ``Portfolio`` of 2 processes (forkserver, as ``qxedge solver`` runs them) with
   ``device: qxedge.gpu``: the warm-up (each process compiles the kernels), then 4 jobs of n = 20 at
   once with a 5 s deadline, each solved in a worker on the shared GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.portfolio import Portfolio, SolversConfig
from qxedge.hybrid.qaoa import PennyLaneCircuit, QaoaConfig, solve_qaoa
from qxedge.hybrid.statevector import CpuStatevector, GpuStatevector, gpu_passes
from qxedge.testing.bench_results import Results, add_save_option

sys.path.append(str(Path(__file__).resolve().parent))
from qaoa import instance  # bench/qaoa.py: the same random QUBOs as the CPU table

TOLERANCE = 1e-9
GROUPS = (3, 4, 5)


def random_ising(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h = rng.normal(size=n)
    j = np.triu(rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.5), 1)
    return h, j


def lightning(h: np.ndarray, j: np.ndarray, measure: Literal["probs", "state"]) -> PennyLaneCircuit:
    import pennylane as qml

    return PennyLaneCircuit(qml.device("lightning.qubit", wires=len(h)), h, j, 2, measure)


def check(sizes: list[int], results: Results) -> bool:
    print(f"check against lightning.qubit (p = 2, max |amplitude difference|; <= {TOLERANCE:g} required):")
    heads = [f"K={k}" for k in GROUPS] + ["complex64", "qxedge.cpu"]
    print(f"  {'n':>3}  " + "  ".join(f"{head:>10}" for head in heads))
    table = results.table("max |amplitude difference| against lightning.qubit (p = 2)", ["n", *heads])
    rng = np.random.default_rng(7)
    ok = True
    for n in sizes:
        h, j = random_ising(n, rng)
        gammas, betas = rng.normal(size=2), rng.normal(size=2)
        ref = np.asarray(lightning(h, j, "state").distribution(gammas, betas))
        errors = [np.abs(GpuStatevector(h, j, group_bits=k).state(gammas, betas) - ref).max() for k in GROUPS]
        single = np.abs(GpuStatevector(h, j, np.complex64).state(gammas, betas) - ref).max()
        cpu = np.abs(CpuStatevector(h, j).state(gammas, betas) - ref).max()
        ok &= max(errors) <= TOLERANCE and cpu <= TOLERANCE
        print(f"  {n:>3}  " + "  ".join(f"{e:10.1e}" for e in [*errors, single, cpu]), flush=True)
        table.add(n, *(f"{float(e):.1e}" for e in [*errors, single, cpu]))
    print(f"  {'passed' if ok else 'FAILED'}")
    results.note(f"check against lightning.qubit (<= {TOLERANCE:g} required): {'passed' if ok else 'FAILED'}")
    return ok


def gpu_seconds(cp: Any, fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``fn`` between two CUDA events, after one warm-up call."""
    fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def copy_bandwidth(cp: Any) -> float:
    src = cp.random.random(1 << 29)  # 4 GiB of float64
    dst = cp.empty_like(src)
    seconds = gpu_seconds(cp, lambda dst=dst, src=src: cp.copyto(dst, src), 10)
    del src, dst
    cp.get_default_memory_pool().free_all_blocks()
    return 2 * 8 * (1 << 29) / seconds


def layers(cp: Any, sizes: list[int], bandwidth: float, results: Results) -> None:
    print(f"one layer (phase + mixer), median of 10 (CUDA events); copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    heads = f"{'dtype':>10} {'K':>2} {'passes':>6} {'ms/layer':>9} {'GB/s':>6} {'floor ms':>9} {'/floor':>7}"
    print(f"  {'n':>3} {heads}")
    table = results.table(
        f"one layer (phase + mixer), median of 10 (CUDA events); copy bandwidth {bandwidth / 1e9:.0f} GB/s",
        ["n", "dtype", "K", "passes", "ms/layer", "GB/s", "floor ms", "/ floor"],
    )
    rng = np.random.default_rng(11)
    for n in sizes:
        h, j = random_ising(n, rng)
        for dtype in (np.complex64, np.complex128):
            state = (1 << n) * np.dtype(dtype).itemsize
            diagonal = (1 << n) * 8
            free, _ = cp.cuda.Device().mem_info
            if state + diagonal > 0.9 * free:
                need = (state + diagonal) / 2**30
                print(f"  {n:>3} {np.dtype(dtype).name:>10}  skipped: {need:.0f} GiB > 90 % of free memory")
                continue
            floor = (2 * state + diagonal) / bandwidth
            for k in GROUPS:
                sim = GpuStatevector(h, j, dtype, group_bits=k)
                sim.evolve(np.zeros(0), np.zeros(0))
                seconds = gpu_seconds(cp, lambda sim=sim: sim.layer(0.3, 0.7), 10)
                passes = len(gpu_passes(n, k))
                moved = passes * 2 * state + diagonal
                print(
                    f"  {n:>3} {np.dtype(dtype).name:>10} {k:>2} {passes:>6} {seconds * 1e3:9.2f} "
                    f"{moved / seconds / 1e9:6.0f} {floor * 1e3:9.2f} {seconds / floor:7.2f}",
                    flush=True,
                )
                table.add(
                    n,
                    np.dtype(dtype).name,
                    k,
                    passes,
                    seconds * 1e3,
                    moved / seconds / 1e9,
                    floor * 1e3,
                    seconds / floor,
                )
                del sim
                cp.get_default_memory_pool().free_all_blocks()


def evaluations(cp: Any, sizes: list[int], max_cpu_s: float, results: Results) -> None:
    print("circuit evaluations per second (p = 2; qxedge.gpu complex128, K = 5; lightning.qubit on CPUs):")
    print(f"  {'n':>3} {'qxedge.gpu':>11} {'lightning.qubit':>16} {'gpu / lightning':>16}")
    table = results.table(
        "circuit evaluations per second (p = 2; qxedge.gpu complex128, K = 5; lightning.qubit on CPUs)",
        ["n", "qxedge.gpu", "lightning.qubit", "gpu / lightning"],
    )
    rng = np.random.default_rng(13)
    cpu_seconds = 0.0
    for n in sizes:
        h, j = random_ising(n, rng)
        g, b = rng.normal(size=2), rng.normal(size=2)
        sim = GpuStatevector(h, j)
        gpu = 1 / gpu_seconds(cp, lambda sim=sim, g=g, b=b: sim.expectation(g, b), 10)
        del sim
        cp.get_default_memory_pool().free_all_blocks()
        light = ratio = "-"
        if cpu_seconds * 4 < max_cpu_s:  # a layer of 2 more qubits costs ~4x
            circuit = lightning(h, j, "probs")
            circuit.probs(g, b)
            started = time.perf_counter()
            circuit.probs(g, b)
            cpu_seconds = time.perf_counter() - started
            light, ratio = f"{1 / cpu_seconds:16.2f}", f"x{gpu * cpu_seconds:.0f}"
        print(f"  {n:>3} {gpu:11.1f} {light:>16} {ratio:>16}", flush=True)
        table.add(n, gpu, light.strip(), ratio)


def full_solves(cp: Any, sizes: list[int] | None, n_max: int, results: Results) -> None:
    """Growing even n until a solve takes over 10 s (or exactly ``sizes``); the peak of CuPy's pool."""
    started = time.perf_counter()
    solve_qaoa(
        instance(4), Deadline(time.time() + 60), QaoaConfig(device="qxedge.gpu")
    )  # compiles the kernels
    print(
        f"full solve (qxedge.gpu, complex128, defaults otherwise); first call, kernels compiled: "
        f"{time.perf_counter() - started:.1f} s"
    )
    results.note(f"full solve: first call, kernels compiled, {time.perf_counter() - started:.1f} s")
    table = results.table(
        "full solve (qxedge.gpu, complex128, defaults otherwise)",
        ["n", "seconds", "evaluations", "P(optimum)", "GPU memory held GiB"],
    )
    within: dict[float, int] = {}
    pool = cp.get_default_memory_pool()
    for n in sizes or range(12, n_max + 1, 2):
        cfg = QaoaConfig(device="qxedge.gpu", max_qubits=n)
        pool.free_all_blocks()
        started = time.perf_counter()
        try:
            candidate = solve_qaoa(instance(n), Deadline(time.time() + 3600), cfg)
        except MemoryError as exc:  # CuPy's OutOfMemoryError is one
            print(f"  n = {n:>2}: out of GPU memory ({str(exc)[:100]})")
            results.note(f"full solve at n = {n}: out of GPU memory")
            break
        seconds = time.perf_counter() - started
        details = candidate.details
        if candidate.status != "ok" or details["device"] != "qxedge.gpu":
            what = f"{candidate.status}, {candidate.reason}, {details.get('device')}"
            raise SystemExit(f"qaoa at n = {n}: {what}")
        print(
            f"  n = {n:>2}: {seconds:6.2f} s, {details['evaluations']} evaluations, "
            f"P(optimum) {details['p_optimum']:.3g}, GPU memory held {pool.total_bytes() / 2**30:.1f} GiB",
            flush=True,
        )
        table.add(n, seconds, details["evaluations"], details["p_optimum"], pool.total_bytes() / 2**30)
        for bound in (1.0, 10.0):
            if seconds <= bound:
                within[bound] = n
        if seconds > 10.0 and not sizes:
            break
    for bound in (1.0, 10.0):
        print(f"  largest n solved within {bound:g} s: {within.get(bound, 'none')}")
        results.note(f"full solve: largest n solved within {bound:g} s: {within.get(bound, 'none')}")


async def workers(n: int, jobs: int, saved: Results) -> None:
    portfolio = Portfolio(SolversConfig(workers=2, qaoa=QaoaConfig(device="qxedge.gpu", max_qubits=n)))
    try:
        started = time.perf_counter()
        await asyncio.to_thread(portfolio.warm_up)
        print(
            f"solver workers (2 processes, forkserver): warm-up with kernel compilation "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        results = await asyncio.gather(
            *(portfolio.solve(instance(n, seed), "qaoa", time.time() + 5) for seed in range(jobs))
        )
        seconds = time.perf_counter() - started
        for best, candidates in results:
            c = candidates[0]
            print(
                f"  {c.solver}: {c.status}, {c.seconds:.2f} s, device {c.details.get('device')}, "
                f"energy {best.energy if best else None}"
            )
        print(f"  {jobs} jobs of n = {n} in {seconds:.2f} s")
        saved.note(f"two solver processes: {jobs} jobs of n = {n} at once in {seconds:.2f} s")
    finally:
        portfolio.close()


def ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", default="3,7,12,17,22", help="qubit counts checked against lightning")
    parser.add_argument("--sizes", default="20,24,26,28,30,32", help="qubit counts of the layer table")
    parser.add_argument("--rates", default="8,12,16,20,24,26,28", help="qubit counts of the evaluation table")
    parser.add_argument("--max-cpu-s", type=float, default=5.0, help="lightning's limit per evaluation")
    parser.add_argument("--solve-max-n", type=int, default=30, help="largest n of the full solves")
    parser.add_argument("--solve-sizes", help="exactly these n for the full solves (no 10 s stop)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    add_save_option(parser)
    args = parser.parse_args()
    results = Results(__file__, parser, args)
    try:
        import cupy as cp

        name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # no CuPy (ImportError), no driver or no GPU (CUDA errors)
        print(f"qxedge.gpu: not measured, no CUDA GPU here ({type(exc).__name__}: {str(exc)[:100]})")
        return 0  # nothing saved: a result without a GPU would replace one measured with it
    import pennylane as qml

    print(
        f"{name}, CuPy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, "
        f"PennyLane {qml.__version__}, python {sys.version.split()[0]}"
    )
    if args.quick:
        args.check, args.sizes, args.rates, args.solve_max_n = "3,7,12", "16", "8,12", 14
    results.note(f"{name}, CuPy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}")
    if not check(ints(args.check), results):
        return 1
    layers(cp, ints(args.sizes), copy_bandwidth(cp), results)
    evaluations(cp, ints(args.rates), args.max_cpu_s, results)
    full_solves(cp, ints(args.solve_sizes) if args.solve_sizes else None, args.solve_max_n, results)
    asyncio.run(workers(20 if not args.quick else 10, 4, results))
    results.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
