"""Harnesses for fault runs with real processes, shared by tests/integration/test_reliability.py,
bench/faults.py and bench/soak.py: the agent as a child process (``qxedge run``) on a small config of site
``t``, a plant publishing readings from a thread, and the upstream side counting (and confirming)
telemetry records by their sequence number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.connectors.confirm import Receipts
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import split_url

TELEMETRY = "qx/v1/t/telemetry"  # site t's telemetry, as agent_config() streams it
CONFIRM = "qx/v1/t/confirm"  # where the upstream side confirms it (``outbox: {confirm: upstream}``)


class SeqCounter:
    """The upstream side: a persistent-session QoS 1 subscriber counting sequence numbers; with
    ``confirm_topic`` it confirms what it received there every 0.1 s (``connectors/confirm.py``)."""

    def __init__(
        self,
        url: str,
        topic: str = TELEMETRY,
        client_id: str = "upstream-counter",
        confirm_topic: str | None = None,
        skip_once: frozenset[int] = frozenset(),
    ) -> None:
        """``skip_once``: sequence numbers not confirmed the first time they arrive."""
        _, host, port = split_url(url)
        self.topic = topic
        self.seqs: Counter[int] = Counter()
        self.receipts = Receipts()
        self.skip_once = set(skip_once)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()
        self._confirmer = None
        if confirm_topic is not None:
            self._confirmer = threading.Thread(target=self._confirm, args=(confirm_topic,), daemon=True)
            self._confirmer.start()
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        seq = json.loads(msg.payload)["seq"]
        with self._cond:
            self.seqs[seq] += 1
            if seq in self.skip_once:
                self.skip_once.discard(seq)
            else:
                self.receipts.note("telemetry", seq)
            self._cond.notify_all()

    def _confirm(self, topic: str) -> None:
        while not self._stop.wait(0.1):
            with self._cond:
                confirmations = self.receipts.take()
            for payload in confirmations:
                self.client.publish(topic, payload, qos=1)

    def wait_for(self, predicate: Callable[[Counter[int]], bool], timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.seqs):
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    return predicate(self.seqs)
            return True

    def report(self, name: str, sent: int) -> tuple[int, int, int]:
        """(received, duplicated, lost) of sequence numbers 0 .. sent-1, printed."""
        with self._cond:
            received = sum(self.seqs.values())
            duplicated = sum(n - 1 for n in self.seqs.values() if n > 1)
            lost = sum(1 for s in range(sent) if s not in self.seqs)
        print(f"{name}: sent {sent}, received {received}, duplicated {duplicated}, lost {lost}")
        return received, duplicated, lost

    def close(self) -> None:
        self._stop.set()
        if self._confirmer is not None:
            self._confirmer.join()
        self.client.loop_stop()
        self.client.disconnect()


def broker_saved(broker: EmbeddedBroker, after: float, timeout: float = 10) -> bool:
    """Wait until mosquitto has saved its state (sessions) since ``after`` (autosave every second)."""
    db = broker.dir / "mosquitto.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists() and db.stat().st_mtime > after:
            return True
        time.sleep(0.05)
    return False


def agent_config(tmp_path: Path, url: str, reconnect_max_s: float = 0.5, confirm: str = "broker") -> Path:
    """An agent config of site ``t`` in ``tmp_path``: readings of ``plant/{line}/{asset}/{signal}``,
    telemetry every 20 ms through a disk outbox (``outbox.sqlite``) with ``confirm``, no model."""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"""site: t
ops: {{port: 0}}
broker: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: {reconnect_max_s}, keepalive_s: 5}}
connectors:
  - mqtt: {{topics: ["plant/#"], topic_pattern: "plant/{{line}}/{{asset}}/{{signal}}"}}
window: {{length_s: 2, every_s: 0.1, stats: [mean, max], min_samples: 1, min_coverage: 0}}
telemetry: {{every_s: 0.02}}
outbox: {{path: outbox.sqlite, drain_timeout_s: 2, confirm: {confirm}}}
safety: {{audit: {{path: {tmp_path / "audit.sqlite"}}}}}
"""
    )
    return cfg


class Plant:
    """Readings of two assets (``plant/l1/pump1/temp``, ``pump2``), ten a second each, from a thread."""

    def __init__(self, url: str) -> None:
        _, host, port = split_url(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="plant")
        self.client.connect(host, port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for asset in ("pump1", "pump2"):
                doc = json.dumps({"ts": time.time(), "value": 1.0})
                self.client.publish(f"plant/l1/{asset}/temp", doc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


def start_agent(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    """``qxedge run --config cfg`` as a child process (no ``QXEDGE_`` variables), its output appended to
    ``log``; the caller stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QXEDGE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qxedge.agent.cli", "run", "--config", str(cfg)],
            cwd=cfg.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
