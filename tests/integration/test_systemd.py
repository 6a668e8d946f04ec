"""The systemd units, sysusers.d and tmpfiles.d files in configs/systemd/: valid for systemd, sandboxed
(``systemd-analyze security``), and the agent and a solver work inside that sandbox."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qxedge.testing import ROOT

SYSTEMD = ROOT / "configs" / "systemd"
UNITS = ("qxedge-agent.service", "qxedge-solver@.service")
SERVICES = (*UNITS, "qxedge-rabbitmq-auth.service")  # the last: a small HTTP service, no state
MAX_EXPOSURE = 2.0  # 1.4 for both units as shipped; 8.5 before they were sandboxed
EXEC = "/opt/qxedge/bin/qxedge"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, by key, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120)


@needs_systemd
def test_units_are_valid(tmp_path: Path) -> None:
    """``systemd-analyze verify`` warns about any unknown key or bad value (it needs the executable to
    exist: a stand-in takes the place of /opt/qxedge/bin/qxedge)."""
    stand_in = tmp_path / "qxedge"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for unit in SERVICES:
        copy = tmp_path / unit.replace("@.", "@1.")
        copy.write_text((SYSTEMD / unit).read_text().replace(EXEC, str(stand_in)))
        checked = run("systemd-analyze", "verify", copy)
        assert checked.returncode == 0 and not checked.stdout + checked.stderr, (
            checked.stdout + checked.stderr
        )


@needs_systemd
@pytest.mark.parametrize("unit", SERVICES)
def test_units_are_sandboxed(unit: str) -> None:
    scored = run("systemd-analyze", "security", "--offline=true", SYSTEMD / unit)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", scored.stdout)
    assert found, scored.stdout + scored.stderr
    assert float(found[1]) <= MAX_EXPOSURE, scored.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_units_run_as_the_sysusers_user_with_descriptors_and_folders(unit: str) -> None:
    s = settings(unit)
    assert s["User"] == s["Group"] == ["qxedge"]
    assert s["LimitNOFILE"] == ["65536"]  # 1,024 ran out under 1,100 idle /metrics connections
    assert s["StateDirectory"] == s["CacheDirectory"] == ["qxedge"]
    assert s["UMask"] == ["0077"] and "DynamicUser" not in s
    env = " ".join(s["Environment"])
    assert "XDG_CACHE_HOME=%C/qxedge" in env and "XDG_STATE_HOME=%S/qxedge" in env
    sysusers = (SYSTEMD / "qxedge.sysusers").read_text()
    assert re.search(r"^u\s+qxedge\s+-\s+\".*\"\s+/var/lib/qxedge\s+/usr/sbin/nologin$", sysusers, re.M)
    tmpfiles = (SYSTEMD / "qxedge.tmpfiles").read_text()
    for kind, mode in (("lib", s["StateDirectoryMode"]), ("cache", s["CacheDirectoryMode"])):
        assert re.search(rf"^d\s+/var/{kind}/qxedge\s+{mode[0]}\s+qxedge\s+qxedge\s", tmpfiles, re.M), kind


@pytest.mark.skipif(not shutil.which("systemd-sysusers") or not shutil.which("systemd-tmpfiles"), reason="")
def test_sysusers_and_tmpfiles_make_the_user_and_its_folders(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    made = run("systemd-sysusers", f"--root={tmp_path}", SYSTEMD / "qxedge.sysusers")
    assert made.returncode == 0, made.stderr
    user = next(
        line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith("qxedge:")
    )
    uid, gid = (int(n) for n in user.split(":")[2:4])
    made = run("systemd-tmpfiles", f"--root={tmp_path}", "--create", SYSTEMD / "qxedge.tmpfiles")
    assert made.returncode == 0, made.stderr
    for path, owner, mode in (
        ("var/lib/qxedge", (uid, gid), 0o700),
        ("var/cache/qxedge", (uid, gid), 0o700),
        ("etc/qxedge", (0, gid), 0o750),
    ):
        st = (tmp_path / path).stat()
        assert ((st.st_uid, st.st_gid), st.st_mode & 0o777) == (owner, mode), path


def sandbox_missing() -> str | None:
    if shutil.which("systemd-analyze") is None or not Path("/usr/bin/python3").exists():
        return "no systemd-analyze or /usr/bin/python3"
    tried = subprocess.run(
        ["/usr/bin/python3", ROOT / "tests" / "integration" / "unit_sandbox.py", "true"],
        env=dict(os.environ, FILTER="@system-service"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return None if tried.returncode == 0 else f"no sandbox here: {tried.stderr.strip()[-200:]}"


SANDBOX_MISSING = sandbox_missing()


@pytest.mark.integration
@pytest.mark.skipif(SANDBOX_MISSING is not None, reason=str(SANDBOX_MISSING))
def test_agent_and_solver_work_under_the_units_syscall_filter_and_w_xor_x() -> None:
    """An agent and a solver worker (ONNX Runtime, Polars, QAOA on lightning.qubit, dwave-samplers)
    run under the units' SystemCallFilter= and MemoryDenyWriteExecute=yes (the same in both units)."""
    agent, solver = (settings(unit) for unit in UNITS)
    sandbox = ("SystemCallFilter", "SystemCallErrorNumber", "MemoryDenyWriteExecute")
    assert [agent[k] for k in sandbox] == [solver[k] for k in sandbox] and agent[
        "MemoryDenyWriteExecute"
    ] == ["yes"]
    env = dict(os.environ, FILTER=";".join(agent["SystemCallFilter"]))
    env.update(kv.split("=", 1) for line in agent["Environment"] for kv in line.split() if "%" not in kv)
    tests = [
        "tests/integration/test_ops.py::test_agent_and_solver_serve_metrics_and_health",
        "tests/unit/hybrid/test_solvers.py::test_qaoa_reports_its_raw_result_beside_the_polished_one",
    ]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    sandboxed = subprocess.run(
        ["/usr/bin/python3", ROOT / "tests" / "integration" / "unit_sandbox.py", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sandboxed.returncode == 0, sandboxed.stdout[-3000:] + sandboxed.stderr[-3000:]
