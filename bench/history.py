"""History forwarding: readings/s end to end into the historian's Parquet and upstream bytes per
reading, against a raw paho forwarder of the same readings (one JSON message per reading, QoS 1).

    ./run bench history [--readings 60000] [--rounds 2] [--qos 0|1] [--quick] [--save [qos1]]

A C publisher (``mosquitto_pub -l``, ~110-byte JSON readings, QoS ``--qos``) floods a private mosquitto
with the same readings for both, in alternating rounds:

- raw: a paho client subscribes to the plant's topics (QoS ``--qos``) and publishes every reading
  again upstream at QoS 1 (in-flight window 100, like the outbox's); a subscriber in another process
  (QoS 1) counts them;
- agent: ``qxedge run``'s pipeline in this process (the shipped config: windows, the ONNX model) with
  history every ``--every-s`` through its disk outbox (``--qos 1``: the plant subscription at QoS 1 on a
  persistent session, each reading acknowledged to the plant broker once the history journal has it on
  disk, as a plant that must lose nothing runs it; the broker's in-flight window is mosquitto's
  default); ``qxedge historian`` in another process writes the Parquet and confirms; the round ends
  when the historian's ledger holds every reading.

Readings/s is the readings over the time from the flood's start to the last one arriving (the
sink's count, the historian's ledger); upstream bytes are MQTT PUBLISH packets (fixed header, topic,
packet id, payload) per reading. The raw forwarder queues what it cannot send yet without bound (it
cannot block paho's callback); past 65,535 queued messages paho reuses packet ids and readings are lost
(a third of a 100,000-reading flood): the default flood stays below that. Targets: at least the raw
forwarder's readings/s and at most 1/5 of its bytes per reading. A first table measures the batch
formats (Arrow IPC vs Parquet, both zstd) on the flood's readings: why the wire carries Arrow IPC.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.agent.config import load_config
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.history_wire import frame
from qxedge.connectors.mqtt import split_url
from qxedge.testing import wait_until, wait_until_sync
from qxedge.testing.bench_results import Results, add_save_option

ROOT = Path(__file__).resolve().parent.parent
ASSETS = 8
SIGNALS = ("temp", "power", "vibration", "load_cap")


def packet_bytes(topic: str, payload: int) -> int:
    """An MQTT 3.1.1 QoS 1 PUBLISH: fixed header (1 + remaining length), topic, packet id, payload."""
    rest = 2 + len(topic.encode()) + 2 + payload
    length = 1 if rest < 128 else 2 if rest < 16_384 else 3 if rest < 2_097_152 else 4
    return 1 + length + rest


def make_flood(folder: Path, readings: int) -> list[tuple[str, Path, int]]:
    """One file per topic (asset x signal), one JSON reading per line → (topic, file, lines)."""
    out = []
    per = readings // (ASSETS * len(SIGNALS))
    t0 = time.time()
    rng = random.Random(7)
    for a in range(ASSETS):
        for k, signal in enumerate(SIGNALS):
            topic = f"plant/line1/pump{a}/{signal}"
            path = folder / f"flood-{a}-{signal}.txt"
            level = 50.0 + 10 * k
            with path.open("w") as f:
                for i in range(per):
                    level += rng.gauss(0, 0.05)  # a drifting signal with sensor noise, 3 decimals
                    ts = t0 + i * 0.01 + rng.uniform(0, 0.002)  # 100 Hz, with jitter
                    doc = {"ts": round(ts, 6), "value": round(level + rng.gauss(0, 0.2), 3)}
                    doc |= {"unit": "degC", "quality": "good", "gateway": "bench-gw-01"}
                    f.write(json.dumps(doc) + "\n")
            out.append((topic, path, per))
    return out


def flood(url: str, files: list[tuple[str, Path, int]], qos: int) -> list[subprocess.Popen[bytes]]:
    _, host, port = split_url(url)
    cmd = ["mosquitto_pub", "-h", host, "-p", str(port), "-q", str(qos), "-l"]
    return [subprocess.Popen([*cmd, "-t", topic], stdin=path.open("rb")) for topic, path, _ in files]


def formats(files: list[tuple[str, Path, int]], n: int, results: Results) -> None:
    """Arrow IPC vs Parquet (zstd) on ``n`` of the flood's readings."""
    assets, signals, ts, values = [], [], [], []
    for topic, path, _ in files:
        asset, signal = topic.split("/", 1)[1].rsplit("/", 1)
        for line in path.read_text().splitlines()[: n // len(files)]:
            doc = json.loads(line)
            assets.append(asset)
            signals.append(signal)
            ts.append(doc["ts"])
            values.append(doc["value"])
    df = frame(assets, signals, ts, values)
    table = results.table(
        f"batch formats on {df.height:,} of the flood's readings",
        ["format", "bytes/reading", "encode µs/reading", "decode µs/reading"],
    )
    writers = {
        "Arrow IPC stream, zstd": (
            lambda out: df.write_ipc_stream(out, compression="zstd"),
            lambda data: pl.read_ipc_stream(io.BytesIO(data)),
        ),
        "Parquet, zstd": (
            lambda out: df.write_parquet(out, compression="zstd"),
            lambda data: pl.read_parquet(io.BytesIO(data)),
        ),
    }
    for name, (write, read) in writers.items():
        best_w = best_r = float("inf")
        for _ in range(5):
            out = io.BytesIO()
            started = time.perf_counter()
            write(out)
            best_w = min(best_w, time.perf_counter() - started)
            started = time.perf_counter()
            read(out.getvalue())
            best_r = min(best_r, time.perf_counter() - started)
        size = len(out.getvalue())
        print(
            f"  {name}: {size / df.height:.2f} B/reading, encode {best_w * 1e6 / df.height:.3f} µs, "
            f"decode {best_r * 1e6 / df.height:.3f} µs per reading"
        )
        table.add(name, size / df.height, best_w * 1e6 / df.height, best_r * 1e6 / df.height)


def sink(url: str, topic: str, count: int) -> None:
    """(the --sink process) Count ``count`` QoS 1 messages; print 'ready', then the wall time of the last."""
    _, host, port = split_url(url)
    got = 0
    last = 0.0
    done = threading.Event()

    def on_message(_c: object, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal got, last
        got += 1
        last = time.time()
        if got == count:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sink-{os.getpid()}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: print("ready", flush=True)
    client.connect(host, port)
    client.subscribe(topic, 1)
    client.loop_start()
    while not done.wait(1.0):  # or until nothing came for 5 s (the forwarder lost some)
        if last and time.time() - last > 5:
            break
    print(f"done {last} {got}", flush=True)
    client.loop_stop()


def raw_round(
    url: str, files: list[tuple[str, Path, int]], readings: int, qos: int
) -> tuple[float, float, int]:
    """The raw paho forwarder → (readings/s arriving, upstream bytes per reading, readings lost)."""
    _, host, port = split_url(url)
    counter = subprocess.Popen(
        [sys.executable, __file__, "--sink", url, "up/#", str(readings)], stdout=subprocess.PIPE, text=True
    )
    assert counter.stdout is not None
    assert counter.stdout.readline().strip() == "ready"
    sent_bytes = 0
    subscribed = threading.Event()
    forwarder = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-forwarder")
    forwarder.max_inflight_messages_set(100)
    forwarder.max_queued_messages_set(0)

    forwarded = 0

    def on_message(client: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal sent_bytes, forwarded
        topic = "up/" + msg.topic
        client.publish(topic, msg.payload, qos=1)
        sent_bytes += packet_bytes(topic, len(msg.payload))
        forwarded += 1

    forwarder.on_message = on_message
    forwarder.on_subscribe = lambda *_: subscribed.set()
    forwarder.connect(host, port)
    forwarder.subscribe("plant/#", qos)
    forwarder.loop_start()
    assert subscribed.wait(10)
    started = time.time()
    pubs = flood(url, files, qos)
    line = counter.stdout.readline().split()
    for pub in pubs:
        pub.wait()
    counter.wait(30)
    forwarder.loop_stop()
    forwarder.disconnect()
    if not line or line[0] != "done" or not int(line[2]):
        raise SystemExit("raw: the sink got nothing")
    got = int(line[2])
    if got < readings:
        print(
            f"  raw: {readings - got} of {readings} readings never arrived upstream ({forwarded} forwarded)"
        )
    return got / (float(line[1]) - started), sent_bytes / max(1, forwarded), readings - got


def ledger_rows(root: Path) -> int:
    path = root / "_historian" / "ledger.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COALESCE(SUM(rows), 0) FROM batches").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def history_round(
    url: str, files: list[tuple[str, Path, int]], readings: int, work: Path, every_s: float, qos: int
) -> tuple[float, float]:
    """The agent's history into ``qxedge historian``'s Parquet → (readings/s, upstream bytes per reading)."""
    root = work / "parquet"
    hcfg = work / "historian.yaml"
    hcfg.write_text(f'broker: {{url: "{url}"}}\nroot: {root}\nflush_s: 0.2\n')
    log = work / "historian.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QXEDGE_")}
    with log.open("ab") as out:
        historian = subprocess.Popen(
            [sys.executable, "-m", "qxedge.agent.cli", "historian", "--config", str(hcfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        if not wait_until_sync(lambda: "writing" in log.read_text(), 60):
            raise SystemExit(f"the historian did not start:\n{log.read_text()[-2000:]}")
        return asyncio.run(agent_round(url, files, readings, work, every_s, qos))
    finally:
        historian.terminate()
        historian.wait(30)


async def agent_round(
    url: str, files: list[tuple[str, Path, int]], readings: int, work: Path, every_s: float, qos: int
) -> tuple[float, float]:
    root = work / "parquet"
    environ = {
        "QXEDGE_OPS__PORT": "0",
        "QXEDGE_OUTBOX__PATH": str(work / "outbox.sqlite"),
        "QXEDGE_HISTORY__EVERY_S": str(every_s),
        "QXEDGE_HISTORY__MAX_READINGS": "50000",
    }
    cfg = load_config(ROOT / "configs" / "edge.yaml", environ=environ, broker_url=url)
    update: dict[str, object] = {"planning": None, "telemetry": None}
    if qos:  # QoS 1 on a persistent session (one per round: it queues what the broker gets after it)
        session = {"persistent_session": True, "client_id": f"bench-history-{work.name}"}
        update["broker"] = cfg.broker.model_copy(update=session)
        update["connectors"] = [
            c.model_copy(update={"mqtt": c.mqtt.model_copy(update={"qos": qos})}) if c.mqtt else c
            for c in cfg.connectors
        ]
    agent = Agent(cfg.model_copy(update=update))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await agent.ready.wait()
        started = time.time()
        pubs = await asyncio.to_thread(flood, url, files, qos)
        await wait_until(lambda: ledger_rows(root) >= readings, 300)
        done = time.time()
        for pub in pubs:
            await asyncio.to_thread(pub.wait)
        stop.set()
    rows = ledger_rows(root)
    if rows != readings or agent.counts.deadletters:
        raise SystemExit(
            f"agent: {rows} of {readings} readings in the Parquet, {agent.counts.deadletters} dead letters"
        )
    history = agent.stats().history
    topic_bytes = len(b"qx/v1/demo/history")
    upstream = history["bytes"] + history["batches"] * (packet_bytes("", 0) + topic_bytes + 2)
    return readings / (done - started), upstream / readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=60_000, help="above ~65,000 the raw forwarder loses")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every-s", type=float, default=1.0, help="the agent's history cut")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="the plant's readings' QoS")
    parser.add_argument("--quick", action="store_true", help="40,000 readings, one round")
    parser.add_argument("--sink", nargs=3, help=argparse.SUPPRESS)
    add_save_option(parser)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink[0], args.sink[1], int(args.sink[2]))
        return
    if args.quick:
        args.readings, args.rounds, args.every_s = 40_000, 1, 0.5
    results = Results(__file__, parser, args)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(extra_config="max_queued_messages 0\n") as broker,
    ):
        os.environ["XDG_STATE_HOME"] = tmp  # the agent's audit log: not the user's
        files = make_flood(Path(tmp), args.readings)
        readings = sum(n for _, _, n in files)
        size = sum(p.stat().st_size for _, p, _ in files) / readings
        print(f"flood: {readings:,} readings of ~{size:.0f} bytes on {len(files)} topics, QoS {args.qos}")
        formats(files, min(readings, 20_000), results)
        rounds = results.table(
            f"{readings:,} readings (~{size:.0f} B JSON each, plant QoS {args.qos}) forwarded upstream",
            [
                "round",
                "raw paho QoS 1 readings/s",
                "history readings/s",
                "history / raw",
                "raw B/reading",
                "history B/reading",
                "history / raw bytes",
            ],
        )
        raw, hist, raw_b, hist_b = [], [], [], []
        for r in range(args.rounds):
            rate, per, lost = raw_round(broker.url, files, readings, args.qos)
            if lost:
                results.note(
                    f"round {r + 1}: {lost} of {readings} readings never reached the raw forwarder's sink"
                )
            raw.append(rate)
            raw_b.append(per)
            work = Path(tmp) / f"round{r}"
            work.mkdir()
            rate, per = history_round(broker.url, files, readings, work, args.every_s, args.qos)
            hist.append(rate)
            hist_b.append(per)
            print(
                f"  round {r + 1}: raw {raw[-1]:,.0f} readings/s, {raw_b[-1]:.1f} B/reading; history "
                f"{hist[-1]:,.0f} readings/s, {hist_b[-1]:.2f} B/reading"
            )
            rounds.add(
                str(r + 1),
                raw[-1],
                hist[-1],
                hist[-1] / raw[-1],
                raw_b[-1],
                hist_b[-1],
                hist_b[-1] / raw_b[-1],
            )
        m = [statistics.median(x) for x in (raw, hist, raw_b, hist_b)]
        rounds.add("median", m[0], m[1], m[1] / m[0], m[2], m[3], m[3] / m[2])
        speed, bytes_ratio = m[1] / m[0], m[3] / m[2]
        verdict = (
            f"history / raw: {speed:.2f}x the readings/s (target >= 1), {bytes_ratio:.3f} of the bytes per "
            f"reading (target <= 0.2): {'met' if speed >= 1 and bytes_ratio <= 0.2 else 'NOT met'}"
        )
        print(verdict)
        results.note(verdict)
    results.save()


if __name__ == "__main__":
    main()
