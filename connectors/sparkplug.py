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
import time
from collections.abc import Awaitable, Callable, Mapping

from qxedge.connectors.mqtt import MqttClient, Subscription, each_message
from qxedge.connectors.plant import Evaluation, PlantLink
from qxedge.connectors.sparkplug_config import SparkplugConfig as SparkplugConfig
from qxedge.connectors.sparkplug_config import SparkplugSourceConfig as SparkplugSourceConfig
from qxedge.connectors.sparkplug_node import EdgeNode
from qxedge.connectors.sparkplug_payload import NAMESPACE, topic
from qxedge.connectors.sparkplug_source import SparkplugSource
from qxedge.core.backoff import Backoff
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)


class _HostOffline(Exception):
    """The primary host went offline: the session ends (raised inside the session's task group)."""


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
        backoff = Backoff(link.broker.reconnect_min_s, link.broker.reconnect_max_s)
        while True:
            try:
                await self._session(link)
                backoff.reset()  # a session that ended because the primary host went offline
            except ConnectorError as exc:
                delay = backoff.next_delay()
                log.warning("%s: %s; next try in %.2f s", self.name, exc, delay)
                await asyncio.sleep(delay)

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
                if len(batch):
                    link.readings(batch)
            except Exception:  # a bug here or on the agent's side must not stop the agent: log, read on
                log.exception("%s: could not read a batch of %d messages", self.name, len(messages))
