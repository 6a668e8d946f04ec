"""The closed-loop demo with the production day (baseline against optimised), end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from tests.unit.agent.test_planning import LIGHT, MID, PEAK

pytestmark = pytest.mark.integration


def test_demo_baseline_against_optimised(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The closed loop twice on one seed, small: the optimised day stays under the cap, meets every run
    and costs less, where the baseline controller goes over the cap; the anomaly rule derates a failing
    pump meanwhile."""
    orders = (
        "[{asset: line1/comp1, runs: 2, release: 1, power_kw: 30},"
        " {asset: line1/comp2, runs: 2, release: 1, power_kw: 30},"
        " {asset: line1/oven1, runs: 2, release: 1, power_kw: 45}]"
    )
    env = {
        **os.environ,
        "QXEDGE_PLANNING__SLOTS": "10",
        "QXEDGE_PLANNING__SLOT_S": "1.5",
        "QXEDGE_PLANNING__CAP_KW": "150",
        "QXEDGE_PLANNING__PRICE": str([MID, PEAK, PEAK, MID, PEAK, LIGHT, LIGHT, LIGHT, MID, MID]),
        "QXEDGE_PLANNING__ORDERS": orders,
        "QXEDGE_SIMULATOR__FAULTS__0__AT_S": "1",  # the anomaly path runs in the same demo
        "QXEDGE_SIMULATOR__FAULTS__0__RAMP_S": "1",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qxedge.agent.cli",
            "demo",
            "--json",
            "--report",
            str(tmp_path),
            "--broker",
            broker.url,
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    base, opt = summary["baseline"], summary["optimised"]
    for d in (base, opt):
        assert {"energy_cost", "peak_kw", "cap_violations", "unmet_runs"} <= d.keys()
        assert len(d["slots"]) == 10
    assert base["cap_violations"] >= 1 and base["unmet_runs"] == 0, base
    assert opt["cap_violations"] == 0 and opt["unmet_runs"] == 0, opt
    assert opt["energy_cost"] < base["energy_cost"]
    assert sum(summary["solver_wins"].values()) == opt["jobs"] == len(opt["job_log"]) >= 10
    assert {job["solver"] for job in opt["job_log"]} == set(summary["solver_wins"])
    for key in (
        "readings",
        "inferences",
        "setpoints",
        "deadletters",
        "provider",
        "jobs",
        "fallbacks",
        "late",
    ):
        assert key in summary
    assert summary["readings"] > 1000 and summary["inferences"] > 0 and summary["deadletters"] == 0
    assert summary["setpoint_log"][0]["asset"] == "line1/pump3"  # the rule derated the failing pump
    assert "t=" in run.stderr  # live progress goes to stderr, the summary alone to stdout
    # which broker and which transport carried the jobs, said up front and in the summary
    assert f"MQTT broker {broker.url} (given with --broker)" in run.stderr
    assert (
        summary["datacenter"].startswith("solver worker") and "shared subscription" in summary["datacenter"]
    )
    assert json.loads((tmp_path / "summary.json").read_text())["optimised"]["jobs"] == opt["jobs"]
    assert (tmp_path / "day.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
