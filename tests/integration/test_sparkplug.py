"""Sparkplug B connector against a real mosquitto, checked by an independent decoder.

The decoder is a plain paho client (conftest's Watcher) and the protobuf classes generated from the
specification's schema (``sparkplug_b_pb2``): none of the connector's encoding helpers are used to read
what it published, nor to build what the tests send it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import paho.mqtt.client as paho
import pytest
from pydantic import ValidationError

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.connectors.sparkplug import SparkplugConfig, SparkplugConnector
from qxedge.connectors.sparkplug_b_pb2 import Payload
from qxedge.core.errors import ConfigError
from qxedge.testing import Watcher, edge_config, wait_until

pytestmark = pytest.mark.integration

NODE = "spBv1.0/plant/{}/qx-edge"
Received = list[paho.MQTTMessage]
DOUBLE, INT32, INT64, BOOLEAN, STRING = 10, 3, 4, 11, 12


# ----------------------------------------------------------------- helpers (independent of the connector)
def decoded(watcher: Watcher, *kinds: str) -> list[tuple[str, Payload]]:
    """(topic, payload) of every Sparkplug message of these kinds, in arrival order."""
    return [
        (m.topic, Payload.FromString(bytes(m.payload)))
        for m in watcher.on("spBv1.0/")
        if m.topic.split("/")[2] in kinds
    ]


def count(kind: str, n: int) -> Callable[[Received], bool]:
    def enough(messages: Received) -> bool:
        return sum(1 for m in messages if m.topic.split("/")[2:3] == [kind]) >= n

    return enough


def by_name(payload: Payload) -> dict[str, Payload.Metric]:
    return {m.name: m for m in payload.metrics}


async def wait(watcher: Watcher, predicate: Callable[[Received], bool], within: float = 20) -> None:
    assert await asyncio.to_thread(watcher.wait_for, predicate, within), "timed out waiting for messages"


async def until(condition: Callable[[], bool], within: float = 20) -> None:
    assert await wait_until(condition, within), "condition not met in time"


@dataclass
class Link:
    """What the agent gives a plant connector, recording what the connector hands back."""

    url: str
    batches: list[ReadingBatch] = field(default_factory=list)
    proposals: list[tuple[str, float, str, float]] = field(default_factory=list)

    def link(self) -> PlantLink:
        broker = BrokerConfig(url=self.url, reconnect_min_s=0.2, reconnect_max_s=1.0)
        return PlantLink("test", broker, self.batches.append, self._propose)

    async def _propose(self, asset: str, value: float, source: str, data_ts: float) -> None:
        self.proposals.append((asset, value, source, data_ts))

    def readings(self) -> list[tuple[str, str, float, float]]:
        return [r for b in self.batches for r in zip(b.assets, b.signals, b.ts, b.values, strict=True)]


@dataclass
class RefusesOnce(Link):
    """A link whose agent side raises on the first batch of readings, then takes them."""

    refused: int = 0

    def link(self) -> PlantLink:
        return replace(super().link(), readings=self._take)

    def _take(self, batch: ReadingBatch) -> None:
        if not self.refused:
            self.refused += 1
            raise RuntimeError("the agent could not take them")
        self.batches.append(batch)


@asynccontextmanager
async def running(connector: SparkplugConnector, link: Link) -> AsyncIterator[SparkplugConnector]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(connector.run(link.link()), name="sparkplug-under-test")
        await asyncio.wait_for(connector.ready.wait(), 20)
        try:
            yield connector
        finally:
            task.cancel()


def node(**kw: object) -> SparkplugConnector:
    return SparkplugConfig.model_validate({"group_id": "plant", "edge_node_id": "qx-edge", **kw}).connector(
        "connectors[1]"
    )


def command(name: str | None, value: float | bool, alias: int | None = None, ts_ms: int = 0) -> bytes:
    payload = Payload(timestamp=ts_ms or int(time.time() * 1000))
    metric = payload.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    if isinstance(value, bool):
        metric.datatype, metric.boolean_value = BOOLEAN, value
    else:
        metric.datatype, metric.double_value = DOUBLE, value
    if ts_ms:
        metric.timestamp = ts_ms
    return payload.SerializeToString()


# ----------------------------------------------------------------- config
def test_config_rejects_invalid_ids_with_their_path(broker: EmbeddedBroker) -> None:
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(ValidationError) as err:
            SparkplugConfig.model_validate({"group_id": bad, "edge_node_id": "n"})
        assert err.value.errors()[0]["loc"] == ("group_id",)
    with pytest.raises(ConfigError) as config_err:
        edge_config(
            broker.url,
            connectors='[{mqtt: {topics: ["plant/#"]}}, {sparkplug: {group_id: g, edge_node_id: "line/1", '
            'device_separator: "/", source: {groups: []}, extra: 1}}]',
        )
    paths = {p.path for p in config_err.value.problems}
    assert {
        "connectors[1].sparkplug.edge_node_id",
        "connectors[1].sparkplug.device_separator",
        "connectors[1].sparkplug.source.groups",
        "connectors[1].sparkplug.extra",
    } <= paths
    assert "contains /" in str(config_err.value)


# ----------------------------------------------------------------- edge node
async def test_births_before_data_every_metric_with_aliases_then_data_by_exception(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    link = Link(broker.url)
    connector = node(metrics=["temp", "score/*", "setpoint"], devices=["line1/*"])
    t0 = time.time()
    connector.observe("line1/pump1", {"temp": 70.0, "power": 5.0, "score/anomaly": 0.5}, t0)
    connector.observe("line1/fan1", {"temp": 40.0}, t0)
    connector.observe("line2/other", {"temp": 1.0}, t0)  # not a selected device
    async with running(connector, link):
        await wait(watcher, count("DBIRTH", 2))
        connector.observe("line1/pump1", {"temp": 70.0, "power": 6.0, "score/anomaly": 0.7}, t0 + 1)
        connector.observe("line1/fan1", {"temp": 40.0}, t0 + 1)  # unchanged: nothing to send
        connector.observe("line1/pump1", {"temp": 71.0, "score/anomaly": 0.7}, t0 + 2)
        await wait(watcher, count("DDATA", 2))

    messages = decoded(watcher, "NBIRTH", "DBIRTH", "DDATA")
    kinds = [t.split("/")[2] for t, _ in messages]
    assert kinds[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"] and kinds[3:] == ["DDATA", "DDATA"]
    assert [p.seq for _, p in messages] == [0, 1, 2, 3, 4]
    topic, nbirth = messages[0]
    assert topic == NODE.format("NBIRTH")
    metrics = by_name(nbirth)
    assert metrics["bdSeq"].datatype == INT64 and metrics["bdSeq"].long_value == 0
    rebirth = metrics["Node Control/Rebirth"]
    assert rebirth.datatype == BOOLEAN and rebirth.boolean_value is False

    births = {t.rsplit("/", 1)[1]: p for t, p in messages if "/DBIRTH/" in t}
    assert set(births) == {"line1:pump1", "line1:fan1"}
    pump = by_name(births["line1:pump1"])
    assert set(pump) == {"temp", "score/anomaly", "setpoint"}  # power is not a selected metric
    assert all(m.HasField("alias") and m.datatype == DOUBLE for m in pump.values())
    assert pump["temp"].double_value == 70.0 and pump["score/anomaly"].double_value == 0.5
    assert pump["setpoint"].is_null and pump["temp"].timestamp == round(t0 * 1000)
    aliases = [m.alias for p in births.values() for m in p.metrics]
    assert len(aliases) == len(set(aliases)), "aliases must be unique across the edge node"

    first, second = (p for t, p in messages if t == NODE.format("DDATA") + "/line1:pump1")
    assert [(m.alias, m.double_value) for m in first.metrics] == [(pump["score/anomaly"].alias, 0.7)]
    assert [(m.alias, m.double_value) for m in second.metrics] == [(pump["temp"].alias, 71.0)]
    assert not any(m.HasField("name") for m in [*first.metrics, *second.metrics])
    assert second.timestamp == round((t0 + 2) * 1000)


async def test_new_device_and_new_metric_after_the_births_are_born(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    connector = node(setpoint_metric=None)
    async with running(connector, Link(broker.url)):
        await wait(watcher, count("NBIRTH", 1))
        connector.observe("a/b", {"x": 1.0}, time.time())  # new device: DBIRTH
        connector.observe("a/b", {"x": 2.0}, time.time())  # DDATA
        connector.observe("a/b", {"x": 2.0, "y": 3.0}, time.time())  # new metric: DBIRTH again
        connector.observe("a/b", {"x": 2.0, "y": 4.0}, time.time())  # DDATA for y only
        await wait(watcher, count("DDATA", 2))
    messages = decoded(watcher, "NBIRTH", "DBIRTH", "DDATA")
    assert [t.split("/")[2] for t, _ in messages] == ["NBIRTH", "DBIRTH", "DDATA", "DBIRTH", "DDATA"]
    assert [p.seq for _, p in messages] == [0, 1, 2, 3, 4]
    first, again = (by_name(p) for t, p in messages if "/DBIRTH/" in t)
    assert set(first) == {"x"} and set(again) == {"x", "y"}
    assert again["x"].alias == first["x"].alias and again["y"].double_value == 3.0
    assert [(m.alias, m.double_value) for m in messages[-1][1].metrics] == [(again["y"].alias, 4.0)]


async def test_seq_wraps_past_255_across_all_messages(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    connector = node()
    connector.observe("line1/pump1", {"temp": -1.0}, time.time())
    async with running(connector, Link(broker.url)):
        for i in range(300):
            connector.observe("line1/pump1", {"temp": float(i)}, time.time())
        await wait(watcher, count("DDATA", 300))
    seqs = [p.seq for _, p in decoded(watcher, "NBIRTH", "DBIRTH", "DDATA")]
    assert len(seqs) == 302
    assert seqs == [i % 256 for i in range(302)]
    assert seqs[255:258] == [255, 0, 1]


async def test_ndeath_will_carries_the_births_bdseq_and_bdseq_increments_on_reconnect(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    connector = node()
    connector.observe("line1/pump1", {"temp": 1.0}, time.time())
    async with running(connector, Link(broker.url)):
        await wait(watcher, count("DBIRTH", 1))
        assert connector.mqtt is not None and connector.mqtt._sock is not None
        # an unclean loss of the link: no DISCONNECT reaches the broker, so it publishes the will
        connector.mqtt._sock.shutdown(socket.SHUT_RDWR)
        await wait(watcher, count("NBIRTH", 2))
        await wait(watcher, count("DBIRTH", 2))
    await wait(watcher, count("NDEATH", 2))  # the will, then the graceful stop's own NDEATH
    messages = decoded(watcher, "NBIRTH", "DBIRTH", "NDEATH")
    kinds = [t.split("/")[2] for t, _ in messages]
    assert kinds == ["NBIRTH", "DBIRTH", "NDEATH", "NBIRTH", "DBIRTH", "NDEATH"]
    bd = [by_name(p)["bdSeq"].long_value for t, p in messages if "/DBIRTH/" not in t]
    assert bd == [0, 0, 1, 1], "NDEATH carries the bdSeq of the NBIRTH before it; +1 per connect"
    assert messages[2][0] == NODE.format("NDEATH") and not messages[2][1].HasField("seq")
    assert [p.seq for t, p in messages if "BIRTH" in t] == [0, 1, 0, 1]


async def test_a_broker_that_goes_away_mid_session_is_reconnected_and_births_again(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """The broker stops (connects refused while it is down), then comes back on the same port: the
    connector keeps running (``running`` re-raises whatever ended it) and publishes again."""
    connector = node(source={"groups": ["plc"]})
    connector.observe("line1/pump1", {"temp": 1.0}, time.time())
    async with running(connector, Link(broker.url)):
        broker.stop()
        await until(lambda: connector.mqtt is not None and not connector.mqtt.connected)
        broker.start()
        await until(lambda: connector.node.stats.connects == 2 and connector.ready.is_set())
        watcher = watch("spBv1.0/#")
        connector.observe("line1/pump1", {"temp": 2.0}, time.time())
        await wait(watcher, count("DDATA", 1))
    assert [m.double_value for m in decoded(watcher, "DDATA")[0][1].metrics] == [2.0]


async def test_ncmd_rebirth_resends_births_with_seq_from_zero(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    connector = node()
    connector.observe("line1/pump1", {"temp": 1.0}, time.time())
    async with running(connector, Link(broker.url)):
        await wait(watcher, count("DBIRTH", 1))
        connector.observe("line1/pump1", {"temp": 2.0}, time.time())
        await wait(watcher, count("DDATA", 1))
        await asyncio.to_thread(watcher.publish, NODE.format("NCMD"), command("Node Control/Rebirth", True))
        await wait(watcher, count("DBIRTH", 2))
    messages = decoded(watcher, "NBIRTH", "DBIRTH", "DDATA")
    assert [(t.split("/")[2], p.seq) for t, p in messages] == [
        ("NBIRTH", 0),
        ("DBIRTH", 1),
        ("DDATA", 2),
        ("NBIRTH", 0),
        ("DBIRTH", 1),
    ]
    assert by_name(messages[3][1])["bdSeq"].long_value == by_name(messages[0][1])["bdSeq"].long_value
    assert by_name(messages[4][1])["temp"].double_value == 2.0  # the birth carries the latest value
    assert connector.node.stats.rebirth_commands == 1


async def test_dcmd_setpoint_writes_become_proposals(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/#")
    link = Link(broker.url)
    connector = node()
    connector.observe("line1/pump1", {"temp": 1.0}, time.time())
    connector.observe("line1/fan1", {"temp": 1.0}, time.time())
    async with running(connector, link):
        await wait(watcher, count("DBIRTH", 2))
        births = {t.rsplit("/", 1)[1]: by_name(p) for t, p in decoded(watcher, "DBIRTH")}
        alias = births["line1:pump1"]["setpoint"].alias
        dcmd = NODE.format("DCMD")
        stamp = int(time.time() * 1000)
        await asyncio.to_thread(watcher.publish, f"{dcmd}/line1:pump1", b"\x08\xff\xff")  # not protobuf
        await asyncio.to_thread(watcher.publish, f"{dcmd}/line1:pump1", command("temp", 5.0))  # read-only
        await asyncio.to_thread(watcher.publish, f"{dcmd}/nobody", command("setpoint", 5.0))
        await asyncio.to_thread(watcher.publish, f"{dcmd}/line1:pump1", command(None, 0.7, alias, stamp))
        await asyncio.to_thread(watcher.publish, f"{dcmd}/line1:fan1", command("setpoint", 0.5))
        await until(lambda: len(link.proposals) == 2)
    (asset, value, source, data_ts), fan = link.proposals
    assert (asset, value, source) == ("line1/pump1", 0.7, "sparkplug:dcmd") and data_ts == stamp / 1000
    assert fan[:3] == ("line1/fan1", 0.5, "sparkplug:dcmd")
    ignored = connector.node.stats.ignored
    assert ignored["bad command payload"] == 1 and ignored["command for an unknown device"] == 1
    assert ignored["write to a read-only or unknown metric"] == 1
    assert not decoded(watcher, "DDATA"), "the node never writes nor echoes anything itself"


async def test_births_wait_for_the_primary_host_and_its_going_offline_ends_the_session(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Sparkplug 3.0, 5.10: births wait for the host's STATE online; when it goes offline the edge node
    MUST terminate its session (NDEATH with the session's bdSeq, DISCONNECT), then comes back with a new
    will (bdSeq + 1), and NBIRTH and DBIRTHs once the host is online again. Stale STATE is ignored."""
    watcher = watch("spBv1.0/#")
    connector = node(primary_host_id="scada")
    connector.observe("line1/pump1", {"temp": 1.0}, time.time())
    state = "spBv1.0/STATE/scada"

    def host(online: bool, ts: int) -> bytes:
        return json.dumps({"online": online, "timestamp": ts}).encode()

    t = int(time.time() * 1000)
    async with running(connector, Link(broker.url)):
        await asyncio.to_thread(watcher.publish, state, host(True, t), 1, True)
        await wait(watcher, count("DBIRTH", 1))
        await asyncio.to_thread(watcher.publish, state, host(False, t + 1), 1, True)
        await wait(watcher, count("NDEATH", 1))  # the node ends its session
        await until(lambda: connector.node.stats.connects == 2 and connector.ready.is_set())
        connector.observe("line1/pump1", {"temp": 2.0}, time.time())  # host offline: not published
        await asyncio.to_thread(watcher.publish, state, b"{not json")
        await asyncio.to_thread(watcher.publish, state, host(True, t + 2), 1, True)
        await wait(watcher, count("DBIRTH", 2))
        await asyncio.to_thread(watcher.publish, state, host(False, t - 5))  # older than the last: ignored
        await until(lambda: connector.node.stats.ignored["stale STATE"] == 1)
        assert connector.node.host_online
        connector.observe("line1/pump1", {"temp": 3.0}, time.time())
        await wait(watcher, count("DDATA", 1))
        assert connector.mqtt is not None and connector.mqtt._sock is not None
        connector.mqtt._sock.shutdown(socket.SHUT_RDWR)  # unclean: the broker publishes this session's will
        await wait(watcher, count("NDEATH", 2))
    messages = watcher.on("spBv1.0/")
    kinds = [m.topic.split("/")[2] if "/STATE/" not in m.topic else "STATE" for m in messages]
    end = [i for i, k in enumerate(kinds) if k == "NDEATH"][1] + 1
    assert kinds[:end] == [
        *("STATE", "NBIRTH", "DBIRTH"),  # no birth before the host is online
        *("STATE", "NDEATH"),  # host offline: NDEATH, nothing published until it is back
        *("STATE", "STATE", "NBIRTH", "DBIRTH", "STATE", "DDATA"),
        "NDEATH",  # the will of the second session
    ]
    lifecycle = [
        (k, Payload.FromString(bytes(m.payload)))
        for k, m in zip(kinds[:end], messages[:end], strict=True)
        if k in ("NBIRTH", "NDEATH")
    ]
    bd = [(k, by_name(p)["bdSeq"].long_value) for k, p in lifecycle]
    assert bd == [("NBIRTH", 0), ("NDEATH", 0), ("NBIRTH", 1), ("NDEATH", 1)], "a new bdSeq per session"
    births = [by_name(p)["temp"].double_value for _, p in decoded(watcher, "DBIRTH")[:2]]
    assert births == [1.0, 2.0] and connector.node.stats.ignored["bad STATE payload"] == 1
    assert connector.node.stats.host_offline == 1


async def test_names_that_cannot_be_encoded_are_ignored_and_never_raise(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Issue 25: a lone surrogate in a metric name raised UnicodeEncodeError out of the DBIRTH into the
    agent, which exited."""
    watcher = watch("spBv1.0/#")
    connector = node(setpoint_metric=None)
    async with running(connector, Link(broker.url)):
        await wait(watcher, count("NBIRTH", 1))
        connector.observe("line1/pump1", {"x\ud800": 1.0, "temp": 2.0}, time.time())
        connector.observe("line1/p\udc00", {"temp": 1.0}, time.time())
        connector.observe("line1/pump1", {"temp": 3.0, "x\ud800": 4.0}, time.time())
        await wait(watcher, count("DDATA", 1))
    (topic, birth), *_ = decoded(watcher, "DBIRTH")
    assert topic.endswith("/line1:pump1") and set(by_name(birth)) == {"temp"}
    assert len(decoded(watcher, "DBIRTH")) == 1
    ignored = connector.node.stats.ignored
    assert ignored["metric name not UTF-8"] == 1 and ignored["asset id not UTF-8"] == 1


async def test_agent_dead_letters_a_lone_surrogate_name_and_keeps_publishing(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Issue 25: one message with a lone surrogate in a signal name made ``qxedge run`` exit 1."""
    cfg = edge_config(
        broker.url,
        connectors='[{mqtt: {topics: ["plant/#"]}}, {sparkplug: {group_id: qx, edge_node_id: demo}}]',
    )
    watcher = watch("spBv1.0/#", "qx/v1/demo/deadletter")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        running_agent = tasks.create_task(agent.run(stop), name="agent")
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.to_thread(watcher.publish, "plant/line9/m1", b'{"values": {"x\\ud800": 1.0}}')
        await asyncio.to_thread(watcher.publish, "plant/line9/m1", b'{"values": {"temp": 70.0}}')
        await wait(watcher, lambda ms: any(m.topic == "spBv1.0/qx/DBIRTH/demo/line9:m1" for m in ms))
        await wait(watcher, lambda ms: any(m.topic == "qx/v1/demo/deadletter" for m in ms))
        assert not running_agent.done()
        stop.set()
    (letter,) = watcher.json_on("qx/v1/demo/deadletter")
    assert letter["code"] == "invalid_utf8" and "lone surrogate" in letter["reason"]


# ----------------------------------------------------------------- source
async def test_source_turns_plant_births_and_ddata_into_readings(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("spBv1.0/plc/NCMD/#")
    link = Link(broker.url)
    connector = node(source={"groups": ["plc"], "nodes": ["press*"]})
    stamp = int(time.time() * 1000)

    nbirth = Payload(timestamp=stamp, seq=0)
    bd = nbirth.metrics.add(name="bdSeq", datatype=INT64)
    bd.long_value = 3
    dbirth = Payload(timestamp=stamp, seq=1)
    fields: list[tuple[str, int, int, float | bool | str]] = [
        ("temp", 1, DOUBLE, 60.0),
        ("count", 2, INT32, -5),
        ("running", 3, BOOLEAN, True),
        ("label", 4, STRING, "die A"),
    ]
    for name, alias, datatype, value in fields:
        m = dbirth.metrics.add(name=name, alias=alias, datatype=datatype, timestamp=stamp)
        if datatype == DOUBLE:
            m.double_value = float(value)
        elif datatype == INT32:
            m.int_value = int(value) % 2**32  # two's complement in the unsigned field
        elif datatype == BOOLEAN:
            m.boolean_value = bool(value)
        else:
            m.string_value = str(value)
    ddata = Payload(timestamp=stamp + 100, seq=2)
    ddata.metrics.add(alias=1).double_value = 61.5
    ddata.metrics.add(alias=3, timestamp=stamp + 50).boolean_value = False
    unknown = Payload(timestamp=stamp + 200, seq=3)
    unknown.metrics.add(alias=99).double_value = 1.0

    async with running(connector, link):
        for topic, payload in [
            ("spBv1.0/plc/NBIRTH/press1", nbirth.SerializeToString()),
            ("spBv1.0/plc/DBIRTH/press1/die1", dbirth.SerializeToString()),
            ("spBv1.0/plc/DDATA/press1/die1", ddata.SerializeToString()),
            ("spBv1.0/plc/DDATA/press1/die1", b"\xff\xff\xff"),
            ("spBv1.0/plc/DDATA/other9/die1", ddata.SerializeToString()),  # not a selected node
            ("spBv1.0/plc/DDATA/press1/die1", unknown.SerializeToString()),
        ]:
            await asyncio.to_thread(watcher.publish, topic, payload)
        await wait(watcher, lambda ms: len(ms) >= 1)  # the rebirth request
        await until(lambda: connector.source is not None and connector.source.stats.messages == 5)
    request_topic, request = decoded(watcher, "NCMD")[0]
    assert request_topic == "spBv1.0/plc/NCMD/press1"
    assert [(m.name, m.boolean_value) for m in request.metrics] == [("Node Control/Rebirth", True)]
    readings = link.readings()
    assert readings == [
        ("press1/die1", "temp", stamp / 1000, 60.0),
        ("press1/die1", "count", stamp / 1000, -5.0),
        ("press1/die1", "running", stamp / 1000, 1.0),
        ("press1/die1", "temp", (stamp + 100) / 1000, 61.5),
        ("press1/die1", "running", (stamp + 50) / 1000, 0.0),
    ]
    assert connector.source is not None
    skipped = connector.source.stats.skipped
    assert skipped["bad payload"] == 1 and skipped["unknown alias"] == 1
    assert skipped["null or not a number"] == 1  # the string metric
    assert connector.source.stats.rebirth_requests == 1


async def test_readings_the_agent_fails_to_take_are_logged_and_reading_goes_on(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], caplog: pytest.LogCaptureFixture
) -> None:
    """An error on the agent's side of ``link.readings`` used to end the session's task group, and
    ``run`` (which retries ConnectorError only) with it: the connector, and the agent, stopped."""
    watcher = watch()
    link = RefusesOnce(broker.url)
    connector = node(source={"groups": ["plc"]})
    stamp = int(time.time() * 1000)
    nbirth = Payload(timestamp=stamp, seq=0)
    nbirth.metrics.add(name="bdSeq", datatype=INT64).long_value = 0
    dbirth = Payload(timestamp=stamp, seq=1)
    dbirth.metrics.add(name="temp", alias=1, datatype=DOUBLE, timestamp=stamp).double_value = 60.0
    ddata = Payload(timestamp=stamp + 100, seq=2)
    ddata.metrics.add(alias=1).double_value = 61.5
    async with running(connector, link):
        await asyncio.to_thread(watcher.publish, "spBv1.0/plc/NBIRTH/press1", nbirth.SerializeToString())
        await asyncio.to_thread(watcher.publish, "spBv1.0/plc/DBIRTH/press1/die1", dbirth.SerializeToString())
        await until(lambda: link.refused == 1)
        await asyncio.to_thread(watcher.publish, "spBv1.0/plc/DDATA/press1/die1", ddata.SerializeToString())
        await until(lambda: len(link.batches) == 1)
    assert link.readings() == [("press1/die1", "temp", (stamp + 100) / 1000, 61.5)]
    assert "could not read a batch of" in caplog.text
    assert connector.node.stats.connects == 1  # the same session all along


# ----------------------------------------------------------------- the agent
async def test_agent_publishes_its_assets_as_sparkplug_devices(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(
        broker.url,
        connectors='[{mqtt: {topics: ["plant/#"]}}, '
        "{sparkplug: {group_id: qx, edge_node_id: demo, metrics: [temp, power, score/*, setpoint]}}]",
    )
    assert cfg.simulator is not None
    watcher = watch("spBv1.0/#")
    agent = Agent(cfg)
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    devices = {f"line1:{a.name}" for a in cfg.simulator.assets}
    ddata = "spBv1.0/qx/DDATA/demo/"

    def scored_everywhere(messages: Received) -> bool:
        seen = {m.topic.removeprefix(ddata) for m in messages}
        scores = any("/DBIRTH/" in m.topic and b"score/anomaly" in m.payload for m in messages)
        return devices <= seen and scores

    stop = asyncio.Event()
    async with plant, asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop), name="agent")
        await asyncio.wait_for(agent.ready.wait(), 10)
        simulation = tasks.create_task(plant.run(), name="plant")
        await wait(watcher, scored_everywhere, 40)
        stop.set()
        simulation.cancel()
    messages = decoded(watcher, "NBIRTH", "DBIRTH", "DDATA")
    assert messages[0][0] == "spBv1.0/qx/NBIRTH/demo"
    births = {t.rsplit("/", 1)[1]: by_name(p) for t, p in messages if "/DBIRTH/" in t}
    assert devices <= set(births)
    for metrics in births.values():
        assert "setpoint" in metrics and set(metrics) <= {"temp", "power", "setpoint", "score/anomaly"}
    scored = [b for b in births.values() if {"temp", "power", "score/anomaly"} <= set(b)]
    assert scored, "readings and the anomaly score are published as metrics"
    assert [p.seq for _, p in messages] == [i % 256 for i in range(len(messages))]


def test_bd_seq_goes_on_across_restarts() -> None:
    """A restarted node never reuses the bdSeq of its last session: hosts match NDEATH to NBIRTH by it."""

    def bd_seq(will_payload: bytes) -> int:
        return int(Payload.FromString(will_payload).metrics[0].long_value)

    first = node()
    assert [bd_seq(first.node.will().payload) for _ in range(3)] == [0, 1, 2]
    restarted = node()  # a new process: the same group and node, the same state folder
    assert bd_seq(restarted.node.will().payload) == 3
