"""No silent failure on the agent's side (issue 23): after ``offload.alarm_after`` local fallbacks in a
row the agent says "the data center is not answering" (log, alarm, metric), until it answers again."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import Watcher, compressed, edge_config, random_bqm, wait_until

pytestmark = pytest.mark.integration


async def test_consecutive_fallbacks_raise_one_alarm_until_the_data_center_answers(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    alarms: list[str] = []
    cfg = OffloadConfig(deadline_ms=300, fallback_ms=200, alarm_after=2, solver="exact")
    bqm = random_bqm(6, 0.5, seed=1)
    caplog.set_level(logging.WARNING, "qxedge.hybrid.client")
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", cfg, on_silent=alarms.append) as offload,
    ):
        first = await offload.solve(bqm)
        assert first.source == "fallback" and not offload.silent and alarms == []
        for _ in range(3):  # the second in a row raises the alarm, the ones after it do not again
            assert (await offload.solve(bqm)).source == "fallback"
        assert offload.silent and offload.unanswered == 4
        assert len(alarms) == 1 and alarms[0].startswith("the data center is not answering: 2 offloads")
        assert "the data center is not answering" in caplog.text
        stop = asyncio.Event()
        worker = SolverService(
            DataCenterConfig(broker=BrokerConfig(url=broker.url), solvers=SolversConfig(workers=0))
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.run(stop))
            await asyncio.wait_for(worker.ready.wait(), 30)
            answered = await offload.solve(bqm, deadline_ms=10_000)
            stop.set()
    assert answered.source == "datacenter"
    assert not offload.silent and offload.unanswered == 0
    assert "the data center answers again" in caplog.text


async def test_the_agent_publishes_the_alarm_and_the_metric(broker: EmbeddedBroker) -> None:
    """The agent's production day offloads each re-plan; with no worker on the broker, every one falls
    back, and the agent raises the alarm on its alarms topic and in its stats."""
    from qxedge.agent.console.snapshot import status
    from qxedge.agent.console.status_cli import lines
    from qxedge.agent.pipeline import Agent

    cfg = edge_config(broker.url, planning=True, offload__alarm_after="1", planning__forecast__base_kw="40")
    watcher = Watcher(broker.url, "qx/v1/demo/alarms")
    # the plant clock in the demo's orders' window, a slot a second: re-plans come at once
    agent, stop = Agent(cfg, clock=compressed(cfg, "2026-06-01T09:30", 1.0)), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            assert await wait_until(lambda: agent.stats().datacenter_silent, 60, every_s=0.1)
            doc = status(agent, None, time.time())  # what /status and `qxedge status` show
            assert doc["offload"]["silent"] and doc["offload"]["unanswered"] >= 1
            assert any("NOT ANSWERING" in line for line in lines(doc))
            stop.set()
        docs = [json.loads(m.payload) for m in watcher.messages]
        assert await asyncio.to_thread(
            watcher.wait_for, lambda ms: any(json.loads(m.payload)["kind"] == "datacenter" for m in ms), 10
        ), docs
    finally:
        watcher.close()
    alarm = next(
        json.loads(m.payload) for m in watcher.messages if json.loads(m.payload)["kind"] == "datacenter"
    )
    assert alarm["reason"].startswith("the data center is not answering")
