"""Operator locks (``qx/v1/{site}/lock/{asset}``): the exact payloads that unlock, strict topics, and
a truthful reason while locks may be missed; strict proposal topics too."""

from __future__ import annotations

import time

import pytest

from qxedge.agent.gate import SetpointGate, inputs_unknown, lock_payload
from qxedge.agent.safety import Envelope, Proposal, Safety, SafetyConfig
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.testing import Watcher, wait_until
from tests.unit.agent.test_safety import FakeAudit, FakeMqtt

LOCK = "qx/v1/site/lock/"
UNLOCKS = [b"", b"unlocked", b"false", b"0", b"  Unlocked\n", b"FALSE", b'{"locked": false}', b" false "]
LOCKS = [
    b"unlock",  # not one of the documented forms: an unclear message locks
    b"off",  # may mean "switch it off": not an unlock
    b"no",
    b"j.kim: bearing inspection",
    b"0.0",
    b"unlocked please",
    b'{"locked": "false"}',
    b'{"locked": 0}',
    b"[false]",
    b"{not json",
    b"\xff\xfe",
    b"true",
]


@pytest.mark.parametrize("payload", UNLOCKS)
def test_exactly_the_documented_payloads_unlock(payload: bytes) -> None:
    assert lock_payload(payload)[0] is False


@pytest.mark.parametrize("payload", LOCKS)
def test_anything_else_locks(payload: bytes) -> None:
    assert lock_payload(payload)[0] is True


def gate() -> tuple[SetpointGate, FakeMqtt]:
    safety = Safety(SafetyConfig(envelopes=[Envelope(assets=["line1/*"], min=0, max=1)]), time.time() - 60)
    mqtt = FakeMqtt()
    return SetpointGate(safety, FakeAudit(), mqtt, "site"), mqtt  # type: ignore[arg-type]


def test_a_trailing_slash_still_locks_the_asset_and_raises_an_alarm() -> None:
    g, mqtt = gate()
    assert g.apply_lock(LOCK + "line1/fan1/", b"j.kim") == ("line1/fan1", True, "j.kim")
    assert g.safety.locks == {"line1/fan1": "j.kim"}
    (alarm,) = [doc for topic, doc in mqtt.sent if topic.endswith("/alarms")]
    assert alarm["asset"] == "line1/fan1" and "is not the lock topic of line1/fan1" in alarm["reason"]
    now = time.time()
    assert g.safety.evaluate(Proposal("line1/fan1", 0.5, "t", now, now), now).limit == "lock"


def test_each_lock_topic_holds_its_own_lock() -> None:
    """An unlock on the asset's topic does not clear a lock another topic holds (in any order of the
    retained messages), and one topic's unlock never unlocks another's lock."""
    g, _ = gate()
    g.apply_lock(LOCK + "line1/fan1//", b"maintenance")
    assert g.apply_lock(LOCK + "line1/fan1", b"") == (
        "line1/fan1",
        True,
        "still locked by another lock topic (maintenance)",
    )
    assert "line1/fan1" in g.safety.locks
    assert g.apply_lock(LOCK + "line1/fan1//", b"unlocked") == ("line1/fan1", False, "unlocked")
    assert g.safety.locks == {}


def test_a_topic_naming_no_asset_locks_nothing_and_raises_an_alarm() -> None:
    g, mqtt = gate()
    for topic in (LOCK, LOCK + "/", LOCK + "//"):
        assert g.apply_lock(topic, b"lock it all") is None
    assert g.safety.locks == {}
    alarms = [doc for topic, doc in mqtt.sent if topic.endswith("/alarms")]
    assert len(alarms) == 3 and all("names no asset" in a["reason"] for a in alarms)


@pytest.mark.integration
async def test_a_lock_backlog_is_reported_as_such(broker: EmbeddedBroker) -> None:
    publisher = Watcher(broker.url)
    try:
        publisher.publish("qx/v1/site/lock/line1/fan1", b"maintenance", retain=True)
        async with MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt:
            setpoints = await mqtt.subscribe("qx/v1/site/setpoints/#", qos=1)
            locks = await mqtt.subscribe("qx/v1/site/lock/#", qos=1)
            assert await wait_until(lambda: locks.backlog == 1)
            reason = inputs_unknown(mqtt, locks, setpoints)
            assert reason == "operator locks unknown: 1 lock messages received, not yet applied"
            locks.drain()
            assert inputs_unknown(mqtt, locks, setpoints) is None
            broker.stop()
            assert await wait_until(lambda: not mqtt.connected)
            assert "the plant broker is not reachable" in str(inputs_unknown(mqtt, locks, setpoints))
    finally:
        publisher.close()


async def test_a_proposal_topic_with_empty_levels_is_refused() -> None:
    """``line1/pump1/`` matches the envelope ``line1/*`` but is not line1/pump1: its rate and dwell
    limits would not apply. Such a topic is refused, never written."""
    g, mqtt = gate()
    for suffix in ("line1/pump1/", "line1//pump1", "/line1/pump1", ""):
        payload = f'{{"value": 0.5, "ts": {time.time()}}}'.encode()
        await g.on_proposal(f"qx/v1/site/proposals/{suffix}", payload)
    assert g.verdicts["refused"] == 4 and mqtt.sent == []
