"""Reading → setpoint latency of the agent, beside a bare paho echo on the same broker in the same run.

    ./run bench latency [--rate 1000] [--seconds 10] [--rounds 2] [--probe-every 10] [--trigger readings]
                        [--signals 9] [--telemetry] [--swap]

A load client publishes ``--rate`` readings per second (QoS 0, ~60 bytes) through a private mosquitto.
Every ``--probe-every``-th one is a *probe* on ``plant/line1/probe/x`` whose value alternates 1 / 0;
the others are background readings of ``--signals`` other signals (9 by default, one per asset; from
90 on, 10 per asset), windowed like any reading: the window is long enough (``3 x signals / rate`` s, at
least 2 s) to hold every signal, and the agent's warm-up sends each one before the measured round.
``--telemetry`` adds what the shipped ``configs/edge.yaml`` has: a record per asset every 5 s through
the disk outbox (every evaluation then tells the telemetry what it knows of the assets). The agent
(``qxedge run`` in its own process, ``window.trigger: readings``) scores the probe asset with a
one-node ONNX model (score = the newest ``x``), and a derate rule with ``consecutive: 1`` turns every
flip into a proposal: derate to 0.6, restore to 1.0, alternately. Each proposal goes through the safety
envelope, is audited (its row on disk before the write), and published on
``qx/v1/bench/setpoints/line1/probe``; its provenance window ends at the probe's own ``ts``, which
names the probe. The latency is probe publish → setpoint arrival at the load client.

Baseline: a bare paho process (TCP_NODELAY like the agent's sockets) that subscribes to ``plant/#`` and
republishes every message at QoS 1 on ``echo/<topic>``; the same stream, the probe's echo timed the
same way. Rounds alternate echo / agent. Target: agent p99 ≤ 2 x echo p99. Probes that share an
evaluation with the next probe are coalesced (one setpoint for the newer one) and counted. The
setpoint's own ``ts`` (stamped when the proposal reaches the gate) splits the agent's latency into
reading → gate (delivery, decoding, window, model, rule) and gate → arrival (envelope, audit row on
disk, publish, delivery); the CPU time of each process under test is read from ``/proc``, and the
agent's stalls (``qxedge_loop_lag_seconds``, ``qxedge_gc_pause_seconds``) from its ``/metrics`` before and
after each measured round.

``--swap`` measures a model swap instead of the echo: each round runs the agent twice on the same
stream and config (a ``deploy:`` section on both), once without and once with a swap during the
measured seconds. The swap: at 20 % of the round a signed model (the probe model relabelled: the same
scores, another sha256) is published, retained, on ``qx/v1/bench/models/probe``; the agent verifies
it, builds its ONNX Runtime session (in a thread), scores it in shadow beside the model in force for
``--shadow-evaluations`` evaluations, then promotes it between two evaluations (the audit log's
``shadow`` and ``promoted`` rows say when). Printed: p50/p99 of each, their ratio (swap / no swap),
the p99 of the probes published from the model's publication to one second after its promotion, and
the median of the rounds' own p99 ratios against the spread of the no-swap rounds' p99 (the noise
floor: an effect is measurable when it is above it). ``--save`` writes ``latency-swap.json``.
Target (issue 27): no effect measurable at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from qxedge.connectors.embedded_broker import EmbeddedBroker, free_port
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.testing.bench_results import Results, add_save_option

ROOT = Path(__file__).resolve().parent.parent
PROBE = "plant/line1/probe/x"
SETPOINTS = "qx/v1/bench/setpoints/line1/probe"

ECHO = textwrap.dedent("""
    import socket, sys, paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo")
    c.on_socket_open = lambda c_, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.on_message = lambda c_, u, m: c.publish("echo/" + m.topic, m.payload, 1)
    c.on_connect = lambda c_, u, f, rc, p: c.subscribe("plant/#", 0)
    c.on_subscribe = lambda *a: print("ready", flush=True)
    c.connect("127.0.0.1", int(sys.argv[1]))
    c.loop_forever()
""")

# The data center's side of a swap, in a process of its own (as it would be on its own machine): loads
# and signs beforehand, then publishes the model (retained, QoS 1) when a line comes on stdin.
PUBLISHER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from qxedge.agent.models.publish import publish_model
    from qxedge.agent.models.signing import load_private_key
    from qxedge.agent.models.training import read_model_dir
    from qxedge.connectors.mqtt import BrokerConfig
    folder, key, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    read_model_dir(folder), load_private_key(key)  # (warm: every import done)
    print("ready", flush=True)
    sys.stdin.readline()
    asyncio.run(publish_model(folder, key, "bench", "probe", BrokerConfig(url=url), progress=lambda _: None))
    print("published", flush=True)
""")

CONFIG = """\
site: bench
broker: {{url: "{url}"}}
connectors:
  - mqtt: {{topics: ["plant/#"], topic_pattern: "plant/{{line}}/{{asset}}/{{signal}}", qos: 0}}
window: {{length_s: {length_s:g}, every_s: 1, trigger: {trigger}, stats: [last], min_samples: 1,
         min_coverage: 0}}
models:
  - {{name: probe, path: "{model}", inputs: [x.last], output: score, assets: [line1/probe]}}
rules:
  - {{name: flip, model: probe, above: 0.5, consecutive: 1, clear_below: 0.5,
     derate_to: 0.6, restore_to: 1.0}}
ops: {{host: 127.0.0.1, port: {ops_port}}}
{deploy}safety:
  max_input_age_s: 15
  audit: {{path: "{audit}"}}
  envelopes:
    - {{assets: ["line1/*"], min: 0.3, max: 1.0, initial: 1.0}}
"""

DEPLOY = """\
deploy: {{public_key: "{public}", store: "{store}", promote: auto,
         shadow: {{evaluations: {evaluations}, max_latency_ratio: null}}}}
"""

TELEMETRY = """\
telemetry: {{every_s: 5, assets: ["*"], readings: true, features: true}}
outbox: {{path: "{outbox}"}}
"""


def identity_model(path: Path) -> None:
    """A one-node ONNX model: score = the single input feature."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["score"])],
        "probe",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def stats_line(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        raise SystemExit(f"only {len(xs)} samples: nothing to measure")
    return statistics.median(xs), statistics.quantiles(xs, n=100)[98]


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)  # probe publish -> answer arrival, s
    sent_at: list[float] = field(default_factory=list)  # the answered probes' publish times (epoch s)
    lost: int = 0  # probes without an answer (coalesced into a newer probe's evaluation, or lost)
    to_gate: list[float] = field(default_factory=list)  # probe publish -> the gate stamps the setpoint
    from_gate: list[float] = field(default_factory=list)  # the gate's stamp -> arrival
    cpu_s: float = 0.0  # CPU time of the process under test while measured
    stalls: Counter[str] = field(default_factory=Counter)  # the agent's loop lag and collections, measured
    swap_published: float | None = None  # when the model was published (a swap round)


def background_topics(signals: int) -> list[str]:
    """``signals`` topics: one signal per asset up to 9 assets, then 10 signals per asset."""
    assets = max(9, -(-signals // 10))
    return [f"plant/line1/bg{k % assets}/s{k // assets}" for k in range(signals)]


async def drive(
    url: str, rate: float, seconds: float, probe_every: int, reply_topic: str, agent: bool, signals: int
) -> Round:
    """Publish the stream; the latency of every answered probe and the number coalesced."""
    published: dict[float, float] = {}  # probe ts -> publish time
    result = Round()
    background = background_topics(signals)
    async with MqttClient(BrokerConfig(url=url), role=f"bench-load-{os.getpid()}") as mqtt:
        replies = await mqtt.subscribe(reply_topic, qos=1)

        async def collect() -> None:
            async for batch in replies:
                now = time.time()
                for _topic, payload in batch:
                    doc = json.loads(payload)
                    ts = doc["provenance"]["window"][1] if agent else doc["ts"]
                    sent = published.pop(ts, None)
                    if sent is not None:
                        result.latencies.append(now - sent)
                        result.sent_at.append(sent)
                        if agent:  # the gate stamps the setpoint when the proposal reaches it
                            result.to_gate.append(doc["ts"] - sent)
                            result.from_gate.append(now - doc["ts"])

        async with asyncio.TaskGroup() as tasks:
            collector = tasks.create_task(collect(), name="collect")
            started = time.monotonic()
            sent = probes = 0
            total = int(rate * seconds)
            while sent < total:
                due = min(total, int((time.monotonic() - started) * rate) + 1)
                for i in range(sent, due):
                    now = time.time()
                    if i % probe_every == 0:
                        probes += 1
                        payload = b'{"ts":%r,"value":%d}' % (now, probes % 2)
                        published[now] = now
                        mqtt.publish(PROBE, payload, qos=0)
                    else:
                        payload = b'{"ts":%r,"value":%r}' % (now, 20.0 + i % 7)
                        mqtt.publish(background[(i - probes) % signals], payload, qos=0)
                sent = due
                await asyncio.sleep(0.0005)
            await asyncio.sleep(1.0)  # the last answers
            collector.cancel()
        result.lost = len(published)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_stalls(port: int) -> Counter[str]:
    """The agent's ``qxedge_loop_lag_seconds`` and ``qxedge_gc_pause_seconds`` so far: wake-ups and
    collections, those over 2.5 ms, and the collections' total time."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name not in ("qxedge_loop_lag_seconds", "qxedge_gc_pause_seconds"):
            continue
        for sample in family.samples:
            what = "lag" if family.name == "qxedge_loop_lag_seconds" else f"gen{sample.labels['generation']}"
            if sample.name.endswith("_count"):
                out[what] += sample.value
                out[f"{what} slow"] += sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] == "0.0025":
                out[f"{what} slow"] -= sample.value
            elif sample.name.endswith("_sum"):
                out[f"{what} s"] += sample.value
    return out


def stalls_line(stalls: Counter[str]) -> str:
    collections = ", ".join(
        f"gen{g} {stalls[f'gen{g}']:.0f} ({stalls[f'gen{g} s'] * 1e3:.0f} ms in all, "
        f"{stalls[f'gen{g} slow']:.0f} > 2.5 ms)"
        for g in range(3)
    )
    return (
        f"agent stalls: {stalls['lag slow']:.0f} of {stalls['lag']:.0f} loop-lag probes > 2.5 ms late; "
        f"collections {collections}"
    )


def wait_line(proc: subprocess.Popen[str], want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"process exited before saying {want!r}")
        if want in line:
            return
    raise SystemExit(f"no {want!r} within {timeout} s")


async def wait_online(url: str, within_s: float) -> None:
    async with MqttClient(BrokerConfig(url=url), role=f"bench-wait-{os.getpid()}") as mqtt:
        state = await mqtt.subscribe("qx/v1/bench/agent/state", qos=1)
        async with asyncio.timeout(within_s):
            while True:
                if any(p == b"online" for _, p in await state.next_batch()):
                    return


def echo_round(url: str, port: int, args: argparse.Namespace) -> Round:
    with subprocess.Popen([sys.executable, "-c", ECHO, str(port)], stdout=subprocess.PIPE, text=True) as echo:
        try:
            wait_line(echo, "ready", 20)
            cpu = cpu_seconds(echo.pid)
            reply_topic = "echo/" + PROBE
            measured = asyncio.run(
                drive(url, args.rate, args.seconds, args.probe_every, reply_topic, False, args.signals)
            )
            measured.cpu_s = cpu_seconds(echo.pid) - cpu
            return measured
        finally:
            echo.terminate()


@dataclass(frozen=True)
class Swap:
    """What a model swap needs: the model folder to publish, the signing key, the agent's store."""

    folder: Path
    key: Path
    store: Path


async def swap_during(
    url: str, args: argparse.Namespace, publisher: subprocess.Popen[str], published: list[float]
) -> Round:
    """The measured round; at 20 % of it the publisher process publishes the model."""

    async def publish() -> None:
        await asyncio.sleep(0.2 * args.seconds)
        published.append(time.time())
        assert publisher.stdin is not None
        publisher.stdin.write("go\n")
        publisher.stdin.flush()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(publish())
        return await drive(url, args.rate, args.seconds, args.probe_every, SETPOINTS, True, args.signals)


async def clear_models(url: str) -> None:
    """No retained model left for the next agent: the manifest and chunk 0 (the probe model's only one)."""
    from qxedge.agent.models.publish import model_topic

    async with MqttClient(BrokerConfig(url=url), role=f"bench-clear-{os.getpid()}") as mqtt:
        for topic in (model_topic("bench", "probe"), model_topic("bench", "probe", "chunks/0")):
            mqtt.publish(topic, b"", qos=1, retain=True)
        await asyncio.sleep(0.5)  # (QoS 1 on a local broker: long done)


def model_events(audit: Path, since: float) -> dict[str, float]:
    """When the audit log says the probe model went into shadow and was promoted (epoch s), from
    ``since`` on."""
    import sqlite3

    db = sqlite3.connect(audit)
    try:
        rows = db.execute(
            "SELECT verdict, MIN(ts) FROM audit WHERE kind = 'model' AND ts >= ? GROUP BY verdict", (since,)
        ).fetchall()
    finally:
        db.close()
    return {str(verdict): float(ts) for verdict, ts in rows}


def agent_round(
    url: str, config: Path, ops_port: int, args: argparse.Namespace, swap: Swap | None = None
) -> Round:
    cmd = [sys.executable, "-m", "qxedge.agent.cli", "run", "--config", str(config), "--broker", url]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as agent:
        try:
            asyncio.run(wait_online(url, 60))
            warm_s = max(1.0, 1.2 * args.signals * args.probe_every / ((args.probe_every - 1) * args.rate))
            asyncio.run(drive(url, args.rate, warm_s, args.probe_every, SETPOINTS, True, args.signals))
            spy = None
            if args.profile:  # py-spy (pip install py-spy) samples the agent while it is measured
                out = f"{args.profile}.{time.monotonic_ns()}.txt"
                spy_cmd = ["py-spy", "record", "-r", "200", "-f", "raw", "--threads", "-o", out]
                spy = subprocess.Popen([*spy_cmd, "-d", str(int(args.seconds)), "-p", str(agent.pid)])
            cpu, stalls = cpu_seconds(agent.pid), scrape_stalls(ops_port)
            if swap is None:
                measured = asyncio.run(
                    drive(url, args.rate, args.seconds, args.probe_every, SETPOINTS, True, args.signals)
                )
            else:
                publisher = subprocess.Popen(
                    [sys.executable, "-c", PUBLISHER, str(swap.folder), str(swap.key), url],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    wait_line(publisher, "ready", 30)
                    published: list[float] = []
                    measured = asyncio.run(swap_during(url, args, publisher, published))
                    wait_line(publisher, "published", 30)
                finally:
                    publisher.kill()
                    publisher.wait()
                measured.swap_published = published[0]
            measured.cpu_s = cpu_seconds(agent.pid) - cpu
            measured.stalls = scrape_stalls(ops_port) - stalls
            if spy is not None:
                spy.wait(60)
            return measured
        finally:
            agent.terminate()
            agent.wait(20)


def swap_rounds(
    url: str,
    config: Path,
    ops_port: int,
    args: argparse.Namespace,
    results: Results,
    tmp: Path,
    length_s: float,
) -> None:
    """``--swap``: per round the agent without and with a model swap (alternating which goes first)."""
    from qxedge.agent.config import WindowConfig
    from qxedge.testing.training import model_dir, relabelled

    window = WindowConfig(length_s=length_s, every_s=1, stats=["last"], min_samples=1, min_coverage=0)
    print(
        f"{args.rate:g} readings/s for {args.seconds:g} s per round, a probe every {args.probe_every}, "
        f"{args.signals} background signals, window.trigger: {args.trigger}; each round the agent without "
        f"and with a model swap (published at {0.2 * args.seconds:g} s, {args.shadow_evaluations} shadow "
        f"evaluations, promote: auto); python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    table = results.table(
        f"{args.rate:g} readings/s, a probe every {args.probe_every}, {args.signals} background signals, "
        f"trigger: {args.trigger}; reading to setpoint arrival with a model swap (shadow "
        f"{args.shadow_evaluations} evaluations, then promoted) during the round against the same run "
        "without",
        [
            "round",
            "no swap p50 ms",
            "no swap p99 ms",
            "swap p50 ms",
            "swap p99 ms",
            "p50 ratio",
            "p99 ratio",
            "swap window p99 ms",
            "publish → promoted s",
        ],
    )
    plain_all, swap_all, window_all = Round(), Round(), []
    plain_p99s: list[float] = []
    ratios: list[float] = []  # each round's swap p99 / no-swap p99
    for r in range(args.rounds):
        shutil.rmtree(tmp / "store", ignore_errors=True)
        folder = model_dir(
            tmp / f"model-{r}", "probe", relabelled(tmp / "probe.onnx", f"swap {r}"), ["x.last"], window
        )
        swap = Swap(folder, tmp / "keys" / "model-signing.pem", tmp / "store")
        order = (None, swap) if r % 2 == 0 else (swap, None)
        measured: dict[bool, Round] = {}
        for which in order:
            if which is not None:
                shutil.rmtree(tmp / "store", ignore_errors=True)
            measured[which is not None] = agent_round(url, config, ops_port, args, which)
            if which is not None:
                asyncio.run(clear_models(url))
        plain, swapped = measured[False], measured[True]
        assert swapped.swap_published is not None
        events = model_events(tmp / "audit.sqlite", swapped.swap_published)
        promoted = events.get("promoted")
        if promoted is None:
            raise SystemExit(f"round {r + 1}: the model was not promoted during the round (audit: {events})")
        window_lat = [
            lat
            for lat, at in zip(swapped.latencies, swapped.sent_at, strict=True)
            if swapped.swap_published <= at <= promoted + 1.0
        ]
        (p50, p99), (s50, s99) = stats_line(plain.latencies), stats_line(swapped.latencies)
        _, w99 = stats_line(window_lat)
        took = promoted - swapped.swap_published
        print(
            f"  round {r + 1}: no swap p50 {p50 * 1e3:6.2f} ms p99 {p99 * 1e3:6.2f} ms | swap p50 "
            f"{s50 * 1e3:6.2f} ms p99 {s99 * 1e3:6.2f} ms (promoted {took:.2f} s after publishing; "
            f"{len(window_lat)} probes meanwhile, p99 {w99 * 1e3:.2f} ms) | p99 ratio x{s99 / p99:.2f}"
        )
        print(f"    without: {stalls_line(plain.stalls)}\n    with:    {stalls_line(swapped.stalls)}")
        table.add(
            str(r + 1), p50 * 1e3, p99 * 1e3, s50 * 1e3, s99 * 1e3, s50 / p50, s99 / p99, w99 * 1e3, took
        )
        plain_all.latencies += plain.latencies
        swap_all.latencies += swapped.latencies
        window_all += window_lat
        plain_p99s.append(p99)
        ratios.append(s99 / p99)
    (p50, p99), (s50, s99) = stats_line(plain_all.latencies), stats_line(swap_all.latencies)
    _, w99 = stats_line(window_all)
    table.add("all", p50 * 1e3, p99 * 1e3, s50 * 1e3, s99 * 1e3, s50 / p50, s99 / p99, w99 * 1e3, None)
    # the noise floor: how far apart two rounds of the same agent without a swap came out; the swap's
    # effect: the median of the rounds' own ratios (one slow round, either way, does not decide it)
    spread = max(plain_p99s) / min(plain_p99s)
    median_ratio = statistics.median(ratios)
    verdict = "none measurable" if median_ratio <= max(spread, 1.1) else "MEASURABLE"
    line = (
        f"all rounds: no swap p50 {p50 * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms; swap p50 {s50 * 1e3:.2f} ms "
        f"p99 {s99 * 1e3:.2f} ms; swap / no swap = x{s50 / p50:.2f} (p50), x{s99 / p99:.2f} (p99); the swap "
        f"window's p99 {w99 * 1e3:.2f} ms; the rounds' own p99 ratios: median x{median_ratio:.2f}, against "
        f"the no-swap rounds' p99 spread x{spread:.2f}: effect at p99 {verdict}"
    )
    print(line)
    results.note(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="readings per second, probes included")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--probe-every", type=int, default=10, help="every N-th reading is a probe")
    parser.add_argument("--telemetry", action="store_true", help="telemetry records through the outbox")
    parser.add_argument("--signals", type=int, default=9, help="background signals (keys in the window)")
    parser.add_argument("--trigger", choices=["readings", "interval"], default="readings")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy raw profiles of the agent, one per round")
    parser.add_argument(
        "--swap", action="store_true", help="agent with a model swap vs without, not the echo"
    )
    parser.add_argument("--shadow-evaluations", type=int, default=200, help="with --swap: the shadow period")
    add_save_option(parser)
    args = parser.parse_args()
    if args.swap and args.save == "":
        args.save = "swap"  # latency-swap.json, beside the echo comparison's latency.json
    results = Results(__file__, parser, args)
    if args.signals < 1 or args.probe_every < 2 or args.rate <= 0:
        parser.error("--signals must be >= 1, --probe-every >= 2 and --rate > 0")
    length_s = max(2.0, 3 * args.signals / args.rate)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        model = Path(tmp) / "probe.onnx"
        identity_model(model)
        config = Path(tmp) / "latency.yaml"
        audit = Path(tmp) / "audit.sqlite"
        ops_port = free_port()
        deploy = ""
        if args.swap:
            from qxedge.agent.models.signing import keygen

            _, public = keygen(Path(tmp) / "keys")
            store = Path(tmp) / "store"
            deploy = DEPLOY.format(public=public, store=store, evaluations=args.shadow_evaluations)
        config.write_text(
            CONFIG.format(
                url=broker.url,
                trigger=args.trigger,
                model=model,
                audit=audit,
                length_s=length_s,
                ops_port=ops_port,
                deploy=deploy,
            )
            + (TELEMETRY.format(outbox=Path(tmp) / "outbox.sqlite") if args.telemetry else ""),
            encoding="utf-8",
        )
        port = int(broker.url.rsplit(":", 1)[1])
        if args.swap:
            swap_rounds(broker.url, config, ops_port, args, results, Path(tmp), length_s)
            results.save()
            return
        print(
            f"{args.rate:g} readings/s for {args.seconds:g} s per round, a probe every {args.probe_every} "
            f"({args.rate / args.probe_every:g} setpoints/s), {args.signals} background signals in a "
            f"{length_s:g} s window{', telemetry' if args.telemetry else ''}, "
            f"window.trigger: {args.trigger}, "
            f"broker {broker.url}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )
        rounds = results.table(
            f"{args.rate:g} readings/s, a probe every {args.probe_every}, {args.signals} background signals, "
            f"{length_s:g} s window{', telemetry' if args.telemetry else ''}, trigger: {args.trigger}; "
            "reading to setpoint arrival against a paho echo",
            [
                "round",
                "echo p50 ms",
                "echo p99 ms",
                "agent p50 ms",
                "agent p99 ms",
                "p50 ratio",
                "p99 ratio",
                "probes coalesced or lost",
            ],
        )
        echo_all, agent_all = Round(), Round()
        for r in range(args.rounds):
            echo = echo_round(broker.url, port, args)
            agent = agent_round(broker.url, config, ops_port, args)
            for total, one in ((echo_all, echo), (agent_all, agent)):
                total.latencies += one.latencies
                total.to_gate += one.to_gate
                total.from_gate += one.from_gate
                total.cpu_s += one.cpu_s
                total.stalls += one.stalls
            (e50, e99), (a50, a99) = stats_line(echo.latencies), stats_line(agent.latencies)
            print(
                f"  round {r + 1}: echo p50 {e50 * 1e3:6.2f} ms p99 {e99 * 1e3:6.2f} ms "
                f"({len(echo.latencies)} probes, {echo.lost} lost) | agent p50 {a50 * 1e3:6.2f} ms "
                f"p99 {a99 * 1e3:6.2f} ms ({len(agent.latencies)} setpoints, {agent.lost} probes coalesced "
                f"or lost) | p99 ratio x{a99 / e99:.2f}"
            )
            rounds.add(
                str(r + 1), e50 * 1e3, e99 * 1e3, a50 * 1e3, a99 * 1e3, a50 / e50, a99 / e99, agent.lost
            )
        (e50, e99), (a50, a99) = stats_line(echo_all.latencies), stats_line(agent_all.latencies)
        (g50, g99), (o50, o99) = stats_line(agent_all.to_gate), stats_line(agent_all.from_gate)
        measured_s = args.rounds * args.seconds
        print(
            f"agent: reading -> gate p50 {g50 * 1e3:.2f} ms p99 {g99 * 1e3:.2f} ms, gate -> arrival "
            f"p50 {o50 * 1e3:.2f} ms p99 {o99 * 1e3:.2f} ms; CPU {agent_all.cpu_s / measured_s:.0%} of a "
            "core "
            f"({agent_all.cpu_s / (args.rate * measured_s) * 1e6:.0f} µs a reading; the echo "
            f"{echo_all.cpu_s / (args.rate * measured_s) * 1e6:.0f} µs)"
        )
        print(stalls_line(agent_all.stalls))
        print(
            f"all rounds: echo p50 {e50 * 1e3:.2f} ms p99 {e99 * 1e3:.2f} ms; agent p50 {a50 * 1e3:.2f} ms "
            f"p99 {a99 * 1e3:.2f} ms; agent / echo = x{a50 / e50:.2f} (p50), x{a99 / e99:.2f} (p99); "
            f"target p99 <= x2: {'met' if a99 <= 2 * e99 else 'NOT met'}"
        )
        rounds.add("all", e50 * 1e3, e99 * 1e3, a50 * 1e3, a99 * 1e3, a50 / e50, a99 / e99, None)
        results.table(
            "the agent's side (all rounds)",
            [
                "reading → gate p50 ms",
                "p99 ms",
                "gate → arrival p50 ms",
                "p99 ms",
                "CPU % of a core",
                "µs CPU a reading",
                "echo µs CPU a reading",
            ],
        ).add(
            g50 * 1e3,
            g99 * 1e3,
            o50 * 1e3,
            o99 * 1e3,
            agent_all.cpu_s / measured_s * 100,
            agent_all.cpu_s / (args.rate * measured_s) * 1e6,
            echo_all.cpu_s / (args.rate * measured_s) * 1e6,
        )
        results.note(stalls_line(agent_all.stalls))
    results.save()


if __name__ == "__main__":
    main()
