"""The OPC UA connector against asyncua's own Server on a free port: subscriptions, security, reconnect
after a server restart, writes with read-back, config validation, and a full agent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from pydantic import ValidationError

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker, free_port
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.opcua import OpcUaConfig, OpcUaConnector, parse_node
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.errors import ConfigError, ConnectorError
from qxedge.testing import Watcher, edge_config, plant_server, wait_until
from qxedge.testing.opcua_pki import make_pki
from qxedge.testing.opcua_plant import ASSETS, SIGNALS

pytestmark = pytest.mark.integration


# --- certificates (RSA: Basic256Sha256 needs it), made once per module -------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("opcua-pki"))


# --- the connector under test ------------------------------------------------------------------------


class Sink:
    """A PlantLink whose readings land in a list; ``wait_for`` waits on a predicate."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []
        self._changed = asyncio.Event()
        self.link = PlantLink("test", BrokerConfig(), self._readings, self._propose)

    def _readings(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)
        self._changed.set()

    async def _propose(self, asset: str, value: float, source: str, data_ts: float) -> None:
        return None

    def readings(self) -> list[tuple[str, str, float, float]]:
        return [r for b in self.batches for r in zip(b.assets, b.signals, b.ts, b.values, strict=True)]

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, str, float, float]]], bool], within: float = 20
    ) -> bool:
        deadline = time.monotonic() + within
        while not predicate(self.readings()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True


def config(url: str, **extra: Any) -> OpcUaConfig:
    doc: dict[str, Any] = {
        "endpoint": url,
        "nodes": [
            {"node": "ns=2;s=Line1.pump1.Temp", "asset": "line1/pump1", "signal": "temp"},
            {"node": "0:Objects/2:Line1/2:pump1/2:Power", "asset": "line1/pump1", "signal": "power"},
            {"node": "ns=2;s=Line1.pump2.Temp", "asset": "line1/pump2", "signal": "temp"},
            {"node": "0:Objects/2:Line1/2:pump2/2:Power", "asset": "line1/pump2", "signal": "power"},
        ],
        "setpoints": {
            "line1/pump1": {"node": "0:Objects/2:Line1/2:pump1/2:LoadCap", "type": "Double"},
            "line1/mode": {
                "node": "ns=2;s=Line1.Mode",
                "type": "Int16",
                "scale": 100,
                "readback_signal": "mode",
            },
            "line1/wrongtype": {"node": "ns=2;s=Line1.pump2.LoadCap", "type": "Int16"},
        },
        "sampling_interval_ms": 0,
        "publishing_interval_ms": 50,
        "keepalive_s": 1,
        "request_timeout_s": 2,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1,
        **extra,
    }
    return OpcUaConfig.model_validate(doc)


@contextlib.asynccontextmanager
async def running(cfg: OpcUaConfig) -> AsyncIterator[tuple[OpcUaConnector, Sink]]:
    connector = cfg.connector("connectors[0]")
    sink = Sink()
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(connector.run(sink.link), name=connector.name)
        try:
            yield connector, sink
        finally:
            task.cancel()


async def connected(connector: OpcUaConnector, within: float = 20) -> None:
    try:
        await asyncio.wait_for(connector.connected.wait(), within)
    except TimeoutError:
        pytest.fail(f"not connected: {connector.stats.last_error}")


# --- tests -------------------------------------------------------------------------------------------


async def test_subscription_delivers_batches_with_source_timestamps() -> None:
    async with plant_server(free_port()) as plant, running(config(plant.url)) as (connector, sink):
        await connected(connector)
        stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        await plant.set("pump1", "temp", 71.5, stamp)  # a node id
        await plant.set("pump2", "power", 15.25)  # a browse path; server time
        assert await sink.wait_for(
            lambda rs: (
                ("line1/pump1", "temp", stamp.timestamp(), 71.5) in rs
                and any(r[:2] == ("line1/pump2", "power") and r[3] == 15.25 for r in rs)
            )
        ), sink.readings()
        before = time.time()
        # many changes at once: they arrive in a few batches, not one call per notification
        for k in range(1, 51):
            for asset in ASSETS:
                for signal in SIGNALS:
                    await plant.set(asset, signal, float(k))
        assert await sink.wait_for(lambda rs: sum(1 for r in rs if r[3] == 50.0) == 4)
        recent = [r for r in sink.readings() if r[2] >= before - 5]
        assert {(a, s) for a, s, _, _ in recent} == {(f"line1/{a}", s) for a in ASSETS for s in SIGNALS}
        assert connector.stats.deliveries < connector.stats.readings / 4, connector.stats
        # bad device data is counted and skipped, never raised: a sensor failure status
        failed = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
        await plant.variables["pump1", "temp"].write_value(
            ua.DataValue(ua.Variant(999.0, ua.VariantType.Double), StatusCode=failed)
        )
        await plant.set("pump1", "temp", 72.0)
        assert await sink.wait_for(lambda rs: rs[-1][:2] == ("line1/pump1", "temp") and rs[-1][3] == 72.0)
        assert connector.stats.skipped >= 1 and connector.connected.is_set()
        assert 999.0 not in [r[3] for r in sink.readings()]


@pytest.mark.parametrize(("mode", "identity"), [("SignAndEncrypt", "username"), ("Sign", "certificate")])
async def test_basic256sha256_with_username_or_user_certificate(
    pki: dict[str, Path], mode: str, identity: str
) -> None:
    policy = getattr(ua.SecurityPolicyType, f"Basic256Sha256_{mode}")
    security = {
        "policy": "Basic256Sha256",
        "mode": mode,
        "certificate": str(pki["client_cert"]),
        "private_key": str(pki["client_key"]),
        "server_certificate": str(pki["server_cert"]),
    }
    if identity == "username":
        good: dict[str, Any] = {"username": "operator", "password_file": str(pki["password_file"])}
        bad: dict[str, Any] = {"username": "operator", "password": "wrong"}
    else:
        good = {"user_certificate": str(pki["user_cert"]), "user_private_key": str(pki["user_key"])}
        bad = {"user_certificate": str(pki["client_cert"]), "user_private_key": str(pki["client_key"])}
    async with plant_server(free_port(), pki, [policy]) as plant:
        cfg = config(plant.url, security=security, **good)
        assert cfg.security.application_uri == "urn:qxedge:test:client"  # read from the certificate
        async with running(cfg) as (connector, sink):
            await connected(connector)
            await plant.set("pump1", "temp", 64.0)
            assert await sink.wait_for(lambda rs: any(r[3] == 64.0 for r in rs))
            await connector.write("line1/pump1", 0.7)
            assert await plant.setpoints["pump1"].read_value() == 0.7
        # a wrong identity never gets a session: the connector keeps retrying and says why
        async with running(config(plant.url, security=security, **bad)) as (connector, _):
            assert await wait_until(lambda: connector.stats.reconnects >= 1, 10)
            assert not connector.connected.is_set()
            assert "BadUserAccessDenied" in connector.stats.last_error, connector.stats.last_error
            with pytest.raises(ConnectorError, match="not connected"):
                await connector.write("line1/pump1", 0.5)
    if mode == "Sign":
        return
    # and without security the server (SignAndEncrypt only) is not reachable either
    async with plant_server(free_port(), pki) as plant, running(config(plant.url)) as (connector, _):
        assert await wait_until(lambda: connector.stats.reconnects >= 1, 10)
        assert not connector.connected.is_set()


async def test_a_cancel_that_asyncua_swallows_still_stops_the_connector() -> None:
    connector = config(f"opc.tcp://127.0.0.1:{free_port()}/qxedge/").connector("connectors[0]")
    inside = asyncio.Event()

    @contextlib.asynccontextmanager
    async def swallowing_session() -> AsyncIterator[Any]:
        inside.set()
        # what asyncua's Client._cancel_task does with a cancel that lands while it waits
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        raise ConnectionError("torn down")
        yield  # pragma: no cover

    connector._session = swallowing_session  # type: ignore[method-assign]
    task = asyncio.create_task(connector.run(Sink().link))
    await inside.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done and task.cancelled(), "the connector went on reconnecting after its cancel"


async def test_reconnects_and_resubscribes_after_a_server_restart() -> None:
    port = free_port()
    cfg = config(f"opc.tcp://127.0.0.1:{port}/qxedge/")
    async with running(cfg) as (connector, sink):
        async with plant_server(port) as plant:
            await connected(connector)
            await plant.set("pump1", "temp", 1.0)
            assert await sink.wait_for(lambda rs: any(r[3] == 1.0 for r in rs))
        # server gone: the watchdog notices, the connector backs off and retries
        assert await wait_until(lambda: not connector.connected.is_set(), 20)
        assert not connector.connected.is_set()
        with pytest.raises(ConnectorError, match="not connected"):
            await connector.write("line1/pump1", 0.5)
        async with plant_server(
            port
        ) as plant:  # a new server on the same port: no sessions, no subscriptions
            await connected(connector, 30)
            await plant.set("pump2", "power", 2.0)
            await plant.set("pump1", "temp", 3.0)
            assert await sink.wait_for(
                lambda rs: any(r[3] == 3.0 for r in rs) and any(r[3] == 2.0 for r in rs)
            )
            await connector.write("line1/pump1", 0.8)
            assert await plant.setpoints["pump1"].read_value() == 0.8
        assert connector.stats.connects >= 2 and connector.stats.reconnects >= 1


class FreezingProxy:
    """A TCP relay that can go silent while keeping its connections open: a hung server or a cut
    network path, which no socket error reveals."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    def freeze(self, frozen: bool) -> None:
        if frozen:
            self._thawed.clear()
        else:
            self._thawed.set()

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await self._thawed.wait()  # frozen: hold the bytes, keep the socket open
                    dst.write(data)
                    await dst.drain()
            dst.close()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(pump(reader, up_writer), name="proxy-up")
            tasks.create_task(pump(up_reader, writer), name="proxy-down")


async def test_watchdog_detects_a_silent_server() -> None:
    async with plant_server(free_port()) as plant:
        target = int(plant.url.split(":")[2].split("/")[0])
        async with FreezingProxy(target) as proxy:
            cfg = config(f"opc.tcp://127.0.0.1:{proxy.port}/qxedge/", request_timeout_s=1)
            async with running(cfg) as (connector, sink):
                await connected(connector)
                await plant.set("pump1", "temp", 5.0)
                assert await sink.wait_for(lambda rs: any(r[3] == 5.0 for r in rs))
                proxy.freeze(True)  # TCP stays up, nothing gets through
                assert await wait_until(lambda: not connector.connected.is_set(), 20)
                assert not connector.connected.is_set()
                proxy.freeze(False)
                await connected(connector, 30)
                await plant.set("pump1", "temp", 6.0)
                assert await sink.wait_for(lambda rs: any(r[3] == 6.0 for r in rs))
                assert connector.stats.connects >= 2


async def test_write_reads_back_and_reports_refusals() -> None:
    async with plant_server(free_port()) as plant, running(config(plant.url)) as (connector, sink):
        await connected(connector)
        await connector.write("line1/pump1", 0.6)
        assert await plant.setpoints["pump1"].read_value() == 0.6
        assert ("line1/pump1", "load_cap") in [r[:2] for r in sink.readings()]
        assert [r[3] for r in sink.readings() if r[1] == "load_cap"] == [0.6]
        await connector.write("line1/mode", 0.42)  # Int16 with scale 100: 42 on the wire
        assert await plant.setpoints["mode"].read_value() == 42
        assert [r[3] for r in sink.readings() if r[1] == "mode"] == [0.42]
        with pytest.raises(ConnectorError, match="BadTypeMismatch"):  # the node is a Double
            await connector.write("line1/wrongtype", 1)
        with pytest.raises(ConnectorError, match="out of the range of Int16"):
            await connector.write("line1/mode", 400.0)
        assert connector.writes("line1/pump1") and not connector.writes("line1/pump2")
        assert connector.stats.write_errors == 2


def _errors(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        OpcUaConfig.model_validate(doc)
    return str(info.value)


def test_config_is_validated_with_clear_errors(pki: dict[str, Path], tmp_path: Path) -> None:
    node = {"node": "ns=2;s=A.Temp", "asset": "line1/a", "signal": "temp"}
    base = {"endpoint": "opc.tcp://plc:4840", "nodes": [node]}
    assert OpcUaConfig.model_validate(base).connector("x").name == "x"
    assert "expected opc.tcp://" in _errors({**base, "endpoint": "http://plc:4840"})
    assert "not in the endpoint" in _errors({**base, "endpoint": "opc.tcp://u:p@plc:4840"})
    assert "unknown" in _errors({**base, "polling": True}).lower() or "extra" in _errors(
        {**base, "polling": True}
    )
    assert "not a node id" in _errors({**base, "nodes": [{**node, "node": "ns=x;s=A"}]})
    assert "<namespace index>:<browse name>" in _errors(
        {**base, "nodes": [{**node, "node": "0:Objects/Line1/2:T"}]}
    )
    assert "neither a node id" in _errors({**base, "nodes": [{**node, "node": "Temp"}]})
    assert "nsu=" in _errors({**base, "nodes": [{**node, "node": "nsu=urn:x;s=A"}]})
    dup = {**node, "signal": "t2"}
    assert "already nodes[0]" in _errors({**base, "nodes": [node, dup]})
    assert "already read from nodes[0]" in _errors({**base, "nodes": [node, {**node, "node": "i=2259"}]})
    assert "give nodes" in _errors({"endpoint": "opc.tcp://plc"})
    assert "mode None" in _errors({**base, "security": {"policy": "Basic256Sha256", "mode": "None"}})
    assert "needs certificate" in _errors({**base, "security": {"policy": "Basic256Sha256", "mode": "Sign"}})
    missing = {
        "policy": "Basic256Sha256",
        "mode": "Sign",
        "certificate": str(tmp_path / "nope.der"),
        "private_key": str(pki["client_key"]),
    }
    assert "cannot read" in _errors({**base, "security": missing})
    swapped = {**missing, "certificate": str(pki["server_cert"])}
    assert "is not the key of" in _errors({**base, "security": swapped})
    assert "needs a username" in _errors({**base, "password": "x"})
    assert "not both" in _errors(
        {**base, "username": "u", "password": "x", "password_file": str(pki["password_file"])}
    )
    empty = tmp_path / "empty"
    empty.write_text("")
    assert "is empty" in _errors({**base, "username": "u", "password_file": str(empty)})
    # the input is not echoed (hide_input_in_errors: it may be a password); path and choices are
    bad_type = _errors({**base, "setpoints": {"line1/a": {"node": "i=1", "type": "Int17"}}})
    assert "setpoints.line1/a.type" in bad_type and "'Int16'" in bad_type
    assert "also the setpoint of" in _errors(
        {**base, "setpoints": {"line1/a": {"node": "i=1"}, "line1/b": {"node": "i=1"}}}
    )
    assert "user certificate needs a secure channel" in _errors(
        {**base, "user_certificate": str(pki["client_cert"]), "user_private_key": str(pki["client_key"])}
    )
    assert isinstance(parse_node("0:Objects/2:Line1"), list)
    # through the agent's config: every problem with its path
    with pytest.raises(ConfigError) as info:
        edge_config("mqtt://127.0.0.1:1", connectors='[{opcua: {endpoint: "tcp://x", nodes: []}}]')
    assert "connectors[0].opcua" in str(info.value)


async def test_agent_reads_and_writes_through_opcua(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    port = free_port()
    opcua = {
        "endpoint": f"opc.tcp://127.0.0.1:{port}/qxedge/",
        "nodes": [
            {"node": "ns=2;s=Line1.pump1.Temp", "asset": "line1/pump1", "signal": "temp"},
            {"node": "0:Objects/2:Line1/2:pump1/2:Power", "asset": "line1/pump1", "signal": "power"},
            # the setpoint node read as its echo: the value in force before the agent's first write
            {"node": "0:Objects/2:Line1/2:pump1/2:LoadCap", "asset": "line1/pump1", "signal": "load_cap"},
        ],
        "setpoints": {"line1/pump1": {"node": "0:Objects/2:Line1/2:pump1/2:LoadCap", "type": "Double"}},
        "sampling_interval_ms": 0,
        "publishing_interval_ms": 50,
        "keepalive_s": 1,
    }
    cfg = edge_config(
        broker.url,
        connectors=json.dumps([{"opcua": opcua}]),
        safety__envelopes__0__min_dwell_s="0",
    )
    watcher = watch("qx/v1/demo/setpoints/#", "qx/v1/demo/alarms")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with plant_server(port) as plant, asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop), name="agent")
        await asyncio.wait_for(agent.ready.wait(), 20)
        connector = agent.plant[0]
        assert isinstance(connector, OpcUaConnector)
        await connected(connector)
        # fresh temperatures for the envelope's interlock (temp < 150, at most 5 s old)
        for k in range(40):
            await plant.set("pump1", "temp", 60.0 + k % 3)
            await plant.set("pump1", "power", 10.0 + k % 2)
            if agent.stats().readings >= 20:
                break
            await asyncio.sleep(0.05)
        for _ in range(100):
            if agent.safety.latest.get(("line1/pump1", "temp")) is not None:
                break
            await plant.set("pump1", "temp", 61.0)
            await asyncio.sleep(0.1)
        assert agent.safety.latest.get(("line1/pump1", "temp")) is not None, agent.stats()
        proposal = {"value": 0.9, "source": "mes", "data_ts": time.time()}
        await asyncio.to_thread(watcher.publish, "qx/v1/demo/proposals/line1/pump1", json.dumps(proposal))

        async def written() -> bool:
            return bool(await plant.setpoints["pump1"].read_value() == 0.9)

        assert await wait_until(written, 10, every_s=0.05)
        assert await plant.setpoints["pump1"].read_value() == 0.9
        assert await asyncio.to_thread(
            watcher.wait_for, lambda ms: any(m.topic.endswith("setpoints/line1/pump1") for m in ms), 20
        )
        # the read-back arrives as line1/pump1/load_cap and confirms the write (no alarm)
        assert await wait_until(
            lambda: agent.safety.latest.get(("line1/pump1", "load_cap"), (0, None))[1] == 0.9, 10
        )
        assert agent.safety.latest[("line1/pump1", "load_cap")][1] == 0.9
        # the gate's next evaluation checks the echo: confirmed in the audit log, no alarm
        audit = agent.config.safety.audit.resolved(agent.site)

        async def confirmed() -> bool:
            return ("readback", "confirmed") in await asyncio.to_thread(_audit_rows, audit)

        assert await wait_until(confirmed, 10, every_s=0.1)
        rows = await asyncio.to_thread(_audit_rows, audit)
        assert ("readback", "confirmed") in rows and ("write", "written") in rows, rows
        stop.set()
    assert agent.gate is not None and agent.gate.verdicts["written"] == 1
    assert not watcher.on("qx/v1/demo/alarms"), [m.payload for m in watcher.on("qx/v1/demo/alarms")]


def _audit_rows(path: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [(k, v) for k, v in db.execute("SELECT kind, verdict FROM audit WHERE asset = 'line1/pump1'")]


@pytest.fixture(autouse=True)
def _quiet_asyncua(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="asyncua")
