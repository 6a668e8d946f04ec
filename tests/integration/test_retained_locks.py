"""Lock state that does not depend on a broker's retained-message quirks (issue 23): a retained lock set
before the agent starts is in force on mosquitto and on RabbitMQ's MQTT plugin, which sends retained
messages only to exact-topic subscriptions. Where a lock cannot be known (an asset named only by a
pattern, on RabbitMQ), the agent writes nothing to it and raises an alarm."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from qxedge.agent.pipeline import Agent
from qxedge.agent.safety import Proposal
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing import Watcher, edge_config, wait_until
from qxedge.testing.brokers import RabbitNode

pytestmark = pytest.mark.integration
SITE = "demo"


@pytest.fixture(params=["mosquitto", "rabbitmq"])
def plant_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "rabbitmq":
        node: RabbitNode = request.getfixturevalue("rabbit")
        yield node.mqtt_url
        return
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker.url


def proposal(asset: str) -> Proposal:
    now = time.time()
    return Proposal(asset, 0.7, "topic:test", now, now)


async def test_a_retained_lock_set_before_the_agent_starts_is_in_force(plant_url: str) -> None:
    site = f"locks-{time.monotonic_ns()}"  # RabbitMQ keeps retained messages across tests
    watcher = Watcher(plant_url)
    watcher.publish(f"qx/v1/{site}/lock/line1/pump3", b"maintenance by ops", retain=True)
    cfg = edge_config(
        plant_url,
        site=site,
        safety__envelopes__0__assets='["line1/pump1", "line1/pump3"]',  # named exactly
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
    )
    agent, stop = Agent(cfg), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 30)
            gate = agent.gate
            assert gate is not None
            assert await wait_until(lambda: "line1/pump3" in agent.safety.locks, 20), "the lock never came"
            verdict = await gate.propose(proposal("line1/pump3"))
            stop.set()
    finally:
        watcher.publish(f"qx/v1/{site}/lock/line1/pump3", b"", retain=True)  # clears it
        watcher.close()
    assert verdict.status == "refused" and "maintenance by ops" in (verdict.reason or ""), verdict
    assert gate.verdicts["written"] == 0


async def test_an_asset_whose_lock_cannot_be_known_gets_no_write_and_an_alarm(rabbit: RabbitNode) -> None:
    """On RabbitMQ the edge config's pattern envelopes (line1/pump*) cannot be subscribed exactly: a
    retained lock there would be missed, so the agent refuses to write and says so."""
    site = f"patterns-{time.monotonic_ns()}"
    cfg = edge_config(rabbit.mqtt_url, site=site, safety__envelopes__0__interlocks="[]")
    watcher = Watcher(rabbit.mqtt_url, f"qx/v1/{site}/alarms")
    agent, stop = Agent(cfg), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 30)
            gate = agent.gate
            assert gate is not None
            verdicts = [await gate.propose(proposal("line1/pump2")) for _ in range(2)]
            assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) >= 1, 10)
            stop.set()
        alarms = [json.loads(m.payload) for m in watcher.messages]
    finally:
        watcher.close()
    assert all(v.status == "refused" and v.limit == "lock" for v in verdicts)
    assert "operator locks unknown for line1/pump2" in (verdicts[0].reason or "")
    assert [a["kind"] for a in alarms] == ["lock"] and alarms[0]["asset"] == "line1/pump2"  # said once
