"""The metrics collectors read one thing: the component's ``stats()`` snapshot."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qxedge.agent.metrics import AgentMetrics
from qxedge.agent.pipeline import Agent, AgentStats, ModelStats
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.core.ops_server import OpsStats
from qxedge.hybrid.ledger import UsageRow
from qxedge.hybrid.metrics import SolverMetrics
from qxedge.hybrid.service import SolverStats
from qxedge.testing import Watcher, edge_config, wait_until

AGENT = AgentStats(
    site="gumi",
    messages=12,
    readings=30,
    deadletters=2,
    deadletter_reasons={"invalid_json": 2},
    evaluations=5,
    inferences=9,
    proposals=1,
    verdicts={"accepted": 4, "written": 3, "unchanged": 8, "partial": 1},
    offload={"jobs": 2, "fallbacks": 1},
    broker_connected=True,
    broker_reconnects=1,
    publishes_dropped=0,
    setpoints_stale_dropped=6,
    broker_unacked=7,
    outbox_stored=11,
    outbox_alarm=True,
    outbox_records={"accepted": 40, "acked": 29},
    window_rows=123,
    models=(ModelStats("anomaly", "CPUExecutionProvider", "ab" * 32),),
    ops=OpsStats(open=2, peak=64, answered=100, refused=17, timed_out=3),
    datacenter_silent=True,
    offload_unanswered=4,
)
SOLVER = SolverStats(
    worker="w1",
    received=10,
    duplicates=1,
    unroutable=0,
    results={"ok": 6, "late": 2, "rejected": 1, "error": 0},
    by_site={("gumi", "ok"): 6, ("gumi", "late"): 2, ("ulsan", "rejected"): 1},
    wins={"tabu": 5, "exact": 1},
    queue_depth=3,
    cut=1,
    recycled=2,
    solver_seconds={"gumi": 4.5, "ulsan": 0.25},
    broker_connected=False,
    ops=None,
    ledger_errors=3,
    took_over=1,
    pool=(UsageRow("gumi", 9, {"ok": 7, "late": 2}, 12.5, {"tabu": 6, "exact": 1}),),
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_agent_metrics_are_its_stats_snapshot() -> None:
    got = samples(generate_latest(AgentMetrics(lambda: AGENT).registry).decode())
    site = ("site", "gumi")
    for name, labels, value in (
        ("qxedge_messages_total", {site}, 12),
        ("qxedge_readings_total", {site}, 30),
        ("qxedge_evaluations_total", {site}, 5),
        ("qxedge_inferences_total", {site}, 9),
        ("qxedge_proposals_total", {site}, 1),
        ("qxedge_broker_reconnects_total", {site}, 1),
        ("qxedge_publishes_dropped_total", {site}, 0),
        ("qxedge_deadletters_total", {site, ("reason", "invalid_json")}, 2),
        ("qxedge_setpoint_verdicts_total", {site, ("verdict", "written")}, 3),
        ("qxedge_setpoint_verdicts_total", {site, ("verdict", "refused")}, 0),
        ("qxedge_setpoint_verdicts_total", {site, ("verdict", "unchanged")}, 8),  # no-ops, not written
        ("qxedge_offload_total", {site, ("event", "fallbacks")}, 1),
        ("qxedge_offload_total", {site, ("event", "late")}, 0),
        ("qxedge_datacenter_silent", {site}, 1),
        ("qxedge_offload_unanswered", {site}, 4),
        ("qxedge_broker_connected", {site}, 1),
        ("qxedge_outbox_depth", {site}, 7),
        ("qxedge_outbox_stored", {site}, 11),
        ("qxedge_outbox_alarm", {site}, 1),
        ("qxedge_outbox_records_total", {site, ("event", "acked")}, 29),
        ("qxedge_outbox_records_total", {site, ("event", "resent")}, 0),
        ("qxedge_setpoints_stale_dropped_total", {site}, 6),
        ("qxedge_window_rows", {site}, 123),
        ("qxedge_ops_connections_total", {site, ("event", "refused")}, 17),
        ("qxedge_ops_connections_total", {site, ("event", "timed_out")}, 3),
        ("qxedge_ops_connections_open", {site}, 2),
        (
            "qxedge_model_info",
            {site, ("model", "anomaly"), ("provider", "CPUExecutionProvider"), ("sha256", "ab" * 8)},
            1,
        ),
    ):
        assert got[(name, frozenset(labels))] == value, (name, labels)
    # only the verdicts the dashboards know: "partial" is counted by the gate, not exported
    assert not [k for k in got if ("verdict", "partial") in k[1]]


def test_solver_metrics_are_its_stats_snapshot() -> None:
    got = samples(generate_latest(SolverMetrics(lambda: SOLVER).registry).decode())
    worker = ("worker", "w1")
    for name, labels, value in (
        ("qxedge_solver_jobs_total", {worker, ("site", "gumi"), ("status", "late")}, 2),
        ("qxedge_solver_jobs_total", {worker, ("site", "ulsan"), ("status", "rejected")}, 1),
        ("qxedge_solver_wins_total", {worker, ("solver", "tabu")}, 5),
        ("qxedge_solver_deadline_misses_total", {worker}, 2),
        ("qxedge_solver_duplicates_total", {worker}, 1),
        ("qxedge_solver_received_total", {worker}, 10),
        ("qxedge_solver_queue_depth", {worker}, 3),
        ("qxedge_solver_jobs_cut_total", {worker}, 1),
        ("qxedge_solver_processes_recycled_total", {worker}, 2),
        ("qxedge_solver_site_solver_seconds_total", {worker, ("site", "gumi")}, 4.5),
        ("qxedge_solver_site_solver_seconds_total", {worker, ("site", "ulsan")}, 0.25),
        ("qxedge_solver_broker_connected", {worker}, 0),
        ("qxedge_solver_ledger_errors_total", {worker}, 3),
        ("qxedge_solver_claims_taken_over_total", {worker}, 1),
        # the pool's figures from the ledger: the same on every worker, so no worker label
        ("qxedge_pool_jobs_total", {("site", "gumi"), ("status", "ok")}, 7),
        ("qxedge_pool_jobs_total", {("site", "gumi"), ("status", "late")}, 2),
        ("qxedge_pool_solver_seconds_total", {("site", "gumi")}, 12.5),
        ("qxedge_pool_wins_total", {("site", "gumi"), ("solver", "tabu")}, 6),
    ):
        assert got[(name, frozenset(labels))] == value, (name, labels)
    assert not [name for name, _ in got if name.startswith("qxedge_ops_")]  # no endpoint, no series


@pytest.mark.integration
async def test_a_running_agents_stats_are_a_frozen_snapshot(broker: EmbeddedBroker) -> None:
    agent = Agent(edge_config(broker.url))
    stop = asyncio.Event()
    watcher = Watcher(broker.url)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            async with asyncio.timeout(30):
                await agent.ready.wait()
            watcher.publish("plant/line1/pump1/temp", json.dumps({"value": 70.5}))
            watcher.publish("plant/line1/pump1/temp", b"{not json")
            assert await wait_until(lambda: agent.stats().messages == 2)
            before = agent.stats()
            assert before.readings == 1 and before.deadletters == 1 and before.broker_connected
            assert dict(before.deadletter_reasons) == {"invalid_json": 1}
            assert [m.name for m in before.models] == list(agent.models)
            with pytest.raises(dataclasses.FrozenInstanceError):
                before.readings = 5  # type: ignore[misc]
            watcher.publish("plant/line1/pump1/temp", b"[]")
            assert await wait_until(lambda: agent.stats().deadletters == 2)
            assert before.deadletters == 1 and sum(before.deadletter_reasons.values()) == 1  # a copy
            stop.set()
    finally:
        watcher.close()
