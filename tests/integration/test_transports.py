"""Solver workers on each job transport (issue 23): mosquitto's shared subscription (MQTT 3.1.1 and 5), a
NATS JetStream work queue fed by NATS's MQTT, a RabbitMQ quorum queue bound to its MQTT plugin's
exchange. Agents speak MQTT to each; the servers are our own, on free ports (qxedge.testing.brokers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.core.errors import TransportError
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import optimum, random_bqm, wait_until
from qxedge.testing.brokers import NatsCluster, NatsServer, RabbitNode, nats_available

pytestmark = pytest.mark.integration
QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(prefer="mosquitto") as broker:
        yield broker


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A NATS server per test: one work-queue stream may bind qx.v1.*.jobs (it starts in ~0.1 s)."""
    if not nats_available():
        pytest.skip("needs nats-server (.ci/run installs it)")
    with NatsServer() as server:
        yield server


Site = tuple[str, dict[str, Any]]  # the agents' MQTT url, the workers' config changes


@pytest.fixture(params=["mqtt", "mqtt5", "nats", "rabbitmq"])
def datacenter(request: pytest.FixtureRequest) -> Site:
    """Where agents publish (MQTT) and how workers take the jobs, for each transport."""
    kind = request.param
    if kind in ("mqtt", "mqtt5"):
        broker: EmbeddedBroker = request.getfixturevalue("mosquitto")
        protocol = "5" if kind == "mqtt5" else "3.1.1"
        return broker.url, {"broker": BrokerConfig(url=broker.url, protocol=protocol)}
    if kind == "nats":
        nats: NatsServer = request.getfixturevalue("nats_server")
        return nats.mqtt_url, {"transport": {"kind": "nats", "url": nats.url, "ack_wait_s": 2}}
    node: RabbitNode = request.getfixturevalue("rabbit")
    queue = f"qx-solvers-{uuid.uuid4().hex[:6]}"
    return node.mqtt_url, {
        "transport": {
            "kind": "rabbitmq",
            "url": node.url.replace("guest:guest@", ""),
            "username": "guest",
            "password": "guest",
            "queue": queue,
        }
    }


def config(url: str, worker_id: str, changes: dict[str, Any]) -> DataCenterConfig:
    doc: dict[str, Any] = {
        "worker_id": worker_id,
        "broker": BrokerConfig(url=url),
        "solvers": SolversConfig(workers=0, auto=["exact", "greedy"]),
        "probe": {"timeout_s": 20},
        **changes,
    }
    return DataCenterConfig.model_validate(doc)


@contextlib.asynccontextmanager
async def workers(site: Site, count: int) -> AsyncIterator[list[SolverService]]:
    url, changes = site
    stop = asyncio.Event()
    services = [SolverService(config(url, f"w{i}", changes)) for i in range(count)]
    async with asyncio.TaskGroup() as tasks:
        for s in services:
            tasks.create_task(s.run(stop))
        for s in services:
            await asyncio.wait_for(s.ready.wait(), 60)
        try:
            yield services
        finally:
            stop.set()


async def test_an_agents_offload_is_answered_through_each_transport(datacenter: Site) -> None:
    """The agent's OffloadClient over MQTT -> a worker over its transport -> the result back over MQTT."""
    url, changes = datacenter
    agent_broker = changes.get("broker", BrokerConfig(url=url))
    bqms = [random_bqm(8, 0.5, seed=i) for i in range(3)]
    offload_cfg = OffloadConfig(deadline_ms=20_000, solver="exact")
    async with (
        workers(datacenter, 1) as (service,),
        MqttClient(agent_broker, role="agent-gumi") as mqtt,
        OffloadClient(mqtt, "gumi", offload_cfg) as offload,
    ):
        decisions = [await offload.solve(bqm) for bqm in bqms]
        # counted once the transport confirms the publish, which may come after the agent has it
        assert await wait_until(lambda: service.stats().results["ok"] == len(bqms))
    for bqm, decision in zip(bqms, decisions, strict=True):
        assert decision.source == "datacenter", decision.reason
        assert decision.energy == pytest.approx(optimum(bqm))
    assert service.stats().results["ok"] == 3 and service.probe.reached >= 1


@pytest.mark.parametrize("datacenter", ["nats", "rabbitmq"], indirect=True)
async def test_two_workers_never_solve_one_job_twice(datacenter: Site) -> None:
    url, _ = datacenter
    jobs = 20
    async with workers(datacenter, 2) as services, MqttClient(BrokerConfig(url=url), role="agent") as mqtt:
        results = await mqtt.subscribe("qx/v1/gumi/results/+", qos=1)
        for i in range(jobs):
            mqtt.publish("qx/v1/gumi/jobs", job("gumi", f"j{i}", deadline_ms=20_000), qos=1)
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while len(seen) < jobs:
                seen += [json.loads(p) for _, p in await results.next_batch()]
        # whatever a worker would send twice would come before this late marker job's answer
        mqtt.publish("qx/v1/gumi/jobs", job("gumi", "marker", deadline_ms=20_000), qos=1)
        async with asyncio.timeout(60):
            while not any(r["job_id"] == "marker" for r in seen):
                seen += [json.loads(p) for _, p in await results.next_batch()]
    ids = [r["job_id"] for r in seen if r["job_id"] != "marker"]
    assert sorted(ids) == sorted(f"j{i}" for i in range(jobs))  # each answered once
    assert all(r["status"] == "ok" for r in seen)
    assert sum(s.stats().received for s in services) == jobs + 1
    assert sum(s.stats().duplicates for s in services) == 0
    assert all(s.stats().received > 0 for s in services), "both workers took jobs"


def job(site: str, job_id: str, *, deadline_ms: int, solver: str = "exact", n: int = 8) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "job_id": job_id,
            "site": site,
            "problem": random_bqm(n, 0.5, seed=len(job_id)).to_serializable(use_bytes=False),
            "deadline_ms": deadline_ms,
            "submitted_at": time.time(),
            "solver": solver,
            "reply_to": f"qx/v1/{site}/results/{job_id}",
        }
    ).encode()


@pytest.mark.parametrize("datacenter", ["nats", "rabbitmq"], indirect=True)
async def test_a_worker_killed_mid_job_leaves_it_to_another(datacenter: Site, tmp_path: Path) -> None:
    """Worker A (a process) takes a job that solves for seconds (SA fills its budget) and is killed
    with SIGKILL: the broker hands the job to worker B, which answers it in time."""
    url, changes = datacenter
    doc = config(url, "doomed", changes).model_dump(mode="json")
    doc["transport"]["password"] = changes["transport"].get("password")
    (tmp_path / "dc.yaml").write_text(yaml.safe_dump(doc))
    log = tmp_path / "doomed.log"
    with log.open("wb") as out:
        doomed = await asyncio.create_subprocess_exec(
            *QXEDGE, "-v", "solver", "--config", str(tmp_path / "dc.yaml"), stdout=out, stderr=out
        )
    try:
        ready = await wait_until(
            lambda: "waiting for jobs through" in log.read_text() or doomed.returncode is not None, 90
        )
        assert ready and doomed.returncode is None, log.read_text()
        async with MqttClient(BrokerConfig(url=url), role="agent") as mqtt:
            results = await mqtt.subscribe("qx/v1/gumi/results/+", qos=1)
            mqtt.publish("qx/v1/gumi/jobs", job("gumi", "long", deadline_ms=8000, solver="sa", n=30), qos=1)
            assert await wait_until(lambda: "job gumi/long: queued" in log.read_text(), 30), log.read_text()
            async with workers(datacenter, 1) as (survivor,):
                doomed.kill()  # SIGKILL: no goodbye to the broker, the job never acknowledged
                await doomed.wait()
                async with asyncio.timeout(30):
                    answer = json.loads((await results.next_batch())[0][1])
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
    assert answer["job_id"] == "long" and answer["status"] == "ok", answer
    assert answer["worker"] == "w0"
    assert survivor.stats().received == 1


async def stream_leader(url: str, stream: str) -> str | None:
    """The server leading ``stream``, None while it has none (an election after a node died)."""
    import nats
    import nats.errors
    import nats.js.errors

    nc = await nats.connect(url.split(","))
    try:
        info = await nc.jetstream(timeout=2).stream_info(stream)
    except (nats.errors.Error, nats.js.errors.Error):
        return None
    finally:
        await nc.close()
    return info.cluster.leader if info.cluster is not None else None


async def test_a_three_node_nats_cluster_keeps_delivering_when_a_node_dies() -> None:
    """Stream and consumer with 3 replicas; the worker knows every node; the agent speaks MQTT to node 0.
    The stream's leader (or node 1, where node 0 leads) is killed with SIGKILL: once the two left have
    elected a leader (seconds: a job published over MQTT meanwhile is not stored, see docs/offload.md),
    jobs are answered again, each once, and nothing queued before the kill is lost."""
    if not nats_available():
        pytest.skip("needs nats-server")
    with NatsCluster(3) as cluster:
        entry = cluster.nodes[0]
        site: Site = (entry.mqtt_url, {"transport": {"kind": "nats", "url": cluster.url, "replicas": 3}})
        seen: list[dict[str, Any]] = []
        async with (
            workers(site, 1) as (service,),
            MqttClient(BrokerConfig(url=entry.mqtt_url), role="agent") as mqtt,
        ):
            results = await mqtt.subscribe("qx/v1/gumi/results/+", qos=1)

            async def answered(count: int) -> None:
                async with asyncio.timeout(60):
                    while len({r["job_id"] for r in seen}) < count:
                        seen.extend(json.loads(p) for _, p in await results.next_batch())

            for i in range(10):
                mqtt.publish("qx/v1/gumi/jobs", job("gumi", f"a{i}", deadline_ms=30_000), qos=1)
            await answered(10)
            leader = await stream_leader(cluster.url, "QX_JOBS")
            assert leader is not None
            victim = next((n for n in cluster.nodes[1:] if n.server_name == leader), cluster.nodes[1])
            victim.kill()

            async def new_leader() -> bool:
                return (await stream_leader(cluster.url, "QX_JOBS")) not in (None, victim.server_name)

            assert await wait_until(new_leader, 60, every_s=0.2)
            for i in range(10):
                mqtt.publish("qx/v1/gumi/jobs", job("gumi", f"b{i}", deadline_ms=30_000), qos=1)
            await answered(20)
    # a result may reach the agent twice (QoS 1: at least once, across the failover), a job is solved once
    assert {r["job_id"] for r in seen} == {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}
    assert all(r["status"] == "ok" for r in seen)
    assert service.stats().results["ok"] == 20


async def step_down_until(
    url: str, stream: str, wanted: Callable[[str], bool], timeout_s: float = 60
) -> None:
    """Ask ``stream``'s leader to step down until ``wanted(its server name)``."""
    import nats

    nc = await nats.connect(url.split(","))
    try:
        async with asyncio.timeout(timeout_s):
            while (now := await stream_leader(url, stream)) is None or not wanted(now):
                if now is not None:
                    with contextlib.suppress(Exception):
                        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_jobs_offloaded_while_a_nats_cluster_elects_are_answered_by_their_deadline() -> None:
    """Node 1 leads the job stream and NATS's MQTT QoS 1 stream and is killed with SIGKILL. Until the
    two left elect new leaders (4-9 s: neither stream stores anything), the worker takes jobs from its
    standby subscription and publishes results plainly; the agent publishes jobs at QoS 0
    (``offload.job_qos``: NATS's MQTT would close a QoS 1 publisher's connection meanwhile). Jobs
    offloaded right after the kill are answered by the data center by their 3 s deadline."""
    if not nats_available():
        pytest.skip("needs nats-server")
    bqms = [random_bqm(8, 0.5, seed=i) for i in range(5)]
    offload_cfg = OffloadConfig(deadline_ms=3000, solver="exact", job_qos=0)
    with NatsCluster(3) as cluster:
        entry, victim, other = cluster.nodes
        # the worker is on the nodes that live: one that loses its server misses what is sent meanwhile
        workers_url = f"{other.url},{entry.url}"
        site: Site = (entry.mqtt_url, {"transport": {"kind": "nats", "url": workers_url, "replicas": 3}})
        async with (
            workers(site, 1) as (service,),
            MqttClient(BrokerConfig(url=entry.mqtt_url), role="agent-gumi") as mqtt,
            OffloadClient(mqtt, "gumi", offload_cfg) as offload,
        ):
            warm = await offload.solve(bqms[0])  # NATS's MQTT has made its QoS 1 stream
            assert warm.source == "datacenter", warm.reason
            # new MQTT connections wait for a leader of the sessions' stream: keep it
            await step_down_until(cluster.url, "$MQTT_sess", lambda name: name != victim.server_name)
            for stream in ("QX_JOBS", "$MQTT_msgs"):
                await step_down_until(cluster.url, stream, lambda name: name == victim.server_name)
            victim.kill()
            decisions = await asyncio.gather(*(offload.solve(bqm) for bqm in bqms))
    for bqm, decision in zip(bqms, decisions, strict=True):
        assert decision.source == "datacenter", decision.reason
        assert decision.energy == pytest.approx(optimum(bqm))
    assert service.stats().results["ok"] == 6
    standby = getattr(service.transport, "standby", None)  # it takes jobs only while no leader is elected
    assert standby is not None and standby.taken >= 5


async def test_results_reach_the_agent_while_nats_mqtt_qos1_stream_elects() -> None:
    """Node 1 leads NATS's MQTT QoS 1 stream, where results are stored for the agents' QoS 1
    subscriptions, and holds the worker's connection; it is killed with SIGKILL. The result stores in
    flight get no answer, and none is stored until the stream has a leader again: each result goes out
    plainly after ``STORE_WAIT_S`` (not after nats-py's 5 s request timeout), and the agent, connected
    to node 0, gets it by the 3 s deadline of the job behind it."""
    from qxedge.hybrid.transports.config import TransportConfig
    from qxedge.hybrid.transports.nats import NatsTransport

    if not nats_available():
        pytest.skip("needs nats-server")
    with NatsCluster(3) as cluster:
        entry, victim = cluster.nodes[:2]
        transport_config = TransportConfig(kind="nats", url=victim.url, replicas=3)
        broker = BrokerConfig(url=entry.mqtt_url)
        arrived: dict[str, float] = {}
        async with (
            NatsTransport(transport_config, broker, "w0", 2) as transport,
            MqttClient(broker, role="agent") as mqtt,
        ):
            results = await mqtt.subscribe("qx/v1/gumi/results/+", qos=1)

            async def collect(ids: set[str], timeout_s: float) -> None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        while not ids <= arrived.keys():
                            for topic, _ in await results.next_batch():
                                arrived.setdefault(topic.rsplit("/", 1)[1], time.monotonic())

            async def stored() -> bool:  # NATS's MQTT makes its QoS 1 stream for the subscription
                await transport.publish("qx/v1/gumi/results/warm", b"{}")
                await collect({"warm"}, 0.5)
                return "warm" in arrived

            assert await wait_until(stored, 60)
            await step_down_until(cluster.url, "$MQTT_sess", lambda name: name != victim.server_name)
            await step_down_until(cluster.url, "$MQTT_msgs", lambda name: name == victim.server_name)
            victim.kill()
            sent = {f"r{i}": time.monotonic() for i in range(3)}
            for job_id in sent:
                await transport.publish(f"qx/v1/gumi/results/{job_id}", b"{}")
            await collect(set(sent), 3.5)
            assert await stream_leader(cluster.url, "$MQTT_msgs") is None, "a leader was elected meanwhile"
    seconds = {j: (arrived[j] - t if j in arrived else None) for j, t in sent.items()}
    assert all(s is not None and s < 3.0 for s in seconds.values()), f"seconds to each result: {seconds}"


def test_replicas_and_server_lists_are_for_nats() -> None:
    from pydantic import ValidationError

    cfg = DataCenterConfig.model_validate(
        {"transport": {"kind": "nats", "url": "nats://a:4222, nats://b:4222", "replicas": 3}}
    )
    assert cfg.transport.servers == ["nats://a:4222", "nats://b:4222"]
    for transport, expected in [
        ({"kind": "rabbitmq", "url": "amqp://a,amqp://b"}, "comma-separated urls are for kind nats"),
        ({"kind": "rabbitmq", "url": "amqp://a", "replicas": 3}, "replicas is for kind nats"),
        ({"kind": "nats", "url": "nats://a,mqtt://b"}, "for kind nats nats://"),
    ]:
        with pytest.raises(ValidationError) as caught:
            DataCenterConfig.model_validate({"transport": transport})
        assert expected in str(caught.value)


async def test_a_worker_on_a_broker_without_shared_subscriptions_exits_naming_it(rabbit: RabbitNode) -> None:
    """RabbitMQ's MQTT plugin grants $share/... and delivers nothing: the probe says so."""
    cfg = config(rabbit.mqtt_url, "w0", {"probe": {"timeout_s": 2}})
    with pytest.raises(ExceptionGroup) as caught:
        await SolverService(cfg).run(asyncio.Event())
    error = caught.value.exceptions[0]
    assert isinstance(error, TransportError)
    assert "granted $share/qx-solvers/qx/v1/+/jobs but delivered nothing" in str(error)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"mqtt": False}, "NATS: MQTT is not enabled"),
        ({"jetstream": False}, "NATS: JetStream is not enabled"),
    ],
)
async def test_a_nats_worker_exits_naming_what_nats_lacks(
    server: dict[str, bool], message: str, tmp_path: Path
) -> None:
    if not nats_available():
        pytest.skip("needs nats-server")
    with NatsServer(**server) as nats:
        doc = {
            "broker": {"url": nats.mqtt_url, "connect_timeout_s": 2},
            "transport": {"kind": "nats", "url": nats.url},
            "probe": {"timeout_s": 3},
            "solvers": {"workers": 0},
        }
        (tmp_path / "dc.yaml").write_text(yaml.safe_dump(doc))
        run = await asyncio.to_thread(
            subprocess.run,
            [*QXEDGE, "solver", "--config", str(tmp_path / "dc.yaml")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1, run.stderr[-2000:]
    assert message in run.stderr


def test_transport_config_errors_say_what_and_where() -> None:
    from pydantic import ValidationError

    for doc, expected in [
        ({"transport": {"kind": "nats"}}, "kind nats needs a url"),
        ({"transport": {"kind": "rabbitmq", "url": "nats://x"}}, "for kind rabbitmq amqp://"),
        ({"transport": {"kind": "mqtt", "url": "mqtt://x"}}, "kind mqtt takes no url"),
        ({"transport": {"kind": "kafka", "url": "x"}}, "'mqtt', 'nats' or 'rabbitmq'"),
    ]:
        with pytest.raises(ValidationError) as caught:
            DataCenterConfig.model_validate(doc)
        assert expected in str(caught.value) and "transport" in str(caught.value)
