"""Integration: the agent, the simulated plant and an independent client on a real broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.testing import EDGE_YAML, Watcher, edge_config, wait_until

pytestmark = pytest.mark.integration
SETPOINTS = "qx/v1/demo/setpoints/"


async def test_fault_drives_a_setpoint_seen_by_an_independent_client(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(broker.url, simulator__faults__0__at_s="1", simulator__faults__0__ramp_s="1")
    assert cfg.simulator is not None
    watcher = watch(SETPOINTS + "#")
    agent = Agent(cfg)
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    stop = asyncio.Event()
    async with plant, asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        simulation = tasks.create_task(plant.run())
        # derating 1.0 -> 0.6 at 0.2/s is ramped: 0.8, then 0.6
        seen = await asyncio.to_thread(
            watcher.wait_for, lambda ms: any(b'"value":0.6,' in m.payload for m in ms), 60
        )
        assert await wait_until(  # the plant received every setpoint sent (a third would fail below)
            lambda: plant.setpoints_applied + plant.setpoints_rejected >= len(watcher.on(SETPOINTS))
        )
        stop.set()
        simulation.cancel()
    assert seen, "no setpoint within 60 s of the fault"
    messages = watcher.on(SETPOINTS)
    assert {m.topic for m in messages} == {SETPOINTS + "line1/pump3"}
    steps = [json.loads(m.payload) for m in messages]
    assert [round(sp["value"], 6) for sp in steps] == [0.8, 0.6]
    assert steps[0]["provenance"]["verdict"] == "clamped" and steps[0]["provenance"]["limit"] == "rate 0.2/s"
    setpoint = steps[0]
    assert setpoint["asset"] == "line1/pump3"
    provenance = setpoint["provenance"]
    model = agent.models["anomaly"]
    assert provenance["model"] == "anomaly" and provenance["model_sha256"] == model.sha256
    assert provenance["provider"] == model.provider
    start, end = provenance["window"]
    assert 0 < end - start <= cfg.window.length_s and end <= setpoint["ts"]
    assert provenance["score"] > cfg.rules[0].above
    assert plant.setpoints_applied == 2 and plant.model.assets["line1/pump3"].cap == pytest.approx(0.6)
    assert agent.stats().deadletters == 0 and agent.stats().readings > 0 and agent.stats().inferences > 0


async def test_garbage_is_dead_lettered_and_valid_readings_around_it_are_kept(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(broker.url)
    watcher = watch("qx/v1/demo/deadletter")
    agent = Agent(cfg)
    stop = asyncio.Event()
    good = [
        ("plant/line9/m1/temp", b'{"ts": 1764086400.1, "value": 70.5}'),
        ("plant/line9/m1", b'{"values": {"temp": 70.7, "power": 12.0, "on": true}}'),
        ("plant/line9/m2/temp", b'{"ts": "2026-11-25T18:00:00+09:00", "value": 1}'),
    ]
    bad = [
        ("plant/line9/m1/temp", b"{not json"),
        ("plant/line9/m1/temp", b'{"value": NaN}'),
        ("plant/line9/m1/temp", b"\x89PNG\r\n\x1a\n\x00\xff"),
        ("plant/line9/m1/temp", b'{"value": "hot"}'),
        ("plant/line9/m1/temp", b'{"value": 1, "pad": "' + b"x" * 70_000 + b'"}'),
        ("plant/x", b'{"value": 1}'),
    ]
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        for i in range(len(bad)):
            await asyncio.to_thread(watcher.publish, *good[i % len(good)])
            await asyncio.to_thread(watcher.publish, *bad[i])
        await asyncio.to_thread(watcher.publish, *good[0])
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) >= len(bad), 30)
        assert await wait_until(lambda: agent.stats().messages >= 2 * len(bad) + 1)
        stop.set()
    letters = watcher.json_on("qx/v1/demo/deadletter")
    reasons = [d["reason"] for d in letters]
    assert len(letters) == len(bad) == agent.stats().deadletters
    assert "not valid JSON" in reasons[0] and "not a finite number" in reasons[1]
    assert "not valid UTF-8" in reasons[2] and "got str" in reasons[3]
    assert "exceeds the limit" in reasons[4] and "topic does not match" in reasons[5]
    assert letters[2]["encoding"] == "base64" and base64.b64decode(letters[2]["payload"]) == bad[2][1]
    assert letters[0]["payload"] == "{not json" and letters[0]["topic"] == "plant/line9/m1/temp"
    assert letters[4]["bytes"] == len(bad[4][1])
    # 6 good messages cycle through good[0..2] (1 + 3 + 1 readings) and one more good[0] at the end
    assert agent.stats().readings == 2 * (1 + 3 + 1) + 1
    assert agent.stats().messages == 2 * len(bad) + 1


def _agent_process(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qxedge.agent.cli", "run", "--config", str(EDGE_YAML), "--broker", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "QXEDGE_SITE": "state-test", "QXEDGE_OPS__PORT": "0"},
    )


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_agent_state_is_retained_online_then_offline(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], how: str
) -> None:
    """`qxedge run`: retained online; offline on a graceful stop, and as the MQTT will on kill -9."""
    watcher = watch("qx/v1/state-test/agent/state")
    proc = _agent_process(broker.url)
    try:
        assert watcher.wait_for(lambda ms: [m.payload for m in ms] == [b"online"], 30)
        proc.send_signal(getattr(signal, how))
        assert proc.wait(30) == (0 if how == "SIGTERM" else -signal.SIGKILL)
        assert watcher.wait_for(lambda ms: [m.payload for m in ms] == [b"online", b"offline"], 30)
    finally:
        proc.kill()
        proc.wait()
    late = watch("qx/v1/state-test/agent/state")  # a newcomer gets the retained state
    assert late.wait_for(lambda ms: len(ms) == 1, 10) and late.messages[0].retain
    assert late.messages[0].payload == b"offline"


async def test_the_retained_offline_gets_out_behind_a_full_in_flight_window(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """paho holds QoS 1 messages beyond its in-flight window (20) until earlier ones are acknowledged,
    and a DISCONNECT queued then goes out before them: the agent's last ``offline`` was lost on a
    graceful stop under load. ``publish_acked`` returns once the broker has it."""
    async with MqttClient(BrokerConfig(url=broker.url), role="t") as mqtt:
        for _ in range(500):
            mqtt.publish("t/flood", b"x" * 1000, qos=1)
        assert await mqtt.publish_acked("t/state", b"offline", retain=True)
    late = watch("t/state")
    assert await asyncio.to_thread(late.wait_for, lambda ms: len(ms) == 1, 10)
    assert late.messages[0].payload == b"offline"


async def test_simulator_takes_fault_commands(broker: EmbeddedBroker, watch: Callable[..., Watcher]) -> None:
    cfg = edge_config(broker.url, simulator__faults="[]")
    assert cfg.simulator is not None
    commander = watch()
    async with SimulatedPlant(cfg.simulator, cfg.broker, cfg.site) as plant:
        run = asyncio.create_task(plant.run())
        topic = "qx/v1/demo/simulator/fault"
        for bad in (b"{}", b'{"asset": "nope", "kind": "bearing"}', b'{"asset": "pump1", "kind": "melt"}'):
            await asyncio.to_thread(commander.publish, topic, bad)
        await asyncio.to_thread(
            commander.publish, topic, b'{"asset": "pump1", "kind": "overheat", "ramp_s": 2}'
        )
        assert await wait_until(lambda: bool(plant.model.assets["line1/pump1"].faults))
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    faults = plant.model.assets["line1/pump1"].faults
    assert [(f.kind, f.ramp_s) for f in faults] == [("overheat", 2.0)]
    assert all(not s.faults for name, s in plant.model.assets.items() if name != "line1/pump1")
