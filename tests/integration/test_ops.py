"""Metrics and health endpoints of a running agent and solver worker, and the config schema."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import qxedge
from qxedge.agent.cli import JsonFormatter
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.ops_server import OpsConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import ROOT, Watcher, edge_config, random_bqm, wait_until

from .test_offload import envelope

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics_worker(url: str) -> SolverService:
    """A solver worker with its ops endpoint on a free port, solving in-process with exact."""
    config = DataCenterConfig(
        broker=BrokerConfig(url=url), ops=OpsConfig(port=0), solvers=SolversConfig(workers=0, auto=["exact"])
    )
    return SolverService(config)


async def test_agent_and_solver_serve_metrics_and_health(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    agent = Agent(edge_config(broker.url))
    solver = metrics_worker(broker.url)
    watcher = watch("qx/v1/gumi/results/+")
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        tasks.create_task(solver.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.wait_for(solver.ready.wait(), 30)
        # some activity: a reading, a dead letter, a solved job
        await asyncio.to_thread(watcher.publish, "plant/line1/pump1/temp", json.dumps({"value": 70.1}))
        await asyncio.to_thread(watcher.publish, "plant/line1/pump1/temp", b"{not json")
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", envelope("gumi", random_bqm(6, 0.5, 1)))
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) == 1)
        assert await wait_until(lambda: agent.stats().evaluations > 0 and agent.stats().deadletters == 1)
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
            'qxedge_gc_pause_seconds_count{generation="0",site="demo"}',
            "process_open_fds",
            "process_max_fds",
            "python_info",
            'qxedge_ops_connections_total{event="refused",site="demo"} 0.0',
        ):
            assert name in body, name
        assert 'qxedge_broker_connected{site="demo"} 1.0' in body
        assert 'provider="CPUExecutionProvider"' in body or "ExecutionProvider" in body
        version, python = qxedge.__version__, platform.python_version()
        build = {"site": "demo", "version": version, "python": python}
        assert series_of(body)["qxedge_build_info"] == [build]
        assert await asyncio.to_thread(get, agent.ops.port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, agent.ops.port, "/readyz") == (200, "ready\n")
        assert (await asyncio.to_thread(get, agent.ops.port, "/nope"))[0] == 404
        status, body = await asyncio.to_thread(get, solver_port(solver), "/metrics")
        assert (
            status == 200 and "qxedge_solver_queue_depth" in body and "qxedge_solver_broker_connected" in body
        )
        build = {"worker": solver.worker_id, "version": version, "python": python}
        assert series_of(body)["qxedge_build_info"] == [build] and "process_open_fds" in body
        assert await asyncio.to_thread(get, solver_port(solver), "/readyz") == (200, "ready\n")
        stop.set()
    # every series the example Grafana dashboards chart is exported, with the labels they filter on
    for board, exported, values in (
        ("qxedge-agent", agent_metrics, {"site": "demo"}),
        ("qxedge-solver", body, {"worker": solver.worker_id}),
    ):
        check_dashboard(
            json.loads((ROOT / "configs" / "grafana" / f"{board}.json").read_text()), exported, values
        )


GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
KEYWORDS = {"and", "or", "unless", "offset", "bool"}
Series = list[dict[str, str]]


def series_of(text: str) -> dict[str, Series]:
    """Sample name -> the label sets of its series, from a /metrics answer."""
    out: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample.labels)
    return out


def check_dashboard(board: dict[str, Any], exported_text: str, variables: dict[str, str]) -> None:
    """Every selector of every panel's PromQL names an exported metric, and some of its series match
    the selector's label matchers (dashboard variables set to ``variables``); every label a query
    groups by (``by``, ``group_left``) is on one of its metrics."""
    exported = series_of(exported_text)
    for var in board["templating"]["list"]:
        if var["type"] == "query":  # label_values([metric, ]label)
            found = re.fullmatch(r"label_values\((?:(\w+),\s*)?(\w+)\)", var["query"])
            assert found, var["query"]
            metric, label = found.groups()
            names = [metric] if metric else list(exported)
            assert any(label in labels for name in names for labels in exported.get(name, ())), var["query"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            grouped = {
                label.strip()
                for clause, labels in GROUPING.findall(expr)
                if clause in ("by", "group_left", "group_right")
                for label in labels.split(",")
            }
            bare = re.sub(r"\[[^\]]*\]", "", GROUPING.sub("", expr))
            selectors = [(n, m) for n, m, call in SELECTOR.findall(bare) if not call and n not in KEYWORDS]
            assert selectors, expr
            labels_seen: set[str] = set()
            for name, matchers in selectors:
                assert name in exported, f"{board['uid']}: {panel['title']!r} queries {name}, not exported"
                wanted = [
                    (
                        label,
                        op,
                        value.replace("$" + label, variables.get(label, "")) if "$" in value else value,
                    )
                    for label, op, value in MATCHER.findall(matchers)
                ]
                matching = [labels for labels in exported[name] if all(matches(labels, *w) for w in wanted)]
                assert matching, f"{board['uid']}: {panel['title']!r}: no series of {name} matches {matchers}"
                labels_seen.update(*(labels.keys() for labels in matching))
            assert grouped <= labels_seen, (
                f"{panel['title']!r} groups by {grouped - labels_seen}: not exported"
            )


def matches(labels: dict[str, str], label: str, op: str, value: str) -> bool:
    got = labels.get(label)
    if op in ("=", "!="):
        return (got == value) == (op == "=")
    return got is not None and (re.fullmatch(value, got) is not None) == (op == "=~")


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
