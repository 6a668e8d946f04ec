"""Integration (issue 22): constrained jobs through a worker on a real broker, the offload client's
``solve_cqm`` and its local HiGHS fallback, and ``qxedge solve`` on a CQM file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.cqm_wire import encode_cqm
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.problems import assignment, scheduling
from qxedge.testing import Watcher

from .test_offload import wait_for, workers

pytestmark = pytest.mark.integration
QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]
CQM_SOLVERS = SolversConfig(workers=0, cqm_auto=["milp", "tabu"])


def schedule() -> scheduling.LoadSchedule:
    return scheduling.LoadSchedule(
        assets=[
            scheduling.ScheduledAsset(name="press", power_kw=5, runs=2),
            scheduling.ScheduledAsset(name="oven", power_kw=4, runs=3, earliest=1),
            scheduling.ScheduledAsset(name="mill", power_kw=3, runs=1, latest=3),
        ],
        cap_kw=[8, 9, 9, 6, 9],
        price=scheduling.korean_tou(5),
    )


def cqm_job(job_id: str, problem: object) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "job_id": job_id,
            "site": "gumi",
            "kind": "cqm",
            "problem": problem,
            "deadline_ms": 5000,
            "submitted_at": time.time(),
            "solver": "auto",
            "reply_to": f"qx/v1/gumi/results/{job_id}",
        }
    ).encode()


async def test_a_worker_answers_a_cqm_job_with_feasible_and_objective(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    p = schedule()
    _, best = scheduling.brute_force(p)
    watcher = watch("qx/v1/gumi/results/+")
    async with workers(broker.url, 1, solvers=CQM_SOLVERS):
        await asyncio.to_thread(
            watcher.publish, "qx/v1/gumi/jobs", cqm_job("c-1", encode_cqm(scheduling.build_cqm(p)))
        )
        bad = {"type": "ConstrainedQuadraticModel", "encoding": "base64", "data": "RElNT0RDUU0="}
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", cqm_job("c-2", bad))
        assert await wait_for(watcher, lambda ms: len(ms) >= 2)
    results = {r["job_id"]: r for r in watcher.json_on("qx/v1/gumi/results/")}
    ok = results["c-1"]
    assert ok["status"] == "ok" and ok["feasible"] is True and ok["solver"] == "milp"
    assert ok["objective"] == pytest.approx(best) == ok["energy"]
    plan = scheduling.decode(p, ok["sample"])
    assert scheduling.violations(p, plan) == [] and scheduling.cost(p, plan) == pytest.approx(best)
    milp = next(c for c in ok["candidates"] if c["solver"] == "milp")
    assert milp["bound"] == pytest.approx(best) and milp["gap"] == 0 and milp["feasible"] is True
    rejected = results["c-2"]
    assert rejected["status"] == "rejected" and rejected["reason"].startswith("malformed CQM")


async def test_the_client_solves_a_cqm_remotely_then_falls_back_to_highs(broker: EmbeddedBroker) -> None:
    rng_free = assignment.Assignment(
        jobs=["j0", "j1", "j2", "j3"],
        machines=["m0", "m1"],
        processing=[[3, 5], [4, 2], [6, 6], [1, 7]],
        setup=[[0, 4, 1, 0], [0, 0, 2, 3], [0, 0, 0, 5], [0, 0, 0, 0]],
        capacity=[3, 2],
    )
    _, best = assignment.brute_force(rng_free)
    cqm = assignment.build_cqm(rng_free)
    config = OffloadConfig(deadline_ms=2000, fallback_ms=400)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
    ):
        async with workers(broker.url, 1, solvers=CQM_SOLVERS):
            remote = await offload.solve_cqm(cqm)
        local = await offload.solve_cqm(cqm)  # the data center is gone
    assert remote.source == "datacenter" and remote.feasible and remote.objective == pytest.approx(best)
    assert local.source == "fallback" and local.solver == "milp" and local.feasible
    assert local.objective == pytest.approx(best) and "no result from the data center" in (local.reason or "")
    for decision in (remote, local):
        plan = assignment.decode(rng_free, {str(k): v for k, v in decision.sample.items()})
        assert assignment.cost(rng_free, plan) == pytest.approx(best)
    assert offload.stats["fallbacks"] == 1 and offload.stats["results"] == 1


def test_solve_reads_a_cqm_file_and_reports_feasible_and_objective(tmp_path: Path) -> None:
    p = schedule()
    _, best = scheduling.brute_force(p)
    with scheduling.build_cqm(p).to_file() as f:
        (tmp_path / "day.cqm").write_bytes(f.read())
    run = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "day.cqm"), "--deadline-ms", "3000", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == "ok" and result["feasible"] is True
    assert result["objective"] == pytest.approx(best)
    text = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "day.cqm"), "--solver", "milp"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 0, text.stderr
    assert f"feasible: yes, objective {best:g}" in text.stdout
    (tmp_path / "bad.cqm").write_bytes(b"DIMODCQM\x02\x00" + bytes(10))
    bad = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "bad.cqm")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "rejected: malformed CQM" in bad.stderr
