"""An independent MQTT client for tests and benches: what a broker delivered, in the order it did."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from qxedge.connectors.mqtt import split_url


class Watcher:
    """An independent paho client (its own network thread) that records what it receives."""

    def __init__(self, url: str, *topics: str, protocol: MQTTProtocolVersion = paho.MQTTv311) -> None:
        """``protocol``: ``paho.MQTTv5`` to see MQTT 5 properties (``message.properties``)."""
        _, host, port = split_url(url)
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watcher-{time.monotonic_ns()}", protocol=protocol
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert self._subscribed.wait(10), "watcher: no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(10)

    def wait_for(self, predicate: Callable[[list[paho.MQTTMessage]], bool], timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def before(self, topic: str, marker: bytes, timeout: float = 30) -> list[paho.MQTTMessage]:
        """What arrived before ``marker`` on ``topic``, once it arrived. To show that nothing else comes,
        publish the marker after whatever must not arrive, on the same ordered channel (the same client
        and topic filter): the broker delivers in order, so whatever was sent before it is in the list."""
        arrived = self.wait_for(lambda ms: any(m.topic == topic and m.payload == marker for m in ms), timeout)
        assert arrived, f"watcher: marker {marker!r} on {topic} never arrived"
        with self._cond:
            end = next(i for i, m in enumerate(self.messages) if m.topic == topic and m.payload == marker)
            return self.messages[:end]

    def on(self, prefix: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def json_on(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
