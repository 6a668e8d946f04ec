"""Offload round trip and deadline adherence, beside an MQTT request/reply echo in the same run.

    ./run bench offload [--jobs 200] [--rate 50] [--seconds 10] [--n 12] [--resend-after 0.4]

1. Round trip: the agent's OffloadClient sends small jobs (n = 10, solver ``exact``) one at a time
   through a private mosquitto to two ``qxedge solver`` worker processes; the overhead is the round
   trip minus the worker's own ``solve_ms``. The baseline is a bare paho echo process (subscribe,
   republish) answering the same payloads on the same broker: p50 and p99 of both, and their ratio.
2. Deadline adherence: jobs at ``--rate`` per second for ``--seconds`` (``--n`` variables, ``auto``,
   1.5 s deadline) through the same two workers; every decision (data center or local fallback) must
   arrive by its deadline. Prints the fraction in time, the fallbacks and the late results, and the
   jobs the agent sent again (``--resend-after``, ``offload.resend_after``) with the second answers
   they drew: with ``--n`` large enough that the anytime solvers fill their budget, every job is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dimod

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.testing import random_bqm
from qxedge.testing.bench_results import Results, add_save_option

ECHO = textwrap.dedent("""
    import sys, paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-echo")
    c.on_message = lambda c_, u, m: c.publish("qx/v1/echo/results/" + m.topic.rsplit("/", 1)[1], m.payload, 1)
    c.on_connect = lambda c_, u, f, rc, p: (c.subscribe("qx/v1/echo/jobs/+", 1), print("ready", flush=True))
    c.connect("127.0.0.1", int(sys.argv[1]))
    c.loop_forever()
""")


def bqm(n: int, seed: int) -> dimod.BinaryQuadraticModel:
    return random_bqm(n, 0.5, seed)


def percentiles(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"p50 {statistics.median(xs) * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms"


async def echo_round_trips(port: int, n: int, payload: bytes) -> list[float]:
    async with MqttClient(BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), role="bench-echo-client") as mqtt:
        replies = await mqtt.subscribe("qx/v1/echo/results/+", qos=1)
        out = []
        for i in range(n):
            started = time.perf_counter()
            mqtt.publish(f"qx/v1/echo/jobs/{i}", payload, qos=1)
            await replies.next_batch()
            out.append(time.perf_counter() - started)
        return out


async def wait_for_workers(port: int, count: int, timeout_s: float = 120) -> None:
    """Until ``count`` different workers have answered a small job (they import PennyLane and start their
    solver processes first: seconds, more on a busy machine)."""
    cfg = OffloadConfig(deadline_ms=30_000, solver="exact", fallback_ms=100)
    async with (
        MqttClient(BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), role="bench-warm-up") as mqtt,
        OffloadClient(mqtt, "bench", cfg) as offload,
    ):
        seen: set[str | None] = set()
        deadline = time.monotonic() + timeout_s
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(seen)} of {count} solver workers answered within {timeout_s:g} s")
            decision = await offload.solve(bqm(6, len(seen)))
            if decision.source == "datacenter" and decision.result is not None:
                seen.add(decision.result.worker)


async def offload_round_trips(port: int, n: int) -> tuple[list[float], list[float]]:
    cfg = OffloadConfig(deadline_ms=5000, solver="exact", fallback_ms=100)
    async with (
        MqttClient(BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), role="bench-agent") as mqtt,
        OffloadClient(mqtt, "bench", cfg) as offload,
    ):
        totals, overheads = [], []
        for i in range(n):
            decision = await offload.solve(bqm(10, i))
            assert decision.source == "datacenter" and decision.result is not None, decision.reason
            totals.append(decision.seconds)
            overheads.append(decision.seconds - decision.result.timings.get("solve_ms", 0) / 1000)
        return totals, overheads


async def adherence(
    port: int, rate: float, seconds: float, n: int, resend_after: float, saved: Results
) -> None:
    cfg = OffloadConfig(deadline_ms=1500, solver="auto", fallback_ms=250, resend_after=resend_after)
    async with (
        MqttClient(BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), role="bench-agent-2") as mqtt,
        OffloadClient(mqtt, "bench", cfg) as offload,
    ):
        problems = [bqm(n, 1000 + i) for i in range(int(rate * seconds))]

        async def one(problem: dimod.BinaryQuadraticModel) -> tuple[bool, str]:
            started = time.monotonic()
            decision = await offload.solve(problem)
            return time.monotonic() - started <= cfg.deadline_ms / 1000, decision.source

        tasks = []
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for i, problem in enumerate(problems):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                tasks.append(group.create_task(one(problem)))
        results = [t.result() for t in tasks]
        in_time = sum(ok for ok, _ in results)
        fallbacks = sum(source == "fallback" for _, source in results)
        print(
            f"deadline adherence at {rate:g} jobs/s of n = {n} for {seconds:g} s with two workers: "
            f"{in_time}/{len(results)} decisions in time ({in_time / len(results):.1%}), "
            f"{fallbacks} local fallbacks ({offload.stats['greedy_fallbacks']} greedy), "
            f"{offload.stats['late']} results after the deadline; {offload.stats['resends']} re-sent "
            f"(resend_after {resend_after:g}), {offload.stats['duplicate_results']} second answers; "
            f"wins {dict(offload.wins)}"
        )
        saved.table(
            f"deadline adherence: {rate:g} jobs/s of n = {n} for {seconds:g} s, two workers, "
            f"resend_after {resend_after:g}",
            ["decisions", "in time", "local fallbacks", "late results", "re-sent", "second answers", "wins"],
        ).add(
            len(results),
            in_time,
            fallbacks,
            offload.stats["late"],
            offload.stats["resends"],
            offload.stats["duplicate_results"],
            str(dict(offload.wins)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--n", type=int, default=12, help="variables per job in the adherence run")
    parser.add_argument(
        "--resend-after",
        type=float,
        default=OffloadConfig().resend_after,
        help="the agent's offload.resend_after in the adherence run (0: no re-sends)",
    )
    add_save_option(parser)
    args = parser.parse_args()
    saved = Results(__file__, parser, args)
    with EmbeddedBroker(prefer="mosquitto") as broker, tempfile.TemporaryDirectory() as tmp:
        port = broker.port
        conf = Path(tmp) / "dc.yaml"
        conf.write_text("solvers: {workers: 1}\nops: null\n")
        url = broker.url
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "qxedge.agent.cli", "solver", "--config", str(conf), "--broker", url],
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        echo = subprocess.Popen([sys.executable, "-c", ECHO, str(port)], stdout=subprocess.PIPE, text=True)
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            asyncio.run(wait_for_workers(port, len(workers)))
            payload = json.dumps({"problem": bqm(10, 0).to_serializable(use_bytes=False)}).encode()
            echo_rtt = asyncio.run(echo_round_trips(port, args.jobs, payload))
            totals, overheads = asyncio.run(offload_round_trips(port, args.jobs))
            print(f"{args.jobs} round trips, n = 10, one at a time, private mosquitto")
            print(f"  MQTT echo (paho subscribe + republish) {percentiles(echo_rtt)}")
            print(f"  offload round trip                     {percentiles(totals)}")
            print(f"  offload minus solve time               {percentiles(overheads)}")
            p99 = statistics.quantiles(overheads, n=100)[98] / statistics.quantiles(echo_rtt, n=100)[98]
            p50 = statistics.median(overheads) / statistics.median(echo_rtt)
            print(f"  overhead / echo: p50 x{p50:.2f}, p99 x{p99:.2f}")
            trips = saved.table(
                f"{args.jobs} round trips of n = 10, one at a time, private mosquitto",
                ["", "p50 ms", "p99 ms"],
            )
            for label, xs in [
                ("MQTT echo (paho subscribe + republish)", echo_rtt),
                ("offload round trip", totals),
                ("offload minus solve time", overheads),
            ]:
                trips.add(label, statistics.median(xs) * 1000, statistics.quantiles(xs, n=100)[98] * 1000)
            trips.add("overhead / echo (ratio)", p50, p99)
            asyncio.run(adherence(port, args.rate, args.seconds, args.n, args.resend_after, saved))
        finally:
            for p in (*workers, echo):
                p.terminate()
                p.wait(10)
    saved.save()


if __name__ == "__main__":
    main()
