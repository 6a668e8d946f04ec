"""Per-site isolation at the data center, with mosquitto started from configs/mosquitto/ itself
(paths and port rewritten to a temporary folder): TLS, the dynamic security plugin set up by
configs/mosquitto/dynsec.sh."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qxedge.connectors.embedded_broker import free_port, port_open
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.core.errors import BrokerUnavailable, ConnectorError
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import DataCenterConfig, SolverService
from qxedge.testing import ROOT, random_bqm, wait_until_sync

from .test_broker_isolation import check_isolation
from .test_tls import make_pki

pytestmark = pytest.mark.integration
PASSWORDS = {
    "admin": "admin-pw-0",
    "gumi": "gumi-pw-1",
    "osan": "osan-pw-2",
    "solver-1": "solver-pw-3",
    "solver-2": "solver-pw-4",
    "ingest": "ingest-pw-5",
    "historian": "historian-pw-6",
}
DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


@pytest.fixture
def datacenter_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not DYNSEC.exists():
        pytest.skip(f"needs mosquitto's dynamic security plugin ({DYNSEC})")
    pki = make_pki(tmp_path)
    port = free_port()
    conf = (ROOT / "configs" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/etc/mosquitto/certs/ca.pem", str(pki["ca"]))
        .replace("/etc/mosquitto/certs/server.pem", str(pki["cert"]))
        .replace("/etc/mosquitto/certs/server.key", str(pki["key"]))
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
        .replace("listener 8883", f"listener {port} 127.0.0.1")
    )
    if os.geteuid() == 0:
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    ctrl = ["mosquitto_ctrl", "dynsec", "init", str(tmp_path / "dynamic-security.json")]
    subprocess.run([*ctrl, "admin", PASSWORDS["admin"]], check=True, capture_output=True)
    log = (tmp_path / "broker.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        up = wait_until_sync(lambda: proc.poll() is not None or port_open("127.0.0.1", port, 0.2), 15)
        assert up and proc.poll() is None, (tmp_path / "broker.log").read_text()
        env = {f"QX_{user.upper().replace('-', '_')}_PASSWORD": pw for user, pw in PASSWORDS.items()}
        setup = ["sh", str(ROOT / "configs" / "mosquitto" / "dynsec.sh")]
        where = {"QX_MQTT_PORT": str(port), "QX_MQTT_CAFILE": str(pki["ca"])}
        subprocess.run(setup, check=True, env={**os.environ, **env, **where})
        yield port, pki["ca"]
    finally:
        proc.terminate()
        proc.wait(10)


def creds(port: int, ca: Path, user: str | None) -> BrokerConfig:
    auth = {"username": user, "password": PASSWORDS[user]} if user else {}
    return BrokerConfig.model_validate(
        {"url": f"mqtts://localhost:{port}", "tls": {"ca_file": ca}, "connect_timeout_s": 5, **auth}
    )


def job(site: str, job_id: str) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "job_id": job_id,
            "site": site,
            "problem": random_bqm(6, 0.5, 1).to_serializable(use_bytes=False),
            "deadline_ms": 5000,
            "submitted_at": time.time(),
            "solver": "exact",
            "reply_to": f"qx/v1/{site}/results/{job_id}",
        }
    ).encode()


async def test_sites_are_isolated_and_strangers_are_refused(datacenter_broker: tuple[int, Path]) -> None:
    port, ca = datacenter_broker
    with pytest.raises(BrokerUnavailable, match="refused"):
        async with MqttClient(creds(port, ca, None), role="stranger"):
            pass
    solver = SolverService(
        DataCenterConfig(broker=creds(port, ca, "solver-1"), solvers=SolversConfig(workers=0))
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(solver.run(stop))
        await asyncio.wait_for(solver.ready.wait(), 30)
        async with (
            MqttClient(creds(port, ca, "gumi"), role="gumi") as gumi,
            MqttClient(creds(port, ca, "osan"), role="osan") as osan,
        ):
            try:  # mosquitto may refuse the subscription, or grant it and deliver nothing: both isolate
                peek = await gumi.subscribe("qx/v1/osan/results/#", qos=1)
            except ConnectorError:
                peek = None
            own = await osan.subscribe("qx/v1/osan/results/#", qos=1)
            results = await gumi.subscribe("qx/v1/gumi/results/+", qos=1)
            gumi.publish(
                "qx/v1/osan/jobs", job("osan", "spoofed"), qos=1
            )  # as another site: dropped by the ACL
            gumi.publish("qx/v1/gumi/jobs", job("gumi", "own"), qos=1)
            osan.publish(
                "qx/v1/osan/results/private", b'{"v": 1, "job_id": "private", "status": "ok"}', qos=1
            )
            batch = await asyncio.wait_for(results.next_batch(), 30)
            assert [json.loads(p)["job_id"] for _, p in batch] == ["own"]
            assert [t for t, _ in await asyncio.wait_for(own.next_batch(), 10)] == [
                "qx/v1/osan/results/private"
            ]
            # osan's result reached osan, so the broker has routed it; a marker gumi sends itself now
            # reaches gumi's connection after it, had the ACL let it through
            marker = await gumi.subscribe("qx/v1/gumi/marker", qos=1)
            gumi.publish("qx/v1/gumi/marker", b"end", qos=1)
            assert [p for _, p in await asyncio.wait_for(marker.next_batch(), 10)] == [b"end"]
            assert peek is None or peek.drain() == [], "gumi saw osan's results"
        stop.set()
    assert solver.stats().received == 1 and solver.stats().by_site == {("gumi", "ok"): 1}


async def test_the_ingest_user_reads_telemetry_and_confirms_nothing_else(
    datacenter_broker: tuple[int, Path],
) -> None:
    port, ca = datacenter_broker
    async with (
        MqttClient(creds(port, ca, "gumi"), role="gumi") as gumi,
        MqttClient(creds(port, ca, "ingest"), role="ingest") as ingest,
    ):
        telemetry = await ingest.subscribe("qx/v1/+/telemetry", qos=1)
        confirms = await gumi.subscribe("qx/v1/gumi/confirm", qos=1)
        own = await gumi.subscribe("qx/v1/gumi/setpoints/#", qos=1)
        gumi.publish("qx/v1/gumi/telemetry", b'{"v": 1, "seq": 0}', qos=1)
        assert [t for t, _ in await asyncio.wait_for(telemetry.next_batch(), 10)] == ["qx/v1/gumi/telemetry"]
        ingest.publish("qx/v1/gumi/setpoints/p1", b'{"value": 1}', qos=1)  # not its to write: dropped
        ingest.publish("qx/v1/gumi/confirm", b'{"stream": "telemetry", "seqs": [[0, 0]]}', qos=1)
        assert [t for t, _ in await asyncio.wait_for(confirms.next_batch(), 10)] == ["qx/v1/gumi/confirm"]
        # the confirm came after the setpoint from the same client on the same connection to gumi:
        # had the ACL let the setpoint through, it would be in ``own`` already
        assert own.drain() == [], "the ingest user wrote a setpoint"


async def test_a_site_cannot_take_another_sites_client_id(datacenter_broker: tuple[int, Path]) -> None:
    """The client id is the username (use_username_as_clientid): gumi connecting with osan's uplink id
    neither kicks osan off nor touches its session."""
    port, ca = datacenter_broker
    osan_cfg = creds(port, ca, "osan").model_copy(update={"client_id": "qxedge-uplink-osan"})
    thief = creds(port, ca, "gumi").model_copy(update={"client_id": "qxedge-uplink-osan"})
    async with MqttClient(osan_cfg, role="uplink-osan") as osan:
        own = await osan.subscribe("qx/v1/osan/results/+", qos=1)
        async with MqttClient(thief, role="thief"):
            osan.publish("qx/v1/osan/results/check", b"{}", qos=1)
            assert [t for t, _ in await asyncio.wait_for(own.next_batch(), 10)] == [
                "qx/v1/osan/results/check"
            ]
            assert osan.connected and osan.reconnects == 0


async def test_a_site_can_neither_join_the_solvers_nor_read_another_site(
    datacenter_broker: tuple[int, Path],
) -> None:
    """The attacks of test_broker_isolation.py on the shipped mosquitto: the plugin refuses gumi's
    subscriptions to $share/qx-solvers/qx/v1/+/jobs, to every site's jobs and to osan's results (an
    acl_file grants the first: gumi joins the group and the jobs handed to it are lost), and the client
    id is the username, so gumi cannot take osan's."""
    port, ca = datacenter_broker

    def login(user: str, **changes: object) -> BrokerConfig:
        return creds(port, ca, user).model_copy(update=changes)

    async with MqttClient(login("gumi"), role="gumi") as gumi:
        for attack in ("$share/qx-solvers/qx/v1/+/jobs", "$share/qx-solvers/qx/v1/osan/jobs", "qx/v1/+/jobs"):
            with pytest.raises(ConnectorError):
                await gumi.subscribe(attack, qos=1)
    transport = {"kind": "mqtt"}
    await check_isolation(login, transport, solver="solver-1", one_connection_per_user=True)


async def test_the_historian_reads_history_through_its_group_and_sites_cannot_join_it(
    datacenter_broker: tuple[int, Path],
) -> None:
    port, ca = datacenter_broker
    async with (
        MqttClient(creds(port, ca, "gumi"), role="gumi") as gumi,
        MqttClient(creds(port, ca, "historian"), role="historian") as historian,
    ):
        batches = await historian.subscribe("$share/qx-historians/qx/v1/+/history", qos=1)
        with pytest.raises(ConnectorError):
            await gumi.subscribe("$share/qx-historians/qx/v1/+/history", qos=1)
        gumi.publish("qx/v1/gumi/history", b'{"v": 1, "seq": 0}', qos=1)
        assert [t for t, _ in await asyncio.wait_for(batches.next_batch(), 10)] == ["qx/v1/gumi/history"]
