"""Soak: the agent (``qxedge run`` as a child process) at 5,000 readings/s for a while; its resident memory
after warm-up (the baseline) and at the end, and the drift between them (must stay within 10 %).

    .venv/bin/python -m bench.soak [--minutes 10] [--rate 5000] [--assets 50] [--confirm upstream]

A private mosquitto; a publisher thread sends one JSON reading per message (temp, power, vibration of
``--assets`` assets of line1) at ``--rate``; the agent windows, scores with configs/models/anomaly.onnx
every second, and streams telemetry (a record per asset every second) through its outbox to an upstream
counter (with ``--confirm upstream`` the counter confirms what it receives and the agent keeps every
record until it is confirmed, see connectors/confirm.py). Prints RSS every minute, the readings the
agent counted (its /metrics), the telemetry records sent, received and lost, and the records left in
the outbox after the stop, and exits 1 when the drift exceeds 10 % or a record is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.connectors.embedded_broker import EmbeddedBroker, free_port
from qxedge.connectors.mqtt import split_url
from qxedge.testing.bench_results import Results, add_save_option
from qxedge.testing.faults import CONFIRM, SeqCounter, start_agent

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = ("temp", "power", "vibration")


def config(work: Path, url: str, ops_port: int, confirm: str) -> Path:
    model = ROOT / "configs" / "models" / "anomaly.onnx"
    cfg = work / "edge.yaml"
    cfg.write_text(
        f"""site: t
broker: {{url: "{url}"}}
ops: {{host: 127.0.0.1, port: {ops_port}}}
connectors:
  - mqtt: {{topics: ["plant/#"], topic_pattern: "plant/{{line}}/{{asset}}/{{signal}}"}}
window: {{length_s: 10, every_s: 1, stats: [mean, std, max, slope], min_samples: 5}}
models:
  - name: anomaly
    path: {model}
    inputs: [temp.mean, temp.std, temp.slope, power.mean, power.std, vibration.mean, vibration.std,
             vibration.max]
    output: score
    assets: ["line1/*"]
telemetry: {{every_s: 1}}
outbox: {{path: outbox.sqlite, confirm: {confirm}}}
safety: {{audit: {{path: {work / "audit.sqlite"}}}}}
"""
    )
    return cfg


class Publisher:
    def __init__(self, url: str, rate: int, assets: int) -> None:
        _, host, port = split_url(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-plant")
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()
        self.rate = rate
        self.topics = [f"plant/line1/a{i:03d}/{s}" for i in range(assets) for s in SIGNALS]
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0.02
        per_tick = self.rate * tick
        started = time.monotonic()
        k = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) / tick * per_tick)
            now = time.time()
            while self.sent < due:
                topic = self.topics[k % len(self.topics)]
                value = 50.0 + (k % 97) * 0.01
                self.client.publish(topic, json.dumps({"ts": now, "value": value}))
                self.sent += 1
                k += 1
            time.sleep(tick)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def readings(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    found = re.search(r'^qxedge_readings_total\{site="t"\} (\S+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=5000, help="readings per second")
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: a fifth, at most 120)")
    parser.add_argument(
        "--max-drift", type=float, default=0.10, help="exit 1 above this drift (a brief smoke run: larger)"
    )
    parser.add_argument("--confirm", choices=["broker", "upstream"], default="broker", help="the outbox's")
    add_save_option(parser)
    args = parser.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(120.0, duration / 5)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        ops_port = free_port()
        counter = SeqCounter(broker.url, confirm_topic=CONFIRM if args.confirm == "upstream" else None)
        agent = start_agent(config(work, broker.url, ops_port, args.confirm), work / "agent.log")
        time.sleep(3)
        publisher = Publisher(broker.url, args.rate, args.assets)
        started = time.monotonic()
        try:
            time.sleep(warmup)
            base_rss, base_readings, base_t = rss_kib(agent.pid), readings(ops_port), time.monotonic()
            print(f"after {warmup:.0f} s warm-up: RSS {base_rss / 1024:.1f} MiB (baseline)")
            next_print = time.monotonic() + 60
            while time.monotonic() - started < duration:
                time.sleep(1)
                if agent.poll() is not None:
                    print((work / "agent.log").read_text()[-2000:])
                    sys.exit("the agent died")
                if time.monotonic() >= next_print:
                    next_print += 60
                    print(f"  t={time.monotonic() - started:5.0f} s RSS {rss_kib(agent.pid) / 1024:.1f} MiB")
            end_rss, end_readings = rss_kib(agent.pid), readings(ops_port)
            rate = (end_readings - base_readings) / (time.monotonic() - base_t)
        finally:
            publisher.close()
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
        with sqlite3.connect(work / "outbox.sqlite") as db:
            row = db.execute("SELECT next_seq FROM streams WHERE name = 'telemetry'").fetchone()
            left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        sent = int(row[0]) if row else 0
        print(f"outbox (confirm: {args.confirm}): {left} records left on disk after the stop")
        counter.wait_for(lambda seqs: all(s in seqs for s in range(sent)), 30)
        received, duplicated, lost = counter.report("soak telemetry", sent)
        counter.close()
    drift = (end_rss - base_rss) / base_rss
    print(
        f"soak {args.minutes:g} min at {args.rate} readings/s ({publisher.sent} published), agent counted "
        f"{rate:.0f} readings/s after warm-up"
    )
    print(
        f"RSS after warm-up {base_rss / 1024:.1f} MiB, at the end {end_rss / 1024:.1f} MiB: ratio "
        f"{end_rss / base_rss:.3f} (drift {drift:+.1%}, limit ±{args.max_drift:.0%})"
    )
    results = Results(__file__, parser, args)
    results.table(
        f"{args.minutes:g} min at {args.rate} readings/s, {args.assets} assets, {warmup:.0f} s warm-up, "
        f"confirm: {args.confirm}",
        [
            "RSS after warm-up MiB",
            "RSS at the end MiB",
            "drift %",
            "readings/s counted",
            "records sent",
            "received",
            "duplicated",
            "lost",
            "left on disk",
        ],
    ).add(base_rss / 1024, end_rss / 1024, drift * 100, rate, sent, received, duplicated, lost, left)
    results.save()
    sys.exit(0 if abs(drift) <= args.max_drift and lost == 0 else 1)


if __name__ == "__main__":
    main()
