"""The data center at scale: many sites, W solver workers, each job transport, workers and nodes killed.

    ./run bench scale [--sites 500] [--rate 100] [--seconds 20] [--n 12] [--deadline-ms 3000]
                      [--only mqtt,nats,rabbitmq,nats-cluster] [--job-qos 0|1] [--quick] [--save]

``--sites`` simulated sites send small BQM jobs (``--n`` variables, solver ``exact``, ``--deadline-ms``)
at ``--rate`` jobs per second in all, round robin, over MQTT, each on its own ``qx/v1/{site}/jobs``
with its own ``reply_to`` (``qx/v1/{site}/results/{job_id}``). The sites are one process: 10 MQTT
connections publishing as 50 sites each, and one collector subscribed to ``qx/v1/+/results/+`` that
stamps every result as it arrives. Like the agent (:class:`qxedge.hybrid.client.OffloadClient`), a site
sends a job with no result yet again, the same payload, at the default ``offload.resend_after`` of its
deadline, at most ``max_resends`` times, within a re-send budget per site
(:class:`qxedge.hybrid.resend.ResendBudget`; ``re-sent`` counts the jobs sent again). Jobs go at the
QoS an agent's ``offload.job_qos`` gives them there (``job qos``): 0 on ``nats-cluster``, as docs/offload.md
sets it for a NATS cluster, 1 elsewhere; ``--job-qos`` sets one for all. The workers are
``qxedge solver`` processes sharing one PostgreSQL job ledger (a private cluster,
:class:`qxedge.testing.postgres.PostgresServer`). Per transport:

- ``mqtt``: mosquitto's shared subscription ``$share/qx-solvers/...``;
- ``nats``: a JetStream work queue fed by NATS's MQTT (``ack_wait_s`` 2);
- ``rabbitmq``: a quorum queue bound to the MQTT plugin's exchange;
- ``nats-cluster``: three nats-servers, stream replicas 3, the sites on node 0's MQTT, the workers told
  every node.

Phases, on the same brokers: 1 worker at the rated rate (``steady W=1``); a flood of ``--rate`` x
``--flood-s`` jobs sent at once with 60 s deadlines (``flood W=1``: the throughput of one worker); a
second worker joins, and both again (``steady W=2``, ``flood W=2``; the ratio of the two floods is the
scaling, the one-worker flood its baseline, measured in the same run); then ``kill``: two workers at
the rated rate, one killed with SIGKILL halfway (on ``nats-cluster`` a node is killed instead, twice:
``kill follower``, a node that does not lead the job stream, then, once it is back and the stream
whole again, ``kill leader``, the stream's leader, moved off node 0 first; node 0 carries the sites).

Counted per phase: jobs sent; lost (no result by the deadline plus 10 s; of which unsent: a publish
that failed because the site's MQTT connection was down, which an agent knows at once); re-sent (jobs
sent again, with no result by then); solves logged
(answers the workers' logs report) and solved twice (jobs two workers' logs say they answered: the job
ledger should make it 0); late or lost, and deadline adherence (``ok`` results at the site by their
deadline, of all sent); answers again (results that reached their site twice); throughput (results
per second from the first job sent to the last result); the p50 / p99 round trip. ``--quick`` runs
``mqtt`` and ``nats`` with fewer phases and seconds (< 60 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.hybrid.config import OffloadConfig
from qxedge.hybrid.resend import ResendBudget
from qxedge.testing import random_bqm
from qxedge.testing.bench_results import Results, add_save_option
from qxedge.testing.brokers import NatsCluster, NatsServer, RabbitNode, nats_available, rabbitmq_available
from qxedge.testing.postgres import PostgresServer

QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]
TRANSPORTS = ("mqtt", "nats", "rabbitmq", "nats-cluster")
CONNECTIONS = 10
SOLVED = re.compile(r"job (\S+?)/(\S+): (ok|late|error) by ")
FLOOD_RATE = 5000.0  # jobs/s offered in a flood: all at once, as fast as the sites publish
DRAIN_S = 10.0  # after a job's deadline: a result later than this counts as lost
JOB_QOS = {"nats-cluster": 0}  # offload.job_qos as docs/offload.md sets it per broker (1 elsewhere)


def mqtt_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Phase:
    name: str
    workers: int
    sent: dict[str, float] = field(default_factory=dict)  # job id -> submitted (epoch s)
    deadline_s: float = 3.0
    received: dict[str, tuple[float, str]] = field(default_factory=dict)  # job id -> (arrived, status)
    copies: int = 0  # results that arrived again (QoS 1: at least once)
    publish_failed: int = 0  # jobs a site could not send (its MQTT connection was down)
    resent: set[str] = field(default_factory=set)  # jobs sent again (no result by a re-send time)
    resends_held: int = 0  # re-sends the site's budget did not allow (most of its jobs answered late)
    solved: Counter[str] = field(default_factory=Counter)  # job id -> answers in the workers' logs
    killed: str = ""

    def row(self, transport: str, job_qos: int) -> dict[str, Any]:
        sent = len(self.sent)
        lost = sum(1 for j in self.sent if j not in self.received)
        in_time = sum(
            1
            for j, (at, status) in self.received.items()
            if status == "ok" and at <= self.sent[j] + self.deadline_s
        )
        trips = sorted(self.received[j][0] - self.sent[j] for j in self.received if j in self.sent)
        last = max((at for at, _ in self.received.values()), default=0.0)
        first = min(self.sent.values(), default=0.0)
        p99 = statistics.quantiles(trips, n=100)[98] if len(trips) >= 2 else None
        return {
            "transport": transport,
            "phase": self.name,
            "workers": self.workers,
            "job qos": job_qos,
            "sent": sent,
            "lost": lost,
            "of which unsent": self.publish_failed,  # the site knew at once (an agent falls back)
            "re-sent": len(self.resent),  # jobs sent again, as the agent does (offload.resend_after)
            "solves logged": sum(self.solved.values()),
            "solved twice": sum(1 for c in self.solved.values() if c > 1),
            "late or lost": sent - in_time,
            # a string: the tables round floats to 3 digits, and 99.95 is not 100
            "in time %": f"{100 * in_time / sent:.2f}" if sent else None,
            "answers again": self.copies,  # results that reached the site twice (QoS 1: at least once)
            "jobs/s": round(len(self.received) / (last - first), 1) if last > first else None,
            "p50 ms": round(statistics.median(trips) * 1000, 1) if trips else None,
            "p99 ms": round(p99 * 1000, 1) if p99 is not None else None,
            "killed": self.killed or None,
        }


class Sites:
    """``sites`` simulated sites on ``CONNECTIONS`` MQTT connections, and one results collector."""

    def __init__(self, port: int, sites: int, n: int, deadline_ms: int, job_qos: int) -> None:
        self.names = [f"site{i:04d}" for i in range(sites)]
        self.problem = random_bqm(n, 0.5, seed=7).to_serializable(use_bytes=False)
        self.deadline_ms = deadline_ms
        self.phase: Phase | None = None
        self.lock = threading.Lock()
        self.clients = [self._client(port, f"bench-sites-{i}") for i in range(CONNECTIONS)]
        self.collector = self._client(port, "bench-collector")
        self.collector.on_message = self._result
        subscribed = threading.Event()
        self.collector.on_subscribe = lambda *_: subscribed.set()
        self.collector.subscribe("qx/v1/+/results/+", qos=1)
        if not subscribed.wait(30):
            raise SystemExit("the results collector could not subscribe")
        self.pending: list[paho.MQTTMessageInfo] = []
        self.offload = OffloadConfig(job_qos=job_qos)  # as the agent: when a job is sent again, its QoS
        self.budgets = {name: ResendBudget() for name in self.names}  # one per site, as one per agent
        # (when, which re-send, job id, site, connection, topic, payload), in time order: every job of a
        # phase has the same deadline
        self.resends: deque[tuple[float, int, str, str, int, str, str]] = deque()

    @staticmethod
    def _client(port: int, client_id: str) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.max_queued_messages_set(0)
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        if not connected.wait(30):
            raise SystemExit(f"{client_id}: no MQTT connection on port {port}")
        return client

    def _result(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        arrived = time.time()
        try:
            result = json.loads(message.payload)
        except ValueError:
            return
        job_id, status = result.get("job_id"), result.get("status")
        with self.lock:
            phase = self.phase
            if phase is None or job_id not in phase.sent:
                return  # a probe's answer, or a late one of an earlier phase
            if job_id in phase.received:
                phase.copies += 1
            else:
                phase.received[job_id] = (arrived, str(status))

    def send(self, phase: Phase, rate: float, seconds: float, deadline_ms: int, midway: Any = None) -> None:
        """Jobs at ``rate`` per second for ``seconds``, site after site; ``midway()`` halfway."""
        with self.lock:
            self.phase = phase
        phase.deadline_s = deadline_ms / 1000
        total = max(1, round(rate * seconds))
        started = time.monotonic()
        for k in range(total):
            if midway is not None and k == total // 2:
                midway()
            pause = started + k / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            site = self.names[k % len(self.names)]
            job_id = f"{phase.name.replace(' ', '-').replace('=', '')}-{k}"
            now = time.time()
            payload = json.dumps(
                {
                    "v": 1,
                    "job_id": job_id,
                    "site": site,
                    "problem": self.problem,
                    "deadline_ms": deadline_ms,
                    "submitted_at": now,
                    "solver": "exact",
                    "reply_to": f"qx/v1/{site}/results/{job_id}",
                }
            )
            with self.lock:
                phase.sent[job_id] = now
            topic = f"qx/v1/{site}/jobs"
            info = self.clients[k % CONNECTIONS].publish(topic, payload, qos=self.offload.job_qos)
            self.pending.append(info)
            for i, at in enumerate(self.offload.resend_times(phase.deadline_s)):  # in time order
                self.resends.append((now + at, i, job_id, site, k % CONNECTIONS, topic, payload))
            self.resend_due(phase)

    def resend_due(self, phase: Phase) -> None:
        """Send again each job whose re-send time has come and that has no result yet, as the agent
        does: the same payload (the same job id and deadline), within its site's re-send budget."""
        now = time.time()
        while self.resends and self.resends[0][0] <= now:
            at, i, job_id, site, conn, topic, payload = self.resends.popleft()
            with self.lock:
                answer = phase.received.get(job_id)
            budget = self.budgets[site]
            if answer is not None and answer[0] <= at:
                if i == 0:
                    budget.answered_in_time()
            elif budget.may_resend():
                phase.resent.add(job_id)
                self.pending.append(self.clients[conn].publish(topic, payload, qos=self.offload.job_qos))
            else:
                phase.resends_held += 1

    def drain(self, phase: Phase) -> None:
        """Until every job has its result, or DRAIN_S past the last deadline."""
        until = max(phase.sent.values(), default=time.time()) + phase.deadline_s + DRAIN_S
        while time.time() < until:
            with self.lock:
                if all(j in phase.received for j in phase.sent):
                    break
            self.resend_due(phase)
            time.sleep(0.05)
        self.resends.clear()
        unacked = 0
        for info in self.pending:
            try:
                unacked += not info.is_published()
            except RuntimeError:  # not sent: the connection was down (paho reconnects by itself)
                phase.publish_failed += 1
        if unacked:
            print(f"  ({unacked} job publishes were never acknowledged by the broker)")
        self.pending.clear()
        with self.lock:
            self.phase = None

    def close(self) -> None:
        for client in [*self.clients, self.collector]:
            client.loop_stop()
            client.disconnect()


class Worker:
    """One ``qxedge solver`` process, its config and log in ``folder``."""

    def __init__(self, folder: Path, name: str, doc: dict[str, Any], env: dict[str, str]) -> None:
        self.name = name
        self.config = folder / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump({"worker_id": name, **doc}))
        self.log = folder / f"{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*QXEDGE, "solver", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while "waiting for jobs through" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def mark(self) -> int:
        return self.log.stat().st_size

    def solved_since(self, offset: int) -> Counter[str]:
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return Counter(job_id for _site, job_id, _status in SOLVED.findall(text))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def broker(kind: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(the sites' MQTT url, the workers' config, the broker object) for one transport."""
    if kind == "mqtt":
        with EmbeddedBroker(prefer="mosquitto") as mosquitto:
            yield mosquitto.url, {}, mosquitto
    elif kind == "nats":
        with NatsServer() as nats:
            yield nats.mqtt_url, {"transport": {"kind": "nats", "url": nats.url, "ack_wait_s": 2}}, nats
    elif kind == "nats-cluster":
        with NatsCluster(3) as cluster:
            transport = {"kind": "nats", "url": cluster.url, "ack_wait_s": 2, "replicas": 3}
            yield cluster.nodes[0].mqtt_url, {"transport": transport}, cluster
    else:
        with RabbitNode() as rabbit:
            transport = {
                "kind": "rabbitmq",
                "url": rabbit.url.replace("guest:guest@", ""),
                "username": "guest",
                "password": "guest",
            }
            yield rabbit.mqtt_url, {"transport": transport}, rabbit


class JobStream:
    """The job stream QX_JOBS of a NATS cluster: its leader, its replicas, a leader step-down."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster

    def _ask(self, step_down: bool = False) -> tuple[str | None, bool]:
        import asyncio

        import nats
        import nats.errors
        import nats.js.errors

        async def ask() -> tuple[str | None, bool]:
            nc = await nats.connect([n.url for n in self.cluster.nodes if n.running])
            try:
                if step_down:
                    await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.QX_JOBS", b"", timeout=5)
                info = await nc.jetstream(timeout=5).stream_info("QX_JOBS")
            except (nats.errors.Error, nats.js.errors.Error):
                return None, False
            finally:
                await nc.close()
            if info.cluster is None:
                return None, False
            replicas = info.cluster.replicas or []
            return info.cluster.leader, len(replicas) == 2 and all(r.current for r in replicas)

        return asyncio.run(ask())

    def led_by(self, node: NatsServer) -> list[str]:
        """What ``node`` leads: the job stream, the workers' consumer, the MQTT results stream."""
        import asyncio

        import nats
        import nats.errors
        import nats.js.errors

        async def ask() -> list[str]:
            nc = await nats.connect([n.url for n in self.cluster.nodes if n.running])
            js, led = nc.jetstream(timeout=5), []
            try:
                for what, info in [
                    ("the job stream", js.stream_info("QX_JOBS")),
                    ("the workers' consumer", js.consumer_info("QX_JOBS", "qx-solvers")),
                    ("NATS's MQTT QoS 1 stream", js.stream_info("$MQTT_msgs")),
                ]:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                        found = await info
                        if found.cluster is not None and found.cluster.leader == node.server_name:
                            led.append(what)
            finally:
                await nc.close()
            return led

        return asyncio.run(ask())

    def node(self, name: str | None) -> NatsServer | None:
        return next((n for n in self.cluster.nodes if n.server_name == name), None)

    def leader(self) -> NatsServer | None:
        return self.node(self._ask()[0])

    def wait_whole(self, timeout_s: float = 60) -> None:
        """Until the stream has a leader and both its replicas are current."""
        deadline = time.monotonic() + timeout_s
        while not all(self._ask()):
            if time.monotonic() > deadline:
                raise SystemExit("the job stream did not recover its three replicas")
            time.sleep(0.2)

    def lead_elsewhere(self, avoid: NatsServer, timeout_s: float = 60) -> None:
        """Until a node other than ``avoid`` (the sites' node) leads the stream."""
        deadline = time.monotonic() + timeout_s
        while (leader := self.leader()) is None or leader is avoid:
            if time.monotonic() > deadline:
                raise SystemExit("the job stream's leader did not move off the sites' node")
            if leader is avoid:
                self._ask(step_down=True)
            time.sleep(0.5)


def run_transport(
    kind: str, args: argparse.Namespace, pg: PostgresServer, rows: list[dict[str, Any]]
) -> None:
    print(f"{kind}:", flush=True)
    with tempfile.TemporaryDirectory(prefix="qxedge-scale-") as tmp, broker(kind) as (url, changes, server):
        folder = Path(tmp)
        dsn = pg.database(f"scale_{kind.replace('-', '_')}_{os.getpid()}")
        doc = {
            "broker": {"url": url},
            "solvers": {"workers": 0, "auto": ["exact"]},
            "probe": {"timeout_s": 60},
            "limits": {"max_jobs_in_flight_per_site": 100},
            "ledger": {"kind": "postgres", "dsn": dsn},
            "state_dir": str(folder / "state"),
            **changes,
        }
        env = {"QXEDGE_LEDGER_PASSWORD": pg.password}
        workers: list[Worker] = []
        sites = None
        try:
            started = time.monotonic()
            workers.append(Worker(folder, "w0", doc, env))
            workers[0].wait_ready()
            print(f"  worker w0 ready in {time.monotonic() - started:.1f} s", flush=True)
            job_qos = JOB_QOS.get(kind, 1) if args.job_qos is None else args.job_qos
            sites = Sites(mqtt_port(url), args.sites, args.n, args.deadline_ms, job_qos)

            def phase(
                name: str,
                rate: float,
                seconds: float,
                deadline_ms: int,
                midway: Any = None,
                killed: list[str] | None = None,
            ) -> None:
                p = Phase(name, len([w for w in workers if w.proc.poll() is None]))
                marks = [w.mark() for w in workers]
                assert sites is not None
                sites.send(p, rate, seconds, deadline_ms, midway)
                sites.drain(p)
                p.killed = ", ".join(killed or [])
                for w, mark in zip(workers, marks, strict=True):
                    p.solved.update(w.solved_since(mark))
                row = p.row(kind, job_qos)
                rows.append(row)
                print(
                    f"  {name:<10} W={row['workers']} sent {row['sent']:5d}  lost {row['lost']:4d} "
                    f"(unsent {row['of which unsent']})  re-sent {row['re-sent']:4d} "
                    f"(held {p.resends_held})  "
                    f"solves {row['solves logged']:5d}  solved twice {row['solved twice']:3d}  "
                    f"in time {row['in time %']}%  "
                    f"{row['jobs/s']} jobs/s  p50 {row['p50 ms']} ms  p99 {row['p99 ms']} ms"
                    + (f"  ({p.killed})" if p.killed else ""),
                    flush=True,
                )

            flood_jobs = max(50, round(args.rate * args.flood_s))
            if "steady" in args.phases:
                phase("steady W=1", args.rate, args.seconds, args.deadline_ms)
            if "flood" in args.phases:
                phase("flood W=1", FLOOD_RATE, flood_jobs / FLOOD_RATE, 60_000)
            workers.append(Worker(folder, "w1", doc, env))
            workers[1].wait_ready()
            if "steady" in args.phases:
                phase("steady W=2", args.rate, args.seconds, args.deadline_ms)
            if "flood" in args.phases:
                phase("flood W=2", FLOOD_RATE, flood_jobs / FLOOD_RATE, 60_000)
            if "kill" in args.phases and isinstance(server, NatsCluster):
                stream, entry = JobStream(server), server.nodes[0]
                for role in ("follower", "leader"):
                    stream.wait_whole()
                    if role == "leader":
                        stream.lead_elsewhere(entry)
                    leader = stream.leader()
                    victim = (
                        leader if role == "leader" else next(n for n in server.nodes[1:] if n is not leader)
                    )
                    assert victim is not None and victim is not entry
                    led = stream.led_by(victim)
                    label = (
                        f"node {server.nodes.index(victim)} (SIGKILL), leading "
                        f"{', '.join(led) if led else 'none of the job stream, its consumer, MQTT QoS 1'}"
                    )
                    phase(f"kill {role}", args.rate, args.seconds, args.deadline_ms, victim.kill, [label])
                    victim.launch()  # back, for the next phase: it catches up from the others
                    victim.wait_started()
            elif "kill" in args.phases:
                phase(
                    "kill",
                    args.rate,
                    args.seconds,
                    args.deadline_ms,
                    workers[1].kill,
                    ["worker w1 (SIGKILL)"],
                )
        finally:
            if sites is not None:
                sites.close()
            for w in workers:
                w.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="the rated aggregate rate, jobs per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="each steady (and kill) phase")
    parser.add_argument("--flood-s", type=float, default=8.0, help="a flood is rate x this many jobs")
    parser.add_argument("--n", type=int, default=12, help="variables per job (solver exact)")
    parser.add_argument("--deadline-ms", type=int, default=3000)
    parser.add_argument("--only", default=",".join(TRANSPORTS), help="comma-separated transports")
    parser.add_argument(
        "--job-qos",
        type=int,
        choices=(0, 1),
        help="the sites' job QoS on every transport (default: per broker)",
    )
    parser.add_argument("--phases", default="steady,flood,kill", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="mqtt and nats, short phases (< 60 s)")
    add_save_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.only, args.seconds, args.flood_s, args.phases = "mqtt,nats", 3.0, 3.0, "steady,kill"
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(TRANSPORTS))
    if unknown:
        parser.error(f"unknown transport {unknown[0]} (have: {', '.join(TRANSPORTS)})")
    results = Results(__file__, parser, args)
    rows: list[dict[str, Any]] = []
    skipped = []
    with PostgresServer() as pg:
        for kind in kinds:
            if (kind.startswith("nats") and not nats_available()) or (
                kind == "rabbitmq" and not rabbitmq_available()
            ):
                skipped.append(kind)
                print(f"{kind}: not installed, skipped")
                continue
            run_transport(kind, args, pg, rows)
    if rows:
        results.records(
            f"{args.sites} sites at {args.rate:g} jobs/s (n={args.n}, exact, deadline {args.deadline_ms} ms)",
            rows,
        )
    scaling = []
    for kind in kinds:
        floods = {
            r["workers"]: r["jobs/s"]
            for r in rows
            if r["transport"] == kind and r["phase"].startswith("flood")
        }
        if floods.get(1) and floods.get(2):
            ratio = floods[2] / floods[1]
            scaling.append(
                {
                    "transport": kind,
                    "1 worker jobs/s": floods[1],
                    "2 workers jobs/s": floods[2],
                    "ratio": round(ratio, 2),
                }
            )
            print(f"{kind}: throughput 1 -> 2 workers {floods[1]} -> {floods[2]} jobs/s, ratio {ratio:.2f}")
    if scaling:
        results.records("Throughput, 1 and 2 workers (floods of rate x flood-s jobs at once)", scaling)
    results.note(
        f"{os.cpu_count()} cores shared by the brokers, PostgreSQL, the sites and the workers; rated rate "
        f"{args.rate:g} jobs/s ({args.sites} sites, one job each every {args.sites / args.rate:.1f} s)"
    )
    if skipped:
        results.note(f"not installed, skipped: {', '.join(skipped)}")
    results.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
