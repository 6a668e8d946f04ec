"""Metrics and health endpoints of a running agent and solver worker, and the config schema."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from qxedge.agent.cli import JsonFormatter
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.ops_server import OpsConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import ROOT, edge_config

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_agent_and_solver_serve_metrics_and_health(broker: EmbeddedBroker) -> None:
    agent = Agent(edge_config(broker.url))
    solver = SolverService(
        DataCenterConfig(
            broker=BrokerConfig(url=broker.url), ops=OpsConfig(port=0), solvers=SolversConfig(workers=0)
        )
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        tasks.create_task(solver.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.wait_for(solver.ready.wait(), 30)
        assert agent.ops is not None and agent.ops.port
        status, body = await asyncio.to_thread(get, agent.ops.port, "/metrics")
        assert status == 200
        agent_metrics = body
        for name in (
            "qxedge_outbox_depth",
            "qxedge_readings_total",
            "qxedge_deadletters",
            "qxedge_setpoint_verdicts_total",
            "qxedge_offload_total",
            "qxedge_broker_connected",
            "qxedge_model_info",
            "qxedge_inference_seconds",
            "qxedge_loop_lag_seconds",
            'qxedge_gc_pause_seconds_count{generation="0"}',
        ):
            assert name in body, name
        assert 'qxedge_broker_connected{site="demo"} 1.0' in body
        assert 'provider="CPUExecutionProvider"' in body or "ExecutionProvider" in body
        assert await asyncio.to_thread(get, agent.ops.port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, agent.ops.port, "/readyz") == (200, "ready\n")
        assert (await asyncio.to_thread(get, agent.ops.port, "/nope"))[0] == 404
        status, body = await asyncio.to_thread(get, solver_port(solver), "/metrics")
        assert (
            status == 200 and "qxedge_solver_queue_depth" in body and "qxedge_solver_broker_connected" in body
        )
        assert await asyncio.to_thread(get, solver_port(solver), "/readyz") == (200, "ready\n")
        stop.set()
    # every metric the example Grafana dashboards chart is one these processes export
    for board, exported in (("qxedge-agent", agent_metrics), ("qxedge-solver", body)):
        text = (ROOT / "configs" / "grafana" / f"{board}.json").read_text()
        for name in set(re.findall(r"qxedge_[a-z_]+", text)):
            assert re.sub(r"_bucket$", "", name) in exported, f"{board} charts {name}, which nobody exports"


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("agent.x", logging.WARNING, __file__, 1, "refused %s", ("line1/p1",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "agent.x" and doc["message"] == "refused line1/p1"


def solver_port(solver: SolverService) -> int:
    assert solver.ops is not None
    return solver.ops.port


def test_config_schema_describes_both_configs() -> None:
    for kind, key in (("edge", "safety"), ("datacenter", "solvers")):
        run = subprocess.run(
            [sys.executable, "-m", "qxedge.agent.cli", "config-schema", "--kind", kind],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0
        assert key in json.loads(run.stdout)["properties"]
