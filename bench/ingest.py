"""Sustained ingest: the agent against a raw paho subscriber doing only json.loads, same flood, same run.

    ./run bench ingest [--messages 200000] [--rounds 3] [--batch 1|100] [--broker mqtt://host:port]

A C publisher (``mosquitto_pub -l``, ~110-byte readings, QoS 0) floods a private mosquitto while one
subscriber drains it; the rate is messages (and readings) received between the first and the last
message. Rounds alternate raw / agent so drifts of this shared machine hit both; the ratio of medians
is the figure to quote. The agent runs its whole pipeline: decode and validate, window every second,
score with the shipped ONNX model. Readings carry no ``ts`` (the receive time is used), so every one
of them lands in the feature window. With ``--batch 100`` every message carries 100 readings
(``values`` form): the agent's readings/s is then the figure; give it ``--messages 100000`` so that a
round lasts several evaluation periods (the window update is part of the cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.agent.config import load_config
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import split_url
from qxedge.testing.bench_results import Results, add_save_option

ROOT = Path(__file__).resolve().parent.parent


def make_flood(path: Path, messages: int, batch: int) -> tuple[str, int]:
    """Write one payload per line; return the topic and the readings per message."""
    with path.open("w") as f:
        if batch == 1:
            for i in range(messages):
                f.write(
                    json.dumps(
                        {
                            "value": 70.0 + (i % 97) * 0.01,
                            "unit": "degC",
                            "quality": "good",
                            "gateway": "bench-gw-01",
                            "seq": i,
                            "src": "bench-flood",
                        }
                    )
                    + "\n"
                )
            return "plant/line1/pump1/temp", 1
        for i in range(messages):
            values = {f"s{k:02d}": round(20.0 + k + (i % 13) * 0.1, 2) for k in range(batch)}
            f.write(json.dumps({"values": values}, separators=(",", ":")) + "\n")
        return "plant/line1/pump1", batch


def publish(url: str, topic: str, flood: Path) -> subprocess.Popen[bytes]:
    _, host, port = split_url(url)
    return subprocess.Popen(
        ["mosquitto_pub", "-h", host, "-p", str(port), "-t", topic, "-q", "0", "-l"],
        stdin=flood.open("rb"),
    )


def raw_round(url: str, topic: str, flood: Path, messages: int) -> float:
    _, host, port = split_url(url)
    count = 0
    first = last = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, first, last
        json.loads(msg.payload)
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == messages:
            last = time.perf_counter()
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port)
    client.subscribe("plant/#", 0)
    thread = threading.Thread(target=client.loop_forever, daemon=True)
    thread.start()
    subscribed.wait(10)
    pub = publish(url, topic, flood)
    finished = done.wait(120)
    pub.wait()
    client.disconnect()
    thread.join(5)
    if not finished:
        raise SystemExit(f"raw subscriber got {count} of {messages}: the broker dropped messages")
    return messages / (last - first)


async def agent_round(url: str, topic: str, flood: Path, messages: int) -> tuple[float, int]:
    environ = {"QXEDGE_OPS__PORT": "0"}  # a free port: another agent on this machine may hold 9464
    cfg = load_config(ROOT / "configs" / "edge.yaml", environ=environ, broker_url=url)
    agent = Agent(cfg.model_copy(update={"planning": None}))  # no production day: its loads are not here
    stop = asyncio.Event()
    first = last = 0.0
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await agent.ready.wait()
        pub = publish(url, topic, flood)
        deadline = time.monotonic() + 120
        while agent.counts.messages < messages and time.monotonic() < deadline:
            if agent.counts.messages and not first:
                first = time.perf_counter()
            await asyncio.sleep(0.001)
        last = time.perf_counter()
        await asyncio.to_thread(pub.wait)
        stop.set()
    if agent.counts.messages < messages:
        raise SystemExit(f"agent got {agent.counts.messages} of {messages}")
    if agent.counts.deadletters:
        raise SystemExit(f"agent dead-lettered {agent.counts.deadletters} valid messages")
    return messages / (last - first), agent.counts.readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="readings per message (values form when > 1)")
    parser.add_argument("--broker", help="an existing broker (default: a private mosquitto)")
    add_save_option(parser)
    args = parser.parse_args()
    results = Results(__file__, parser, args)

    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedBroker(extra_config="max_queued_messages 0\n")
        if args.broker is None
        else _Given(args.broker) as broker,
    ):
        os.environ["XDG_STATE_HOME"] = tmp  # the agent's audit log and outbox: not the user's, maybe in use
        flood = Path(tmp) / "flood.txt"
        topic, per_message = make_flood(flood, args.messages, args.batch)
        size = flood.stat().st_size / args.messages
        print(
            f"flood: {args.messages:,} messages of ~{size:.0f} bytes, {per_message} reading(s) each, "
            f"broker {broker.url}, python {sys.version.split()[0]}"
        )
        rounds = results.table(
            f"{args.messages:,} messages of ~{size:.0f} B, {per_message} reading(s) each, QoS 0",
            ["round", "raw paho + json.loads msg/s", "agent msg/s", "agent readings/s", "agent / raw"],
        )
        raw, agent = [], []
        for r in range(args.rounds):
            raw.append(raw_round(broker.url, topic, flood, args.messages))
            rate, readings = asyncio.run(agent_round(broker.url, topic, flood, args.messages))
            agent.append(rate)
            if args.messages / rate < 3:  # the feature window runs once a second: let it run a few times
                short = f"the agent round lasted {args.messages / rate:.1f} s; use more --messages"
                print(f"  note: {short}")
                results.note(short)
            print(
                f"  round {r + 1}: raw paho+json.loads {raw[-1]:>9,.0f} msg/s   "
                f"agent {agent[-1]:>9,.0f} msg/s = {agent[-1] * per_message:>11,.0f} readings/s "
                f"({readings:,} readings)"
            )
            rounds.add(str(r + 1), raw[-1], agent[-1], agent[-1] * per_message, agent[-1] / raw[-1])
        ratio = statistics.median(agent) / statistics.median(raw)
        print(
            f"median: raw {statistics.median(raw):,.0f} msg/s, agent {statistics.median(agent):,.0f} msg/s "
            f"({statistics.median(agent) * per_message:,.0f} readings/s); agent / raw = {ratio:.2f}"
        )
        rounds.add(
            "median",
            statistics.median(raw),
            statistics.median(agent),
            statistics.median(agent) * per_message,
            ratio,
        )
    results.save()


class _Given:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> _Given:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
