"""Every benchmark in bench/, briefly: a smoke test that each one still runs (no timing assertions).

    ./run bench run_all --quick [--only ingest,qaoa] [--timeout 300] [--list]

Benchmarks are discovered as ``bench/*.py`` (this file aside). A known one runs with each of its quick
argument sets below; an unknown one (just added) with ``--quick``. Each runs in its own process. The exit
status is non-zero when one fails or runs past ``--timeout``; the figures they print are not checked.
Without ``--quick`` every benchmark runs with its own defaults (long: tens of minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

QUICK: dict[str, list[list[str]]] = {
    "ingest": [
        ["--messages", "3000", "--rounds", "1"],
        ["--messages", "500", "--rounds", "1", "--batch", "100"],
    ],
    "inference": [["--seconds", "0.05"]],
    "forecast": [["--quick"]],
    "offload": [["--jobs", "20", "--rate", "10", "--seconds", "1"]],
    "solvers": [["--quick"]],
    "anytime": [["--quick"]],
    "decode": [["--complete", "300", "--sparse", "1000", "--sparse-interactions", "5000", "--rounds", "1"]],
    "latency": [["--rate", "500", "--seconds", "1", "--rounds", "1"]],
    "qaoa": [["--quick"]],
    "qaoa_gpu": [["--quick"]],  # says "not measured" where there is no CUDA GPU
    "connectors": [["--seconds", "0.3"]],
    "connectors_opcua": [["--seconds", "0.3", "--variables", "20"]],
    "faults": [["--outage-s", "2", "--crashes", "1"]],
    "history": [["--quick"]],
    "scale": [["--quick"]],  # mqtt and nats: 500 sites, 1 and 2 workers, one killed (~45 s)
    # a 15 s soak says nothing of drift (memory still settles): it only has to run and lose nothing
    "soak": [["--minutes", "0.25", "--rate", "500", "--assets", "5", "--warmup", "5", "--max-drift", "1"]],
}


def discover(folder: Path = BENCH) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_"))


def run(folder: Path, name: str, args: list[str], timeout_s: float) -> tuple[bool, float, str]:
    """Run one benchmark; (passed, seconds, the tail of its output)."""
    cmd = [sys.executable, str(folder / f"{name}.py"), *args]
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd, cwd=BENCH.parent, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return False, time.monotonic() - started, f"{out[-1500:]}\n(timed out after {timeout_s:g} s)"
    seconds = time.monotonic() - started
    tail = (done.stdout + done.stderr)[-1500:]
    return done.returncode == 0, seconds, tail if done.returncode else done.stdout[-600:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark briefly (a smoke test)")
    parser.add_argument("--only", help="comma-separated names (default: every bench/*.py)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per benchmark run")
    parser.add_argument("--list", action="store_true", help="print what would run, run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each benchmark's output")
    parser.add_argument("--dir", type=Path, default=BENCH, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args()
    names = discover(args.dir)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"no bench/{unknown[0]}.py (have: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    plan = [(n, a) for n in names for a in (QUICK.get(n, [["--quick"]]) if args.quick else [[]])]
    if args.list:
        for name, argv in plan:
            print(f"{name} {' '.join(argv)}".rstrip())
        return 0
    failed: list[str] = []
    started = time.monotonic()
    for name, argv in plan:
        label = f"{name} {' '.join(argv)}".rstrip()
        print(f"- {label} ...", end=" ", flush=True)
        ok, seconds, tail = run(args.dir, name, argv, args.timeout)
        print(f"{'ok' if ok else 'FAILED'} ({seconds:.1f} s)", flush=True)
        if not ok:
            failed.append(label)
        if not ok or args.verbose:
            print("  " + tail.strip().replace("\n", "\n  "))
    total = time.monotonic() - started
    print(f"{len(plan) - len(failed)}/{len(plan)} benchmark runs passed in {total:.0f} s")
    for label in failed:
        print(f"  failed: {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
