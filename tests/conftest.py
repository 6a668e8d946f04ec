"""Shared fixtures: a private MQTT broker per test and an independent MQTT client to watch it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dimod
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.agent.config import EdgeConfig, load_config
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import split_url
from qxedge.hybrid.wire import unlabel_sample

ROOT = Path(__file__).resolve().parent.parent
EDGE_YAML = ROOT / "configs" / "edge.yaml"


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit logs and other state of every test go to its own folder, never to the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A mosquitto of our own on a free port (amqtt where mosquitto is not installed)."""
    with EmbeddedBroker() as b:
        yield b


def edge_config(broker_url: str, *, planning: bool = False, **env: str) -> EdgeConfig:
    """configs/edge.yaml pointed at ``broker_url``, with QXEDGE_-style overrides (keys without prefix);
    without the production day unless ``planning`` (its setpoints would mix with what a test checks)."""
    env = {"ops__port": "0", **env}  # a free port for the metrics endpoint of every agent under test
    cfg = load_config(
        EDGE_YAML, environ={f"QXEDGE_{k.upper()}": v for k, v in env.items()}, broker_url=broker_url
    )
    return cfg if planning else cfg.model_copy(update={"planning": None})


class Watcher:
    """An independent paho client (its own network thread) that records what it receives."""

    def __init__(self, url: str, *topics: str) -> None:
        _, host, port = split_url(url)
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{time.monotonic_ns()}")
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

    def on(self, prefix: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def json_on(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def watch(broker: EmbeddedBroker) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(*topics: str) -> Watcher:
        w = Watcher(broker.url, *topics)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def random_bqm(
    n: int, density: float, seed: int, vartype: dimod.Vartype = dimod.BINARY
) -> dimod.BinaryQuadraticModel:
    rng = np.random.default_rng(seed)
    return dimod.generators.gnp_random_bqm(
        n,
        density,
        vartype,
        random_state=seed,
        bias_generator=lambda size: rng.integers(-100, 101, size).astype(float),
    )


def optimum(bqm: dimod.BinaryQuadraticModel) -> float:
    return float(
        dimod.ExactSolver().sample(bqm).first.energy
    )  # dimod's brute force: an independent reference


def sample_energy(bqm: dimod.BinaryQuadraticModel, sample: dict[str, int]) -> float:
    return float(bqm.energy(unlabel_sample(bqm, sample)))


async def wait_until(predicate: Callable[[], bool], within_s: float = 20) -> bool:
    """Poll ``predicate`` every 10 ms; whether it held within ``within_s``."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
