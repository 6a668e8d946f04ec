"""The plant broker's ACL (configs/mosquitto/plant.acl) on a mosquitto of our own: only the agent's
user writes setpoints; the agent itself runs under it (every subscription it makes is granted)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient

from .conftest import ROOT, edge_config, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto"),
]
PASSWORDS = {"qxedge-agent": "agent-pw-1", "plant": "plant-pw-2", "operator": "operator-pw-3"}
SITE = "demo"


@pytest.fixture
def plant_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    passwd = tmp_path / "plant.passwd"
    for user, password in PASSWORDS.items():
        create = ["-c"] if not passwd.exists() else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwd), user, password], check=True)
    acl = ROOT / "configs" / "mosquitto" / "plant.acl"
    extra = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"  # the last setting wins
    with EmbeddedBroker(extra_config=extra, prefer="mosquitto") as broker:
        yield broker


def login(broker: EmbeddedBroker, user: str) -> BrokerConfig:
    return BrokerConfig(url=broker.url, username=user, password=PASSWORDS[user])


async def test_only_the_agent_writes_setpoints(plant_broker: EmbeddedBroker) -> None:
    """An operator's and the plant's own setpoints never reach the plant; the agent, running under its
    user, turns an operator's proposal into the setpoint the plant gets. The broker routes a message
    before it acknowledges it, and delivers to one subscriber in order: whatever the ACL let through
    would arrive before the agent's setpoint that follows it."""
    cfg = edge_config(
        plant_broker.url,
        broker__username="qxedge-agent",
        broker__password=PASSWORDS["qxedge-agent"],
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with (
        MqttClient(login(plant_broker, "plant"), role="plant") as plant,
        MqttClient(login(plant_broker, "operator"), role="operator") as operator,
        asyncio.TaskGroup() as tasks,
    ):
        applied = await plant.subscribe(f"qx/v1/{SITE}/setpoints/#", qos=1)
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        gate = agent.gate
        assert gate is not None
        for _ in range(300):  # the plant reports the value in force until the agent has it
            plant.publish("plant/line1/pump1/load_cap", json.dumps({"value": 1.0, "ts": time.time()}), qos=1)
            if ("line1/pump1", "load_cap") in agent.safety.latest:
                break
            await asyncio.sleep(0.1)
        assert await wait_until(lambda: gate.locks_unknown() is None)
        forged = json.dumps({"asset": "line1/pump1", "value": 0.05, "ts": time.time()})
        operator.publish(f"qx/v1/{SITE}/setpoints/line1/pump1", forged, qos=1)
        plant.publish(f"qx/v1/{SITE}/setpoints/line1/pump1", forged, qos=1)
        proposal = {"value": 0.9, "source": "hmi", "data_ts": time.time()}
        operator.publish(f"qx/v1/{SITE}/proposals/line1/pump1", json.dumps(proposal), qos=1)
        received = await asyncio.wait_for(applied.next_batch(), 30)
        stop.set()
    assert [json.loads(payload)["value"] for _, payload in received] == [0.9]
    assert gate.verdicts["written"] == 1 and gate.verdicts["foreign"] == 0


async def test_other_users_cannot_leave_a_retained_setpoint(plant_broker: EmbeddedBroker) -> None:
    """What a new subscriber (a restarted plant or agent) finds retained is the agent's only."""
    async with (
        MqttClient(login(plant_broker, "qxedge-agent"), role="agent") as agent,
        MqttClient(login(plant_broker, "operator"), role="operator") as operator,
        MqttClient(login(plant_broker, "plant"), role="plant") as plant,
    ):
        for stranger, asset in ((operator, "pump2"), (plant, "fan1")):
            stranger.publish(f"qx/v1/{SITE}/setpoints/line1/{asset}", b'{"value": 0.05}', qos=1, retain=True)
        agent.publish(f"qx/v1/{SITE}/setpoints/line1/pump1", b'{"value": 0.9}', qos=1, retain=True)
        assert await wait_until(lambda: agent.outbox_depth + operator.outbox_depth + plant.outbox_depth == 0)
        watcher = await plant.subscribe(f"qx/v1/{SITE}/setpoints/#", qos=1)
        agent.publish(f"qx/v1/{SITE}/setpoints/end", b"{}", qos=1)  # after every retained one
        seen: list[tuple[str, bytes]] = []
        while not any(topic.endswith("/end") for topic, _ in seen):
            seen += await asyncio.wait_for(watcher.next_batch(), 10)
    assert seen == [
        (f"qx/v1/{SITE}/setpoints/line1/pump1", b'{"value": 0.9}'),
        (f"qx/v1/{SITE}/setpoints/end", b"{}"),
    ]
