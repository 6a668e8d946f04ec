"""bench/run_all.py: discovery, quick argument sets, and a non-zero exit when a benchmark fails.

Runs only the two fastest benchmarks (a few seconds); ``./run bench run_all --quick`` runs them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = ROOT / "bench" / "run_all.py"


def run_all(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_every_bench_file_is_planned_with_quick_arguments() -> None:
    done = run_all("--quick", "--list")
    assert done.returncode == 0, done.stderr
    planned = {line.split()[0] for line in done.stdout.splitlines()}
    on_disk = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"run_all"}
    assert planned == on_disk
    assert all(len(line.split()) > 1 for line in done.stdout.splitlines()), "a bench without quick args"


def test_quick_benchmarks_run() -> None:
    done = run_all("--quick", "--only", "inference,qaoa")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 benchmark runs passed" in done.stdout


def test_a_failing_or_unknown_benchmark_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    (tmp_path / "fine.py").write_text("import sys\nassert sys.argv[1:] == ['--quick']\n")
    done = run_all("--quick", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "failed: broken --quick" in done.stdout and "boom" in done.stdout
    assert "1/2 benchmark runs passed" in done.stdout
    missing = run_all("--only", "nonesuch")
    assert missing.returncode == 2 and "no bench/nonesuch.py" in missing.stderr
