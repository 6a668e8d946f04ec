"""Fault tests with real processes: mosquitto killed with SIGKILL and restarted, the agent killed with
SIGKILL and restarted (``qxedge run`` as a child process), every solver worker down, the outbox's disk
full, a subscriber slower than the stream. Each test counts telemetry sequence numbers upstream and
prints what was sent, received, duplicated and lost. Longer runs: ``bench/faults.py``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.connectors.broker_check import check_mosquitto_conf
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient, split_url
from qxedge.connectors.outbox import Outbox, OutboxConfig
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.testing import random_bqm, wait_until
from qxedge.testing.faults import (
    CONFIRM,
    TELEMETRY,
    Plant,
    SeqCounter,
    agent_config,
    broker_saved,
    start_agent,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def persistent_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(persistence=True) as b:
        yield b


def fast(url: str) -> BrokerConfig:
    return BrokerConfig(url=url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)


MARKER = 1_000_000  # a sequence number past any a test sends


def make(seq: int) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * 200}).encode()


async def until(predicate: Callable[[], bool], within: float = 30) -> bool:
    return await wait_until(predicate, within)


async def test_broker_kill9_mid_stream_loses_nothing(
    persistent_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker = persistent_broker
    counter = SeqCounter(broker.url)
    assert broker_saved(broker, time.time()), "mosquitto did not save the subscriber's session"
    sent = 0
    async with (
        MqttClient(fast(broker.url), role="uplink-t") as mqtt,
        Outbox(tmp_path / "outbox.sqlite", OutboxConfig(), mqtt) as outbox,
    ):

        async def stream(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                assert outbox.put("telemetry", TELEMETRY, make) == sent
                sent += 1
                await asyncio.sleep(0.002)

        await stream(300)
        broker.kill()
        assert await until(lambda: not mqtt.connected)
        await stream(300)  # while the broker is down: into the outbox
        stored = outbox.depth + outbox.pending
        assert stored > 0
        broker.start()
        await stream(300)
        assert await until(lambda: mqtt.connected)
        assert await until(lambda: outbox.depth == 0 and outbox.pending == 0)
        assert outbox.stats["acked"] >= sent
    try:
        assert counter.wait_for(lambda seqs: all(s in seqs for s in range(sent)))
        _, _, lost = counter.report("broker kill -9", sent)
        assert lost == 0 and max(counter.seqs) == sent - 1
    finally:
        counter.close()


@pytest.mark.parametrize("confirm", ["broker", "upstream"])
async def test_broker_crash_loses_what_it_acknowledged_unless_confirmed_upstream(
    confirm: str, tmp_path: Path
) -> None:
    """mosquitto acknowledges a QoS 1 message before it saves it: killed with SIGKILL before its next
    autosave, it comes back without the messages queued for an offline subscriber. With the broker's
    PUBACK as the end (``confirm: broker``) they are lost; ``confirm: upstream`` sends them again."""
    with EmbeddedBroker(persistence=True, extra_config="autosave_interval 3600\n") as broker:
        SeqCounter(broker.url).close()  # a persistent session, then offline: the broker queues for it
        broker.stop()  # a clean stop saves the session (and nothing else happens until the kill)
        broker.start()
        config = OutboxConfig(confirm=confirm)  # type: ignore[arg-type]
        async with (
            MqttClient(fast(broker.url), role="uplink-t") as mqtt,
            Outbox(tmp_path / "outbox.sqlite", config, mqtt, confirm_topic=CONFIRM) as outbox,
        ):
            for seq in range(50):
                assert outbox.put("telemetry", TELEMETRY, make) == seq
            assert await until(lambda: outbox.stats["acked"] == 50)  # the broker has all 50
            broker.kill()
            broker.start()
            counter = SeqCounter(broker.url, confirm_topic=CONFIRM)
            try:
                if confirm == "upstream":
                    assert await until(lambda: outbox.depth == 0 and outbox.stats["confirmed"] >= 50)
                    assert outbox.stats["resent"] == 50
                else:
                    assert await until(lambda: outbox.depth == 0)
                    # the counter's session is back: the broker sent what it still had before this marker
                    mqtt.publish(TELEMETRY, make(MARKER), qos=1)
                    assert await asyncio.to_thread(counter.wait_for, lambda seqs: MARKER in seqs)
                _, _, lost = counter.report(f"broker kill -9, confirm: {confirm}", 50)
            finally:
                counter.close()
    assert lost == (0 if confirm == "upstream" else 50)


async def test_a_record_confirmations_passed_over_is_sent_again(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    counter = SeqCounter(broker.url, confirm_topic=CONFIRM, skip_once=frozenset({7}))
    config = OutboxConfig(confirm="upstream", confirm_timeout_s=0.3)
    try:
        async with (
            MqttClient(fast(broker.url), role="uplink-t") as mqtt,
            Outbox(tmp_path / "outbox.sqlite", config, mqtt, confirm_topic=CONFIRM) as outbox,
        ):
            for _ in range(10):
                outbox.put("telemetry", TELEMETRY, make)
            # 7: acknowledged by the broker, never confirmed
            assert await until(lambda: outbox.stats["confirmed"] == 9 and outbox.depth == 1)
            for _ in range(10):  # later records, confirmed after the timeout: 7 was lost on the way
                outbox.put("telemetry", TELEMETRY, make)
                await asyncio.sleep(0.05)
            assert await until(lambda: outbox.depth == 0)
            assert outbox.stats["resent"] == 1 and outbox.stats["confirmed"] == 20
            mqtt.publish(CONFIRM, b'{"stream": "telemetry", "seqs": [[5, 2]]}', qos=1)
            mqtt.publish(CONFIRM, b"not json", qos=1)
            assert await until(lambda: outbox.stats["bad_confirmations"] == 2)
        assert counter.seqs[7] == 2 and all(counter.seqs[s] == 1 for s in range(20) if s != 7)
    finally:
        counter.close()


def test_agent_kill9_mid_stream_loses_nothing_it_accepted(broker: EmbeddedBroker, tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, broker.url)
    counter = SeqCounter(broker.url)
    plant = Plant(broker.url)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        assert counter.wait_for(lambda seqs: len(seqs) >= 100), (tmp_path / "agent.log").read_text()[-2000:]
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        before = max(counter.seqs)
        with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
            (on_disk,) = db.execute("SELECT next_seq FROM streams WHERE name = 'telemetry'").fetchone()
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert on_disk > before  # the numbering resumes from the disk, not from what was received
        agent = start_agent(cfg, tmp_path / "agent.log")
        assert counter.wait_for(lambda seqs: max(seqs) >= on_disk + 100), (
            tmp_path / "agent.log"
        ).read_text()[-2000:]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        sent = max(counter.seqs) + 1
        _, _, lost = counter.report("agent kill -9", sent)
        assert lost == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        plant.close()
        counter.close()


async def test_solver_workers_down_every_decision_by_fallback_in_time(broker: EmbeddedBroker) -> None:
    """No worker subscribed at all: every job is answered locally, before its deadline."""
    config = OffloadConfig(deadline_ms=1500, fallback_ms=1000, solver="auto", fallback="tabu")
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent-t") as mqtt,
        OffloadClient(mqtt, "t", config) as offload,
    ):
        problems = [random_bqm(24, 0.3, seed) for seed in range(8)]
        decisions = await asyncio.gather(*(offload.solve(bqm) for bqm in problems))
    print(
        "workers down: jobs",
        len(decisions),
        "fallbacks",
        offload.stats["fallbacks"],
        "slowest",
        f"{max(d.seconds for d in decisions):.3f} s",
    )
    assert [d.source for d in decisions] == ["fallback"] * len(problems)
    assert all(d.seconds < config.deadline_ms / 1000 for d in decisions)
    assert all(
        bqm.energy(d.sample) == pytest.approx(d.energy) for bqm, d in zip(problems, decisions, strict=True)
    )


@pytest.fixture(params=["tmpfs", "max_page_count"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int | None, str]]:
    """A filesystem of 256 KiB (a tmpfs, needs root) or the same cap as SQLite's max_page_count."""
    if request.param == "max_page_count":
        yield tmp_path, 64, "max_page_count"
        return
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk, None, "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_outbox_disk_full_then_recovers(
    persistent_broker: EmbeddedBroker, small_disk: tuple[Path, int | None, str]
) -> None:
    broker = persistent_broker
    disk, max_pages, kind = small_disk
    counter = SeqCounter(broker.url)
    assert broker_saved(broker, time.time())
    path = disk / "outbox.sqlite"
    config = OutboxConfig(max_pending=100, flush_ms=5)
    async with (
        MqttClient(fast(broker.url), role="uplink-t") as mqtt,
        Outbox(path, config, mqtt, max_pages=max_pages) as outbox,
    ):
        broker.kill()  # nothing leaves: the records pile up on the small disk
        assert await until(lambda: not mqtt.connected)
        for _ in range(5000):
            outbox.put("telemetry", TELEMETRY, make)
            await asyncio.sleep(0.001)
            if outbox.stats["refused"] and outbox.error is not None:
                break
            if outbox.pending >= config.max_pending:  # the writer behind (a busy machine), the disk not full
                assert await until(lambda: outbox.pending < config.max_pending or outbox.error is not None)
        print(f"disk full ({kind}): {outbox.error}; {outbox.stats}")
        assert outbox.error is not None and "full" in outbox.error
        assert outbox.stats["refused"] > 0 and outbox.pending == config.max_pending
        accepted = outbox.stats["accepted"]
        if kind == "tmpfs":  # space returns; with max_page_count, the acknowledged records make room
            await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,size=8m", str(disk)], check=True)
        broker.start()
        assert await until(lambda: outbox.depth == 0 and outbox.pending == 0, 60), outbox.stats
        assert outbox.error is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    try:
        assert counter.wait_for(lambda seqs: all(s in seqs for s in range(accepted)))
        _, _, lost = counter.report(f"disk full ({kind})", accepted)
        assert lost == 0
    finally:
        counter.close()


@pytest.mark.parametrize(("queued", "complete"), [(1000, False), (100_000, True)])
def test_slow_subscriber_and_the_broker_queue_limit(queued: int, complete: bool) -> None:
    """mosquitto's default max_queued_messages (1000) drops QoS 1 messages for a lagging subscriber
    without a word; with the setting qxedge documents, nothing is lost."""
    with EmbeddedBroker(extra_config=f"max_queued_messages {queued}\n") as broker:
        counter = SeqCounter(broker.url, client_id="slow")
        counter.client.loop_stop()  # the subscriber stops reading: the broker queues for it
        counter.client.disconnect()
        _, host, port = split_url(broker.url)
        pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="fast")
        pub.connect(host, port)
        pub.loop_start()
        n = 3000
        infos = [pub.publish(TELEMETRY, json.dumps({"seq": i}), 1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
        pub.loop_stop()
        pub.disconnect()
        counter.client.reconnect()
        counter.client.loop_start()
        try:
            if complete:
                assert counter.wait_for(lambda seqs: len(seqs) == n)
            else:  # the broker holds no more than it queued: wait until the stream stops growing
                last = -1
                while len(counter.seqs) != last:
                    last = len(counter.seqs)
                    counter.wait_for(lambda seqs, last=last: len(seqs) > last, 2)  # type: ignore[misc]
            _, _, lost = counter.report(f"slow subscriber, max_queued_messages {queued}", n)
            assert (lost == 0) == complete
        finally:
            counter.close()
    problems = check_mosquitto_conf(f"persistence true\nmax_queued_messages {queued}\n")
    assert bool(problems) != complete


async def test_setpoints_are_never_sent_late_after_an_outage(persistent_broker: EmbeddedBroker) -> None:
    broker = persistent_broker
    counter = SeqCounter(broker.url, topic="qx/v1/t/#")
    assert broker_saved(broker, time.time())
    async with MqttClient(fast(broker.url), role="agent-t", fresh_only=("qx/v1/t/setpoints/#",)) as mqtt:
        broker.kill()
        assert await until(lambda: not mqtt.connected)
        assert not mqtt.publish("qx/v1/t/setpoints/pump1", json.dumps({"seq": 0}), qos=1)
        assert mqtt.publish("qx/v1/t/telemetry", json.dumps({"seq": 1}), qos=1)  # queued: not a setpoint
        assert mqtt.stale_dropped == 1
        broker.start()
        assert await until(lambda: mqtt.connected)
        assert mqtt.publish("qx/v1/t/setpoints/pump1", json.dumps({"seq": 2}), qos=1)  # fresh: sent
    try:
        assert counter.wait_for(lambda seqs: 1 in seqs and 2 in seqs)
        assert 0 not in counter.seqs
    finally:
        counter.close()
