"""QoS 1 acknowledgements by the client (``connectors/mqtt/_client.py``): a message its consumer has
not made safe yet (``ack_after``) stays with the broker and comes again after a reconnect; a persistent
session's queue, arriving before the subscription is made again, waits for it instead of being
dropped as unroutable."""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import AckAfter, BrokerConfig, Message, MqttClient, PendingAcks
from qxedge.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mosquitto() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker


def publish(url: str, payloads: list[bytes], topic: str = "plant/l1/p1/temp") -> None:
    """Each payload at QoS 1, acknowledged by the broker, from a plain paho client."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="acks-publisher")
    client.connect(host, int(port))
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


async def session(url: str, got: list[Message], ack_after: AckAfter) -> MqttClient:
    """The persistent session ``acks-test`` (connected, ``plant/#`` subscribed after the connect)."""
    client = MqttClient(BrokerConfig(url=url, client_id="acks-test", persistent_session=True))
    await client.__aenter__()
    await client.subscribe("plant/#", 1, on_batch=got.extend, ack_after=ack_after)
    return client


async def test_unsafe_messages_come_again_and_safe_ones_do_not(mosquitto: EmbeddedBroker) -> None:
    held: list[PendingAcks] = []  # acknowledgements the consumer never gives: the data not safe
    got: list[Message] = []
    client = await session(mosquitto.url, got, held.append)
    try:
        publish(mosquitto.url, [b"1", b"2", b"3"])
        assert await wait_until(lambda: len(got) == 3, 10)
        assert held  # asked, never called
    finally:
        await client.__aexit__(None, None, None)

    # the same session again: the three come back (before the subscription is made: parked for it)
    again: list[Message] = []
    client = await session(mosquitto.url, again, lambda ack: ack())
    try:
        assert await wait_until(lambda: len(again) >= 3, 10), again
        assert sorted(p for _, p in again) == [b"1", b"2", b"3"]
        assert client.unroutable == 0
    finally:
        await client.__aexit__(None, None, None)

    # acknowledged this time: a third connection gets only what is new
    last: list[Message] = []
    client = await session(mosquitto.url, last, lambda ack: ack())
    try:
        publish(mosquitto.url, [b"new"])
        assert await wait_until(lambda: bool(last), 10)
        assert [p for _, p in last] == [b"new"]
    finally:
        await client.__aexit__(None, None, None)


async def test_queued_messages_wait_for_their_subscription(mosquitto: EmbeddedBroker) -> None:
    """Published while the persistent session was away: delivered right after the CONNACK, before the
    owner subscribes again; none is lost as unroutable."""
    got: list[Message] = []
    client = await session(mosquitto.url, got, lambda ack: ack())
    await client.__aexit__(None, None, None)
    publish(mosquitto.url, [str(i).encode() for i in range(50)])
    client = await session(mosquitto.url, got, lambda ack: ack())
    try:
        assert await wait_until(lambda: len(got) == 50, 10), len(got)
        assert [p for _, p in got] == [str(i).encode() for i in range(50)]  # in order
        assert client.unroutable == 0
    finally:
        await client.__aexit__(None, None, None)


async def test_resends_of_messages_safe_already_are_dropped(mosquitto: EmbeddedBroker) -> None:
    """Killed after the data was safe and before its PUBACK went out: the next run is told the keys kept
    with the data (``have_already``) and drops the broker's resends of them, acknowledging them; a key
    whose payload differs (the id reused for another message) does not drop it."""
    pending: list[PendingAcks] = []
    got: list[Message] = []
    client = await session(mosquitto.url, got, pending.append)
    try:
        publish(mosquitto.url, [b"1", b"2", b"3"])
        assert await wait_until(lambda: len(got) == 3, 10)
    finally:
        await client.__aexit__(None, None, None)  # their acknowledgements never sent
    keys = [key for acks in pending for key in acks.keys]
    assert len(keys) == 3
    (mid, crc), *safe = keys
    again: list[Message] = []
    client = MqttClient(BrokerConfig(url=mosquitto.url, client_id="acks-test", persistent_session=True))
    await client.__aenter__()
    try:
        client.have_already([(mid, crc ^ 1), *safe])  # the first one's payload "differs"
        await client.subscribe("plant/#", 1, on_batch=again.extend, ack_after=lambda acks: acks())
        publish(mosquitto.url, [b"new"])
        assert await wait_until(lambda: [p for _, p in again][-1:] == [b"new"], 10), again
        assert sorted(p for _, p in again) == [b"1", b"new"]
        assert client.resent_dropped == 2
    finally:
        await client.__aexit__(None, None, None)
    last: list[Message] = []
    client = await session(mosquitto.url, last, lambda acks: acks())
    try:
        publish(mosquitto.url, [b"last"])
        assert await wait_until(lambda: bool(last), 10)
        assert [p for _, p in last] == [b"last"]  # the dropped ones were acknowledged
    finally:
        await client.__aexit__(None, None, None)
