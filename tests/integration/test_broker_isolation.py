"""Per-site isolation on NATS and RabbitMQ (issue 23), with the shipped examples (configs/nats,
configs/rabbitmq): a site can neither join the solvers' work queue, nor read another site's jobs or
results, nor take another site's client id; the workers and the sites' own offloads still work. The
mosquitto example (configs/mosquitto) goes through the same attacks in test_isolation.py."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Protocol

import nats
import nats.aio.msg
import nats.errors
import nats.js.errors
import pytest

from qxedge.connectors.embedded_broker import free_port, port_open
from qxedge.connectors.mqtt import BrokerConfig, Message, MqttClient
from qxedge.core.errors import BrokerUnavailable, ConnectorError
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import ROOT, random_bqm, wait_until_sync
from qxedge.testing.brokers import NatsServer, RabbitNode, nats_available, rabbitmq_available

pytestmark = pytest.mark.integration
PASSWORDS = {"solver": "solver-pw-1", "gumi": "gumi-pw-2", "osan": "osan-pw-3"}


@pytest.fixture
def nats_dc() -> Iterator[NatsServer]:
    if not nats_available():
        pytest.skip("needs nats-server (.ci/run installs it)")
    env = {f"QX_{user.upper()}_PASSWORD": pw for user, pw in PASSWORDS.items()}
    with NatsServer(config=(ROOT / "configs" / "nats" / "nats-server.conf").read_text(), env=env) as server:
        yield server


def login(url: str, user: str, **changes: object) -> BrokerConfig:
    return BrokerConfig.model_validate(
        {"url": url, "username": user, "password": PASSWORDS[user], "connect_timeout_s": 5, **changes}
    )


class Login(Protocol):
    """A user's broker config (username, password, TLS), with ``changes`` (e.g. the client id)."""

    def __call__(self, user: str, **changes: object) -> BrokerConfig: ...


@contextlib.asynccontextmanager
async def worker(broker: BrokerConfig, transport: dict[str, object]) -> AsyncIterator[SolverService]:
    cfg = DataCenterConfig.model_validate(
        {
            "broker": broker,
            "transport": transport,
            "solvers": SolversConfig(workers=0, auto=["exact"]),
            "probe": {"timeout_s": 20},
        }
    )
    service, stop = SolverService(cfg), asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run(stop))
        await asyncio.wait_for(service.ready.wait(), 60)
        try:
            yield service
        finally:
            stop.set()


@contextlib.asynccontextmanager
async def spy(
    login: Login, topic_filter: str, on: MqttClient | None = None
) -> AsyncIterator[Callable[[], Awaitable[list[Message]]]]:
    """gumi subscribing ``topic_filter`` on a connection of its own (or on ``on``, where a user has one
    connection only); yields what it received by the time a marker it sends itself afterwards comes
    back (what the broker let through would have come before it, in order). The broker may refuse the
    subscription (mosquitto answers so, RabbitMQ closes the connection): then nothing can come."""
    async with contextlib.AsyncExitStack() as stack:
        client = on or await stack.enter_async_context(MqttClient(login("gumi"), role="spy-gumi"))
        try:
            spied = await client.subscribe(topic_filter, qos=1)
        except ConnectorError:
            spied = None

        async def received() -> list[Message]:
            if spied is None:
                return []
            marker = await client.subscribe("qx/v1/gumi/marker", qos=1)
            client.publish("qx/v1/gumi/marker", b"end", qos=1)
            assert [p for _, p in await asyncio.wait_for(marker.next_batch(), 10)] == [b"end"]
            return spied.drain()

        yield received


async def check_isolation(
    login: Login,
    transport: dict[str, object],
    *,
    solver: str = "solver",
    client_ids_bound: bool = True,
    one_connection_per_user: bool = False,
) -> None:
    """gumi tries to listen in on osan and on the solvers (joining their shared group, subscribing
    every site's jobs, osan's results); osan's offloads are answered all the same and nothing of them
    reaches gumi; gumi taking osan's client id does not kick osan off. ``one_connection_per_user``:
    the broker binds the client id to the username (mosquitto), so gumi spies on its one connection."""
    offload = OffloadConfig(deadline_ms=20_000, solver="exact")
    async with (
        worker(login(solver), transport) as service,
        MqttClient(login("gumi"), role="uplink-gumi") as gumi,
        MqttClient(login("osan", client_id="qxedge-uplink-osan"), role="uplink-osan") as osan,
    ):
        on = gumi if one_connection_per_user else None
        async with (
            spy(login, "$share/qx-solvers/qx/v1/+/jobs", on) as shared_jobs,
            spy(login, "qx/v1/+/jobs", on) as jobs,
            spy(login, "qx/v1/osan/results/+", on) as results,
        ):
            async with OffloadClient(osan, "osan", offload) as osan_offload:
                for seed in range(3):
                    decision = await osan_offload.solve(random_bqm(6, 0.5, seed=seed))
                    assert decision.source == "datacenter", decision.reason
            async with OffloadClient(gumi, "gumi", offload) as gumi_offload:
                assert (await gumi_offload.solve(random_bqm(6, 0.5, seed=9))).source == "datacenter"
            for received in (shared_jobs, jobs, results):
                got = await received()
                assert all("/gumi/" in topic for topic, _ in got), got
        if client_ids_bound:
            # gumi takes osan's client id: osan stays connected, its session untouched
            with contextlib.suppress(ConnectorError):
                async with MqttClient(login("gumi", client_id="qxedge-uplink-osan"), role="thief"):
                    await asyncio.sleep(0)
            own = await osan.subscribe("qx/v1/osan/marker", qos=1)
            osan.publish("qx/v1/osan/marker", b"end", qos=1)
            assert [p for _, p in await asyncio.wait_for(own.next_batch(), 10)] == [b"end"]
            assert osan.connected and osan.reconnects == 0, "gumi kicked osan off with its client id"
    assert service.stats().by_site.get(("osan", "ok")) == 3


async def test_nats_accounts_isolate_sites(nats_dc: NatsServer) -> None:
    """The MQTT attacks, and gumi on NATS itself: a subscription to every subject of its account sees
    its own jobs go by and nothing of osan's; the solvers' work queue does not exist for it."""
    transport = {"kind": "nats", "url": nats_dc.url, "username": "solver", "password": PASSWORDS["solver"]}
    nc = await nats.connect(nats_dc.url, user="gumi", password=PASSWORDS["gumi"])
    try:
        seen: list[str] = []

        async def note(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.subject)

        await nc.subscribe(">", cb=note)
        await nc.flush()
        await check_isolation(partial(login, nats_dc.mqtt_url), transport)
        await nc.flush()
        assert "qx.v1.gumi.jobs" in seen  # the wildcard was live: gumi's own job went by
        assert not [s for s in seen if s.startswith(("qx.", "$MQTT.msgs.")) and "osan" in s], seen
        with pytest.raises((nats.js.errors.Error, nats.errors.Error)):
            await nc.jetstream(timeout=3).pull_subscribe(
                "qx.v1.*.jobs", durable="qx-solvers", stream="QX_JOBS"
            )
    finally:
        await nc.close()


async def test_nats_results_published_plainly_reach_their_site_alone(nats_dc: NatsServer) -> None:
    """A result a worker publishes plainly (NATS's MQTT QoS 1 stream has no leader: a cluster node
    lost) reaches its own site's MQTT subscribers, and no other site's."""
    solver = await nats.connect(nats_dc.url, user="solver", password=PASSWORDS["solver"])
    try:
        async with MqttClient(login(nats_dc.mqtt_url, "gumi"), role="uplink-gumi") as gumi:
            results = await gumi.subscribe("qx/v1/+/results/+", qos=1)
            await solver.publish("qx.v1.osan.results.o1", b"osan's")
            await solver.publish("qx.v1.gumi.results.g1", b"gumi's")
            await solver.flush()
            got = await asyncio.wait_for(results.next_batch(), 10)
    finally:
        await solver.close()
    assert got[0] == ("qx/v1/gumi/results/g1", b"gumi's")  # osan's, sent first, would come first


@pytest.fixture(scope="module")
def rabbit_dc() -> Iterator[RabbitNode]:
    """A RabbitMQ node of its own set up from configs/rabbitmq: its rabbitmq.conf, its advanced.config
    with `qxedge rabbitmq-auth` answering on a free port, the users and permissions of setup.sh."""
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server (.ci/run installs it)")
    folder = ROOT / "configs" / "rabbitmq"
    port = free_port()
    advanced = (folder / "advanced.config").read_text().replace("127.0.0.1:8090", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}/auth/user" in advanced
    cli = [sys.executable, "-m", "qxedge.agent.cli", "rabbitmq-auth", "--listen", f"127.0.0.1:{port}"]
    with tempfile.TemporaryFile() as log:
        auth = subprocess.Popen([*cli, "--trusted", "solver"], stdout=log, stderr=log)
        try:
            up = wait_until_sync(lambda: auth.poll() is not None or port_open("127.0.0.1", port, 0.2), 30)
            assert up and auth.poll() is None, log.seek(0) or log.read().decode()
            with RabbitNode(
                extra_config=(folder / "rabbitmq.conf").read_text(),
                plugins=("rabbitmq_auth_backend_http",),
                advanced_config=advanced,
            ) as rabbit:
                env = {f"QX_{user.upper()}_PASSWORD": pw for user, pw in PASSWORDS.items()}
                ctl = f"{rabbit.dir}/rabbitmqctl-here"
                with open(ctl, "w") as f:
                    f.write(f'#!/bin/sh\nexec /usr/lib/rabbitmq/bin/rabbitmqctl -n {rabbit.name} "$@"\n')
                subprocess.run(["chmod", "+x", ctl], check=True)
                setup = ["sh", str(folder / "setup.sh")]
                subprocess.run(setup, check=True, env={**rabbit._env(), **env, "RABBITMQCTL": ctl})
                yield rabbit
        finally:
            auth.terminate()
            try:
                auth.wait(10)
            except subprocess.TimeoutExpired:
                auth.kill()
                auth.wait()


async def test_rabbitmq_permissions_isolate_sites(rabbit_dc: RabbitNode) -> None:
    url = rabbit_dc.url.replace("guest:guest@", "")
    transport = {"kind": "rabbitmq", "url": url, "username": "solver", "password": PASSWORDS["solver"]}
    await check_isolation(partial(login, rabbit_dc.mqtt_url), transport)


async def test_rabbitmq_refuses_a_login_with_another_sites_client_id(rabbit_dc: RabbitNode) -> None:
    """RabbitMQ asks `qxedge rabbitmq-auth` at each login: gumi with osan's client id is refused before
    the broker would close osan's connection; with its own, or with none (a generated one), it is in;
    no login at all is refused too (mqtt.allow_anonymous = false, guest deleted)."""
    async with MqttClient(
        login(rabbit_dc.mqtt_url, "osan", client_id="qxedge-uplink-osan"), role="o"
    ) as osan:
        for stolen in ("qxedge-uplink-osan", "qxedge-uplink-osan-0123abcd", "osan", "qxedge-uplink-x-osan"):
            with pytest.raises(BrokerUnavailable):
                async with MqttClient(login(rabbit_dc.mqtt_url, "gumi", client_id=stolen), role="thief"):
                    pass
        async with MqttClient(login(rabbit_dc.mqtt_url, "gumi", client_id="qxedge-uplink-gumi"), role="g"):
            pass
        own = await osan.subscribe("qx/v1/osan/marker", qos=1)
        osan.publish("qx/v1/osan/marker", b"end", qos=1)
        assert [p for _, p in await asyncio.wait_for(own.next_batch(), 10)] == [b"end"]
        assert osan.connected and osan.reconnects == 0
    anonymous = BrokerConfig.model_validate({"url": rabbit_dc.mqtt_url, "connect_timeout_s": 5})
    with pytest.raises(BrokerUnavailable):
        async with MqttClient(anonymous, role="stranger"):
            pass
