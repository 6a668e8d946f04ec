"""MQTT 5 as an option (``broker.protocol: 5``, issue 23): a job carries its deadline as message expiry and
its reply_to / job_id as response topic / correlation data, the worker's result the correlation data, and
a setpoint the configured expiry. MQTT 3.1.1 stays the default."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import Watcher, edge_config, random_bqm, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mosquitto() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker


def test_protocol_is_3_1_1_unless_5_is_asked_for() -> None:
    assert BrokerConfig().protocol == "3.1.1"
    assert BrokerConfig.model_validate({"protocol": 5}).protocol == "5"
    with pytest.raises(ValueError, match=r"'3\.1\.1' or '5'"):
        BrokerConfig.model_validate({"protocol": 4})


async def test_jobs_and_results_carry_the_mqtt5_request_response_fields(mosquitto: EmbeddedBroker) -> None:
    v5 = BrokerConfig(url=mosquitto.url, protocol="5")
    watcher = Watcher(mosquitto.url, "qx/v1/gumi/jobs", "qx/v1/gumi/results/+", protocol=paho.MQTTv5)
    stop = asyncio.Event()
    worker = SolverService(DataCenterConfig(broker=v5, solvers=SolversConfig(workers=0, auto=["exact"])))
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.run(stop))
            await asyncio.wait_for(worker.ready.wait(), 30)
            async with (
                MqttClient(v5, role="agent-gumi") as mqtt,
                OffloadClient(mqtt, "gumi", OffloadConfig(deadline_ms=7_000, solver="exact")) as offload,
            ):
                decision = await offload.solve(random_bqm(6, 0.5, seed=3))
            stop.set()
        assert decision.source == "datacenter"
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) >= 2, 10)
        job, result = watcher.on("qx/v1/gumi/jobs")[0], watcher.on("qx/v1/gumi/results/")[0]
    finally:
        watcher.close()
    sent = json.loads(job.payload)
    assert job.properties.ResponseTopic == sent["reply_to"]
    assert job.properties.CorrelationData == sent["job_id"].encode()
    assert 1 <= job.properties.MessageExpiryInterval <= 7  # the broker counts down what is left
    assert result.properties.CorrelationData == sent["job_id"].encode()


async def test_a_setpoint_expires_as_configured(mosquitto: EmbeddedBroker) -> None:
    cfg = edge_config(
        mosquitto.url,
        broker__protocol="5",
        safety__setpoint_expiry_s="30",
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
    )
    watcher = Watcher(mosquitto.url, "qx/v1/demo/setpoints/#", protocol=paho.MQTTv5)
    agent, stop = Agent(cfg), asyncio.Event()
    try:
        async with (
            MqttClient(BrokerConfig(url=mosquitto.url), role="plant") as plant,
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 30)
            gate = agent.gate
            assert gate is not None

            def reported() -> bool:
                plant.publish(
                    "plant/line1/pump1/load_cap", json.dumps({"value": 1.0, "ts": time.time()}), qos=1
                )
                return ("line1/pump1", "load_cap") in agent.safety.latest and gate.locks_unknown() is None

            assert await wait_until(reported, 30, every_s=0.1)
            proposal = {"value": 0.9, "source": "hmi", "data_ts": time.time()}
            plant.publish("qx/v1/demo/proposals/line1/pump1", json.dumps(proposal), qos=1)
            assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) >= 1, 20)
            stop.set()
        setpoint = watcher.messages[0]
    finally:
        watcher.close()
    assert json.loads(setpoint.payload)["value"] == 0.9
    assert 1 <= setpoint.properties.MessageExpiryInterval <= 30
