"""Sparkplug B v3.0 connector: the agent as an edge node, and Sparkplug devices of the plant as a source.

Edge node (``sparkplug_node``): what the agent knows of each asset when it changes (latest
readings, ``score/<model>``, ``setpoint``) is published as the metrics of one Sparkplug device per asset,
under one edge node: ``spBv1.0/{group_id}/DBIRTH|DDATA/{edge_node_id}/{device}``. Device ids are the
asset ids with ``/`` replaced by ``device_separator`` (``line1/pump1`` → ``line1:pump1``), because ``/``
separates topic levels and may not appear in a Sparkplug id. A DCMD write to ``setpoint_metric`` becomes a
setpoint proposal that the safety envelope judges like any other; the node writes nothing itself.

Source (``sparkplug_source``, optional): NBIRTH / DBIRTH / NDATA / DDATA of the plant's edge nodes in
``source.groups`` become readings (asset ``{node}/{device}``, signal = metric name).

Both share one MQTT connection of their own to the plant broker (``link.broker``), whose will is the
NDEATH with the ``bdSeq`` of that connection (``MqttClient`` calls ``EdgeNode.will`` before each connect).
With a ``primary_host_id``, the host's STATE going offline ends that session (NDEATH, DISCONNECT) and a
new one starts at once, which waits for the host to come back online before the births.

Why code generated from the specification's schema rather than a Sparkplug package: the payload is one
protobuf message (``sparkplug_b.proto``, from the specification, beside this module), and ``protobuf`` is
already installed with onnxruntime; the packages on PyPI (pysparkplug, mqtt-spb-wrapper, ...) each bring
their own MQTT client and threads, where qxedge drives paho from its event loop (``connectors.mqtt``) and
needs the session rules (bdSeq in the will per connect, seq across all messages, aliases, by-exception
data) under its own control and tests. The generated module is a few hundred lines with no logic.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qxedge.connectors.mqtt import MqttClient, Subscription, each_message
from qxedge.connectors.plant import Evaluation, PlantLink
from qxedge.connectors.sparkplug_node import EdgeNode
from qxedge.connectors.sparkplug_payload import NAMESPACE, check_id, topic
from qxedge.connectors.sparkplug_source import SparkplugSource
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)


class _HostOffline(Exception):
    """The primary host went offline: the session ends (raised inside the session's task group)."""


def _patterns(patterns: list[str]) -> list[str]:
    for p in patterns:
        if not p.strip():
            raise ValueError("an empty pattern matches nothing: remove it")
    return patterns


class SparkplugSourceConfig(BaseModel):
    """Which Sparkplug edge nodes of the plant to read."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(min_length=1, description="Sparkplug group ids to read")
    nodes: list[str] = Field(["*"], min_length=1, description="edge node ids (shell patterns) to read")
    max_payload_bytes: int = Field(262_144, ge=64, le=16 * 1024 * 1024)
    max_ahead_s: float = Field(300.0, gt=0, description="metrics stamped further in the future are skipped")
    rebirth_interval_s: float = Field(
        10.0, gt=0, description="at most one rebirth request (NCMD) per edge node in this time"
    )

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, groups: list[str]) -> list[str]:
        return [check_id(g, "group id") for g in groups]

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: list[str]) -> list[str]:
        for n in _patterns(nodes):
            if "/" in n or "#" in n or "+" in n:
                raise ValueError(f"edge node pattern {n!r}: use shell patterns (* ?), not / + #")
        return nodes


class SparkplugConfig(BaseModel):
    """The agent as a Sparkplug B v3.0 edge node on the plant broker, and optionally a Sparkplug source."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(description="Sparkplug group id of the agent's edge node")
    edge_node_id: str = Field(description="the agent's edge node id")
    primary_host_id: str | None = Field(
        None,
        description="wait for this host's spBv1.0/STATE online before the births; "
        "end the session (NDEATH) when it goes offline",
    )
    devices: list[str] = Field(["*"], description="assets published as devices (shell patterns); [] = none")
    metrics: list[str] = Field(
        ["*"], min_length=1, description="metric keys published (shell patterns: temp, score/*, setpoint)"
    )
    device_separator: str = Field(":", description="replaces / of asset ids in device ids")
    setpoint_metric: str | None = Field(
        "setpoint", description="the metric a DCMD may write (a setpoint proposal); null: read-only"
    )
    deadband: float = Field(0.0, ge=0, description="DDATA only for changes larger than this (0: any change)")
    source: SparkplugSourceConfig | None = Field(None, description="read Sparkplug edge nodes of the plant")

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value, "id")

    @field_validator("devices", "metrics")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        return _patterns(patterns)

    @field_validator("device_separator")
    @classmethod
    def _check_separator(cls, sep: str) -> str:
        if len(sep) != 1 or sep in "/+#" or sep.isspace():
            raise ValueError(f"one character other than / + # or a space, got {sep!r}")
        return sep

    @field_validator("setpoint_metric")
    @classmethod
    def _check_metric(cls, name: str | None) -> str | None:
        if name is not None and not name.strip():
            raise ValueError("empty metric name")
        return name

    def connector(self, name: str) -> SparkplugConnector:
        return SparkplugConnector(self, name)


class SparkplugConnector:
    """A :class:`~connectors.plant.ReadingSource` and :class:`~connectors.plant.EvaluationObserver`:
    setpoints reach Sparkplug devices as proposals in (DCMD), never as writes out."""

    def __init__(self, config: SparkplugConfig, name: str) -> None:
        self.name = name
        self.config = config
        self.node = EdgeNode(config)
        self.source: SparkplugSource | None = None
        self.mqtt: MqttClient | None = None
        self.ready = asyncio.Event()  # connected and subscribed (births sent unless a host is awaited)

    def evaluated(self, evaluation: Evaluation) -> None:
        for asset, metrics in evaluation.assets.items():
            self.node.observe(asset, metrics, evaluation.ts)

    def observe(self, asset: str, metrics: Mapping[str, float], ts: float) -> None:
        """One asset's metrics (what ``evaluated`` does for each asset of an evaluation)."""
        self.node.observe(asset, metrics, ts)

    async def run(self, link: PlantLink) -> None:
        """Until cancelled; a broker that cannot be reached is retried with jittered backoff, a session
        ended because the primary host went offline is followed by a new one at once."""
        delay = link.broker.reconnect_min_s
        while True:
            try:
                await self._session(link)
                delay = link.broker.reconnect_min_s
            except ConnectorError as exc:
                log.warning("%s: %s; next try within %.1f s", self.name, exc, delay)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, link.broker.reconnect_max_s)

    async def _session(self, link: PlantLink) -> None:
        cfg = self.config
        broker = link.broker.model_copy(update={"client_id": None})  # never the agent's own client id
        node = self.node
        async with MqttClient(
            broker, role=f"sparkplug-{cfg.edge_node_id}", will=node.will, on_connect=node.on_connect
        ) as mqtt:
            self.mqtt = mqtt
            # the commands first (the specification wants them subscribed before NBIRTH)
            ncmd = await mqtt.subscribe(topic(cfg.group_id, "NCMD", cfg.edge_node_id), qos=1)
            dcmd = await mqtt.subscribe(topic(cfg.group_id, "DCMD", cfg.edge_node_id, "+"), qos=1)
            state = None
            if cfg.primary_host_id is not None:
                state = await mqtt.subscribe(f"{NAMESPACE}/STATE/{cfg.primary_host_id}", qos=1)
            plant: list[Subscription] = []
            if cfg.source is not None:
                self.source = SparkplugSource(
                    cfg.source,
                    (cfg.group_id, cfg.edge_node_id),
                    lambda t, p: mqtt.publish(t, p, qos=0),
                )
                for group in cfg.source.groups:
                    plant.append(await mqtt.subscribe(f"{NAMESPACE}/{group}/#", qos=0))
            try:
                async with asyncio.TaskGroup() as tasks:
                    command = self._command_handler(link)
                    tasks.create_task(each_message(ncmd, command), name=f"{self.name}:ncmd")
                    tasks.create_task(each_message(dcmd, command), name=f"{self.name}:dcmd")
                    if state is not None:
                        tasks.create_task(self._follow_host(state), name=f"{self.name}:state")
                    for sub in plant:
                        tasks.create_task(self._read(sub, link), name=f"{self.name}:{sub.topic_filter}")
                    node.start(mqtt)
                    self.ready.set()
            except* _HostOffline:
                log.warning("%s: primary host offline: session ended, starting a new one", self.name)
            finally:
                node.stop()  # NDEATH, before the DISCONNECT of leaving the client
                self.ready.clear()

    def _command_handler(self, link: PlantLink) -> Callable[[str, bytes], Awaitable[None]]:
        async def handle(mqtt_topic: str, payload: bytes) -> None:
            await self.node.on_command(link, mqtt_topic, payload)

        return handle

    async def _follow_host(self, subscription: Subscription) -> None:
        """The primary host's STATE messages; its going offline ends the session (specification 5.10)."""
        async for messages in subscription:
            for _topic, payload in messages:
                if self.node.on_state(payload):
                    raise _HostOffline

    async def _read(self, subscription: Subscription, link: PlantLink) -> None:
        assert self.source is not None
        async for messages in subscription:
            try:
                batch = self.source.decode(messages, time.time())
            except Exception:  # a bug must not stop the agent: log it, keep reading
                log.exception("%s: could not decode a batch of %d messages", self.name, len(messages))
                continue
            if len(batch):
                link.readings(batch)
