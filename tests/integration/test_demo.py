"""The closed-loop demo with the production day (baseline against optimised), end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qxedge.agent.audit import AuditLog
from qxedge.agent.tariff import LIGHT, MID, PEAK
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing import ROOT, Watcher

pytestmark = pytest.mark.integration


def test_demo_baseline_against_optimised(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The closed loop twice on one seed, small: the optimised day stays under the cap, meets every run
    and costs less, where the baseline controller goes over the cap; the anomaly rule derates a failing
    pump meanwhile."""
    window = 'release: "2026-06-01T01:00", due: "2026-06-01T10:00"'
    orders = (
        f"[{{id: c1, asset: line1/comp1, runs: 2, {window}, power_kw: 30}},"
        f" {{id: c2, asset: line1/comp2, runs: 2, {window}, power_kw: 30}},"
        f" {{id: o1, asset: line1/oven1, runs: 2, {window}, power_kw: 45}}]"
    )
    tariff = (
        f'{{weekday: {{"00:00": {MID}, "01:00": {PEAK}, "03:00": {MID}, "04:00": {PEAK}, "05:00": {LIGHT}, '
        f'"08:00": {MID}}}}}'
    )
    env = {
        **os.environ,
        # ten one-hour slots of 1.5 s from midnight on a Monday
        "QXEDGE_PLANNING__DEMO_CLOCK": '{speed: 2400, start: "2026-06-01T00:00", slots: 10}',
        "QXEDGE_PLANNING__CAP_KW": "150",
        "QXEDGE_PLANNING__TARIFF": tariff,
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
    # each horizon planned as one CQM at its proven optimum: the day as executed is HiGHS's optimum of
    # the whole day under the inputs the plans used (issue 22: gap <= 0.1 %)
    assert opt["optimal_cost"] is not None and opt["loads_cost"] is not None, opt
    assert opt["optimal_cost"] <= opt["loads_cost"] + 1e-6
    assert opt["gap"] <= 0.001, opt
    assert [d["start"] for d in opt["slots"]][:2] == ["2026-06-01T00:00+09:00", "2026-06-01T01:00+09:00"]
    assert [d["price"] for d in opt["slots"]] == [MID, PEAK, PEAK, MID, PEAK, LIGHT, LIGHT, LIGHT, MID, MID]
    # a job every slot while runs remain to be placed
    assert sum(summary["solver_wins"].values()) == opt["jobs"] == len(opt["job_log"]) >= 5
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


async def test_the_demo_leaves_a_running_agent_and_its_broker_alone(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    """Beside an agent of site `demo` (its audit log held open) whose broker answers at the config's
    address, `qxedge demo` without --broker uses a broker of its own, its own state and free ports:
    the plant's broker sees no demo traffic and the running agent's log is untouched."""
    doc = yaml.safe_load((ROOT / "configs" / "edge.yaml").read_text())
    doc["broker"]["url"] = broker.url  # the plant broker a real agent of site demo uses
    del doc["planning"], doc["offload"]
    for model in doc["models"]:
        model["path"] = str(ROOT / "configs" / model["path"])
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(doc))
    plant = watch("#")
    state = tmp_path / "state"  # the running agent's state (conftest points XDG_STATE_HOME here)
    async with AuditLog(state / "qxedge" / "audit-demo.sqlite", "demo", "cfg", retention_days=1):
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "qxedge.agent.cli", "demo", "--config", str(config), "--duration", "3"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "XDG_STATE_HOME": str(state)},
        )
    assert run.returncode == 0, run.stderr[-3000:]
    assert broker.url not in run.stdout and "readings" in run.stdout
    assert plant.messages == [], [m.topic for m in plant.messages[:5]]
