"""The reading → setpoint hot path (bench/latency.py measures it): a publish leaves at once, a quick
evaluation of a small batch runs on the loop (anything else in a worker thread), and an evaluation
started by readings scores only the assets that got readings."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from qxedge.agent.decisions import Scored
from qxedge.agent.features import Features
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, CachedMatcher, MqttClient
from qxedge.connectors.plant import Evaluation
from qxedge.connectors.readings import ReadingBatch

from .conftest import Watcher, edge_config, wait_until

pytestmark = pytest.mark.integration


async def test_a_publish_is_on_the_wire_before_the_caller_yields(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/t/setpoints/#")
    async with MqttClient(BrokerConfig(url=broker.url), role="writer") as mqtt:
        assert mqtt.publish("qx/v1/t/setpoints/line1/pump1", b'{"value": 0.6}', qos=1)
        # the loop is blocked from here on: only a publish written at once can reach the watcher
        arrived = watcher.wait_for(lambda ms: len(ms) == 1, 10)
    assert arrived, "the setpoint waited for the next loop iteration"


async def test_what_the_kernel_does_not_take_at_once_is_sent_by_the_writer_callback(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("t/big")
    big = bytes(range(256)) * 65536  # 16 MiB: more than a socket takes in one send
    # a long keep-alive: no reconnect (which re-sends QoS 1 messages) can deliver it in the test's time
    async with MqttClient(BrokerConfig(url=broker.url, keepalive_s=3600), role="writer") as mqtt:
        assert mqtt.publish("t/big", big, qos=1)
        arrived = await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) == 1, 30)
        # and once all is sent the writer callback is gone (left, it would fire on every loop iteration)
        assert await wait_until(lambda: mqtt._write_watched is None, 10)
    assert arrived, "a message the kernel took in parts never reached the broker"
    assert watcher.messages[0].payload == big


async def test_on_batch_takes_messages_on_the_loop_and_a_failing_one_stops_nothing(
    broker: EmbeddedBroker,
) -> None:
    taken: list[tuple[list[tuple[str, bytes]], bool]] = []
    loop_thread = threading.get_ident()

    def take(batch: list[tuple[str, bytes]]) -> None:
        taken.append((batch, threading.get_ident() == loop_thread))
        if len(taken) == 1:
            raise RuntimeError("a bug in the consumer")

    async with (
        MqttClient(BrokerConfig(url=broker.url), role="reader") as reader,
        MqttClient(BrokerConfig(url=broker.url), role="writer") as writer,
    ):
        sub = await reader.subscribe("t/#", qos=1, on_batch=take)
        writer.publish("t/a", b"1", qos=1)
        assert await wait_until(lambda: len(taken) == 1, 10)
        for i in range(2, 6):
            writer.publish(f"t/{i}", str(i).encode(), qos=1)
        assert await wait_until(lambda: sum(len(b) for b, _ in taken) == 5, 10)
        assert sub.backlog == 0
    assert [m for batch, _ in taken for m in batch] == [
        ("t/a", b"1"),
        *((f"t/{i}", str(i).encode()) for i in range(2, 6)),
    ]
    assert all(on_loop for _, on_loop in taken)


async def test_a_read_burst_cut_short_by_a_raising_callback_still_delivers_what_it_read(
    broker: EmbeddedBroker,
) -> None:
    taken: list[tuple[str, bytes]] = []
    async with MqttClient(BrokerConfig(url=broker.url), role="reader") as reader:
        sub = await reader.subscribe("t/#", qos=0, on_batch=taken.extend)
        loop_read = reader._paho.loop_read

        def read_then_raise(max_packets: int = 1) -> object:  # e.g. on_connect raising after a message
            sub._buffer.append(("t/1", b"x"))
            raise RuntimeError("a callback raised inside paho")

        reader._paho.loop_read = read_then_raise  # type: ignore[method-assign]
        try:
            with pytest.raises(RuntimeError):
                reader._on_readable()
            assert taken == [("t/1", b"x")]  # not held until the next read
        finally:
            reader._paho.loop_read = loop_read  # type: ignore[method-assign]


def test_routing_a_message_leaves_no_garbage_cycle_and_follows_new_callbacks() -> None:
    matcher = CachedMatcher(limit=2)
    matcher["plant/#"] = "all"
    matcher["plant/+/p1/temp"] = "temp"
    assert sorted(matcher.iter_match("plant/l1/p1/temp")) == ["all", "temp"]
    gc.collect()
    gc.disable()
    try:  # paho's own matcher leaves a function <-> cell cycle behind for every call
        for _ in range(100):
            assert sorted(matcher.iter_match("plant/l1/p1/temp")) == ["all", "temp"]
        assert gc.collect() == 0
    finally:
        gc.enable()
    matcher["plant/l1/#"] = "line"  # a new callback: the answers kept so far are stale
    assert sorted(matcher.iter_match("plant/l1/p1/temp")) == ["all", "line", "temp"]
    del matcher["plant/#"]
    assert sorted(matcher.iter_match("plant/l1/p1/temp")) == ["line", "temp"]
    for topic in ("plant/l2/p1/temp", "plant/l1/p2/temp", "other"):  # more topics than the limit
        matcher.iter_match(topic)
    assert list(matcher.iter_match("plant/l2/p1/temp")) == ["temp"]
    assert list(matcher.iter_match("other")) == []
    gc.collect()
    gc.disable()
    try:  # nor does the first message on a topic
        for k in range(100):
            assert list(matcher.iter_match(f"plant/x{k}/p1/temp")) == ["temp"]
        assert gc.collect() == 0
    finally:
        gc.enable()
    shared = CachedMatcher()
    shared["plant/#"] = "all"
    for topic in ("plant/a/x", "plant/b/y"):
        assert list(shared.iter_match(topic)) == ["all"]
    assert shared._found["plant/a/x"] is shared._found["plant/b/y"], "topics with one callback share"


def test_the_first_answer_for_a_topic_is_pahos() -> None:
    rng = random.Random(7)
    words = ["a", "b", "$SYS", "", "c"]
    for _ in range(300):
        mine, pahos = CachedMatcher(), paho.MQTTMatcher()  # type: ignore[no-untyped-call]
        for n in range(rng.randint(1, 6)):
            levels = [rng.choice([*words, "+", "+"]) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.4:
                levels.append("#")
            mine["/".join(levels)] = pahos["/".join(levels)] = n
        for _ in range(20):
            topic = "/".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
            assert list(mine.iter_match(topic)) == list(pahos.iter_match(topic)), topic  # type: ignore[no-untyped-call]


class ThreadedAgent(Agent):
    """The real agent, recording on which thread each evaluation ran and what it scored."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.runs: list[tuple[int, bool, int]] = []  # (batch size, on the loop thread, assets scored)
        self.loop_thread = threading.get_ident()

    def evaluate(
        self, batch: ReadingBatch, now: float, only: set[str] | None = None
    ) -> tuple[list[Scored], Features]:
        scored, features = super().evaluate(batch, now, only)
        self.runs.append((len(batch), threading.get_ident() == self.loop_thread, len(scored)))
        return scored, features


def readings(assets: list[str], now: float, per_signal: int) -> ReadingBatch:
    """``per_signal`` readings of every signal the shipped model needs, for each asset, the last at
    ``now`` and the first 9.5 s before (the window's coverage rule wants 8 of its 10 s)."""
    batch = ReadingBatch()
    rng = np.random.default_rng(7)
    for asset in assets:
        for signal, level in (("temp", 70.0), ("power", 12.0), ("vibration", 2.0)):
            for i in range(per_signal):
                ts = now - 9.5 * (per_signal - 1 - i) / max(per_signal - 1, 1)
                batch.append(asset, signal, ts, level + rng.normal(0, 0.1))
    return batch


async def test_small_quick_evaluations_run_on_the_loop_and_big_ones_in_a_thread(
    broker: EmbeddedBroker,
) -> None:
    cfg = edge_config(broker.url, window__trigger="readings", window__every_s="3600")
    agent = ThreadedAgent(cfg)
    agent.inline_evaluation_s = 10.0  # any evaluation counts as quick: the test does not race the clock
    stop = asyncio.Event()

    async def evaluated(n: int) -> None:
        ran = await wait_until(lambda: len(agent.runs) >= n)
        assert ran, f"{n} evaluations expected, {len(agent.runs)} ran"

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        start = len(agent.runs)
        now = time.time()
        agent._accept(readings(["line1/pump1", "line1/pump2"], now, 10))  # 60 readings: the first is timed
        await evaluated(start + 1)
        agent._accept(readings(["line1/pump1"], now, 1))  # 3 readings, after a quick evaluation
        await evaluated(start + 2)
        agent._accept(readings(["line1/pump1"], now, 40))  # 120 readings: the Polars engine
        await evaluated(start + 3)
        stop.set()
    first, small, big = agent.runs[start : start + 3]
    assert first[:2] == (60, False), "an evaluation of unknown cost goes to a worker thread"
    assert small[:2] == (3, True), "a small batch after a quick evaluation runs on the loop"
    assert big[:2] == (120, False), "a batch beyond the incremental engine goes to a worker thread"
    assert first[2] == 2 and small[2] == 1, "an evaluation started by readings scores only their assets"


def test_the_connectors_upstream_hear_of_what_changed_with_all_that_is_known() -> None:
    """Sparkplug and telemetry hear of each asset that got readings or a score in an evaluation (not of
    every asset at every evaluation: O(signals) per reading), with every signal's newest reading and
    every model's newest score, and of an asset whose readings left the window."""
    seen: dict[str, dict[str, float]] = {}

    class Upstream:
        name = "upstream"

        def evaluated(self, evaluation: Evaluation) -> None:
            seen.update({asset: dict(metrics) for asset, metrics in evaluation.assets.items()})

    agent = Agent(edge_config("mqtt://127.0.0.1:1"))  # never connected
    agent.observers = [Upstream()]
    now = time.time()
    batch = readings(["line1/pump1", "line1/pump2"], now, 10)
    agent._observe(*agent.evaluate(batch, now), now, batch)
    assert sorted(seen) == ["line1/pump1", "line1/pump2"]
    assert {"temp", "power", "vibration"} < seen["line1/pump1"].keys()
    assert any(k.startswith("score/") for k in seen["line1/pump1"])
    seen.clear()
    one = ReadingBatch()
    one.append("line1/pump2", "temp", now + 0.1, 71.5)
    features = agent.evaluate(one, now + 0.1, {"line1/pump2"})[1]
    agent._latest[("line1/pump2", "anomaly")] = 0.25  # scored before: its newest score goes along
    agent._observe([], features, now + 0.1, one)
    assert list(seen) == ["line1/pump2"], "only the asset that got readings"
    assert seen["line1/pump2"]["temp"] == 71.5 and {"power", "vibration"} < seen["line1/pump2"].keys()
    assert seen["line1/pump2"]["score/anomaly"] == 0.25
    seen.clear()
    nothing = ReadingBatch()
    agent._observe(*agent.evaluate(nothing, now + 0.2), now + 0.2, nothing)  # every asset re-scored
    assert sorted(seen) == ["line1/pump1", "line1/pump2"]
    seen.clear()
    later = now + 3600  # every reading left the window: told without them; with nothing left, not told
    agent._observe(*agent.evaluate(nothing, later), later, nothing)
    assert seen == {"line1/pump2": {"score/anomaly": 0.25}} and not agent._signals


def test_an_evaluation_for_some_assets_scores_only_those() -> None:
    agent = Agent(edge_config("mqtt://127.0.0.1:1"))  # never connected
    now = time.time()
    every = agent.evaluate(readings(["line1/pump1", "line1/pump2", "line1/fan1"], now, 10), now)[0]
    assert sorted(s.asset for s in every) == ["line1/fan1", "line1/pump1", "line1/pump2"]
    some = agent.evaluate(readings(["line1/pump2"], now + 0.1, 1), now + 0.1, {"line1/pump2"})[0]
    assert [s.asset for s in some] == ["line1/pump2"]
    assert agent.evaluate(ReadingBatch(), now + 0.2, {"line2/other"})[0] == [], "no model covers it"
    assert len(agent.evaluate(ReadingBatch(), now + 0.3)[0]) == 3, "a full evaluation scores them all"


async def test_a_telemetry_record_takes_readings_and_features_of_one_evaluation() -> None:
    """Records go out a slice at a time with the loop running in between: an evaluation between two
    slices gives the later records its readings and its statistics, never one without the other."""
    from qxedge.agent.features import FeatureWindow
    from qxedge.agent.telemetry import SLICE, TelemetryConfig, TelemetryPublisher

    records: list[dict[str, Any]] = []

    class Box:
        def put(self, _stream: str, _topic: str, make: Callable[[int], bytes]) -> int:
            records.append(json.loads(make(len(records))))
            return len(records)

    window = FeatureWindow(10.0, ["last"], 1)
    telemetry = TelemetryPublisher("s", TelemetryConfig(), Box())  # type: ignore[arg-type]
    assets = [f"a{i:03d}" for i in range(2 * SLICE)]
    t0 = time.time()

    def evaluate(value: float, now: float) -> None:
        batch = ReadingBatch()
        for asset in assets:
            batch.append(asset, "x", now, value)
        features = window.update(batch, now)
        told = {asset: {"x": features.latest[(asset, "x")][1]} for asset in assets}
        telemetry.evaluated(Evaluation(now, told, features))

    evaluate(1.0, t0)
    later = asyncio.get_running_loop().call_soon(evaluate, 2.0, t0 + 1)  # runs between the slices
    await telemetry.publish(t0 + 2)
    assert later.cancelled() is False and len(records) == 2 * SLICE
    assert records[0]["readings"] == {"x": 1.0} and records[0]["features"] == {"x.last": 1.0}
    assert records[-1]["readings"] == {"x": 2.0} and records[-1]["features"] == {"x.last": 2.0}
    assert all(r["readings"]["x"] == r["features"]["x.last"] for r in records)
