"""OPC UA connector: subscriptions to monitored items in, setpoint writes with read-back out.

The connector is an asyncua client driven through its service layer (``client.uaclient``):

- nodes are given as node ids (``ns=2;s=Line1.Pump1.Temp``) or browse paths from the Root folder
  (``0:Objects/2:Line1/2:Pump1/2:Temp``); browse paths are resolved at every connect with one
  TranslateBrowsePathsToNodeIds call (a restarted server may number its nodes differently);
- one subscription (publishing interval from the config) holds one monitored item per node (sampling
  interval and queue size from the config); every node maps to an ``(asset, signal)`` of the agent;
- the subscription's publish callback gets a whole PublishResponse at a time: its data changes are
  appended to one :class:`~connectors.readings.ReadingBatch` and delivered with one
  ``link.readings(batch)`` call, never one call (nor one task) per notification. A reading's time is
  the source timestamp, else the server timestamp, else the arrival time; a bad status, a value that is
  not a finite number / bool, or a time too far in the future is counted and skipped (logged once per
  node), never raised;
- the link is watched three ways: asyncua's own probe of the server state (every ``keepalive_s``), the
  subscription's keep-alive (the server must answer a publish at least every ``keepalive_s``; three
  missed ones mean a dead server even when TCP stays up), and the status-change notifications of the
  subscription. On a loss the client is thrown away and a new one connects after a jittered exponential
  backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``): a new session, browse paths resolved
  again, a new subscription with every monitored item. Nothing of the old session is reused, so a
  server that restarted and forgot its sessions and subscriptions is served like a new one;
- ``write(asset, value)`` writes ``value * scale`` as the configured variant type, reads the node back
  and delivers what it read (divided by ``scale``) as a reading of ``readback_signal``, so the safety
  envelope's read-back check sees what the device holds. A bad status or no connection raises
  :class:`~qxedge.core.errors.ConnectorError`.

Security: policy ``None`` or ``Basic256Sha256`` with mode ``Sign`` or ``SignAndEncrypt`` (the client's
application instance certificate and key; the server's certificate pinned with ``server_certificate``
or taken from its endpoint list); user identity anonymous, username / password (``password`` or
``password_file``) or an X.509 user certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from qxedge.connectors.opcua._session import describe, quietly, relative_path, secure, status_name
from qxedge.connectors.opcua._values import epoch, keepalive_count, number, to_variant
from qxedge.connectors.opcua.config import OpcUaConfig, OpcUaSetpoint
from qxedge.connectors.opcua.nodes import NodeIdSpec, parse_node
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.backoff import Backoff
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)

_ROOT = ua.NodeId(ua.Int32(ObjectIds.RootFolder))


@dataclass(slots=True)
class OpcUaStats:
    connects: int = 0
    reconnects: int = 0  # connection attempts after the first (failed or not)
    notifications: int = 0  # data changes received
    readings: int = 0  # delivered to the agent
    skipped: int = 0  # bad status, not a number, or stamped in the future
    deliveries: int = 0  # link.readings calls
    writes: int = 0
    write_errors: int = 0
    last_error: str = ""
    skipped_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Target:
    node: ua.NodeId
    setpoint: OpcUaSetpoint


class _Lost(Exception):
    """The session is dead; the message says why."""


class OpcUaConnector:
    """The :class:`~connectors.plant.PlantConnector` of one OPC UA server."""

    def __init__(self, config: OpcUaConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.stats = OpcUaStats()
        self.connected = asyncio.Event()  # set while a session with its subscription is up
        self._client: Client | None = None
        self._targets: dict[str, _Target] = {}
        self._link: PlantLink | None = None
        self._handles: list[tuple[str, str]] = []  # client handle → (asset, signal)
        self._warned: set[tuple[int, str]] = set()
        self._last_publish = 0.0
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""

    # --- PlantConnector -------------------------------------------------------------------------

    def writes(self, asset: str) -> bool:
        return asset in self.config.setpoints

    async def run(self, link: PlantLink) -> None:
        """Connect, subscribe, and reconnect on every loss until cancelled."""
        self._link = link
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            try:
                async with self._session() as client:
                    backoff.reset()
                    await self._watch(client)
            except Exception as exc:  # whatever the device or the library does, run() goes on
                self._lose(exc)
            finally:
                self._client = None
                self.connected.clear()
            raise_if_cancelling()  # asyncua's teardown swallows a cancel that lands in it
            delay = backoff.next_delay()
            log.warning("%s: %s; reconnecting in %.2f s", self.name, self.stats.last_error, delay)
            await asyncio.sleep(delay)
            self.stats.reconnects += 1

    async def write(self, asset: str, value: float) -> None:
        """Write the setpoint, read it back, deliver the read value as a reading of ``readback_signal``."""
        self.stats.writes += 1
        try:
            read_value = await self._write(asset, value)
        except ConnectorError:
            self.stats.write_errors += 1
            raise
        sp = self.config.setpoints[asset]
        batch = ReadingBatch()
        batch.append(asset, sp.readback_signal, time.time(), read_value / sp.scale)
        self._deliver(batch)

    async def _write(self, asset: str, value: float) -> float:
        sp = self.config.setpoints.get(asset)
        if sp is None:
            raise ConnectorError(f"{self.name}: no OPC UA node for the setpoint of {asset}")
        client, target = self._client, self._targets.get(asset)
        if client is None:
            reason = f" ({self.stats.last_error})" if self.stats.last_error else ""
            raise ConnectorError(f"{self.name}: not connected to {self.config.endpoint}{reason}")
        if target is None:
            raise ConnectorError(f"{self.name}: the setpoint node {sp.node!r} of {asset} was not found")
        raw = to_variant(value * sp.scale, sp.type, f"{self.name}: {asset} = {value:g}")
        item = ua.WriteValue(
            NodeId=target.node,
            AttributeId=AttributeIds.Value,
            Value=ua.DataValue(ua.Variant(raw, getattr(ua.VariantType, sp.type))),
        )
        read = ua.ReadValueId(NodeId=target.node, AttributeId=AttributeIds.Value)
        try:
            (status,) = await client.uaclient.write(ua.WriteParameters(NodesToWrite=[item]))
            if not status.is_good():
                raise ConnectorError(
                    f"{self.name}: the server refused {asset} = {raw!r} on {sp.node}: {status_name(status)}"
                )
            (echo,) = await client.uaclient.read(ua.ReadParameters(NodesToRead=[read]))
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectorError(
                f"{self.name}: writing {asset} to {sp.node} failed: {describe(exc)}"
            ) from exc
        status = echo.StatusCode or ua.StatusCode()
        read_value = number(echo.Value.Value if echo.Value is not None else None)
        if not status.is_good() or read_value is None:
            why = status_name(status) if not status.is_good() else f"value {str(echo.Value)[:60]}"
            raise ConnectorError(f"{self.name}: wrote {asset} but could not read {sp.node} back: {why}")
        return read_value

    # --- session ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.keepalive_s)
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        client.name = client.description = f"qxedge {self.name}"
        lost = self._lost = asyncio.Event()
        self._lost_reason = ""

        async def on_lost(exc: Exception) -> None:
            self._mark_lost(f"connection lost ({describe(exc)})")

        client.connection_lost_callback = on_lost
        self.stats.connects += 1
        try:
            async with asyncio.timeout(cfg.request_timeout_s * 3):
                await secure(client, cfg)
                await client.connect()
        except TimeoutError:
            await quietly(client.disconnect())
            raise _Lost(f"no answer from {cfg.endpoint} within {cfg.request_timeout_s * 3:g} s") from None
        except BaseException:
            await quietly(client.disconnect())
            raise
        try:
            await self._resolve(client)
            await self._subscribe(client)
            if lost.is_set():
                raise _Lost(self._lost_reason)
            self._client = client
            self.connected.set()
            log.info(
                "%s: connected to %s (%s, %s), %d nodes monitored",
                self.name,
                cfg.endpoint,
                cfg.security.policy,
                cfg.security.mode,
                len(self._handles),
            )
            yield client
        finally:
            self._client = None
            self.connected.clear()
            await quietly(client.disconnect())

    async def _resolve(self, client: Client) -> None:
        """Node ids of every configured node; browse paths are translated in one request."""
        texts = [n.node for n in self.config.nodes] + [sp.node for sp in self.config.setpoints.values()]
        parsed = [parse_node(t) for t in texts]
        paths = [(i, p) for i, p in enumerate(parsed) if not isinstance(p, NodeIdSpec)]
        resolved: dict[int, ua.NodeId | None] = {
            i: ua.NodeId.from_string(texts[i]) for i, p in enumerate(parsed) if isinstance(p, NodeIdSpec)
        }
        if paths:
            request = [ua.BrowsePath(StartingNode=_ROOT, RelativePath=relative_path(p)) for _, p in paths]
            results = await client.uaclient.translate_browsepaths_to_nodeids(request)
            for (i, _), result in zip(paths, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    resolved[i] = result.Targets[0].TargetId
                else:
                    resolved[i] = None
                    self._warn_once(
                        i, f"browse path {texts[i]!r} not found: {status_name(result.StatusCode)}"
                    )
        n = len(self.config.nodes)
        self._monitored = [(i, resolved[i]) for i in range(n)]
        self._targets = {}
        for j, (asset, sp) in enumerate(self.config.setpoints.items()):
            node = resolved[n + j]
            if node is not None:
                self._targets[asset] = _Target(node, sp)

    async def _subscribe(self, client: Client) -> None:
        cfg = self.config
        interval = cfg.publishing_interval_ms
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=max(3 * keepalive_count(cfg), 3),
            RequestedMaxKeepAliveCount=keepalive_count(cfg),
            MaxNotificationsPerPublish=0,  # no limit
            PublishingEnabled=True,
            Priority=0,
        )
        self._last_publish = time.monotonic()
        result = await client.uaclient.create_subscription(params, self._on_publish)
        self._keepalive_window = max(
            3 * result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000, 3 * cfg.keepalive_s
        )
        self._handles = []
        items = []
        for i, node_id in self._monitored:
            if node_id is None:
                continue
            n = cfg.nodes[i]
            handle = len(self._handles)
            self._handles.append((n.asset, n.signal))
            sampling = cfg.sampling_interval_ms if n.sampling_interval_ms is None else n.sampling_interval_ms
            items.append(
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=handle,
                        SamplingInterval=sampling,
                        QueueSize=cfg.queue_size,
                        DiscardOldest=True,
                    ),
                )
            )
        self._item_nodes = [i for i, node_id in self._monitored if node_id is not None]
        for start in range(0, len(items), 1000):
            chunk = items[start : start + 1000]
            results = await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=result.SubscriptionId,
                    ItemsToCreate=chunk,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                )
            )
            for item, res in zip(chunk, results, strict=True):
                if not res.StatusCode.is_good():
                    i = self._item_nodes[item.RequestedParameters.ClientHandle]
                    node = cfg.nodes[i].node
                    self._warn_once(i, f"cannot monitor {node!r}: {status_name(res.StatusCode)}")

    async def _watch(self, client: Client) -> None:
        """Return (raise _Lost) when the session is dead: a lost link or missed keep-alives."""
        assert self._lost is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.keepalive_s):
                    await self._lost.wait()
            if self._lost.is_set():
                raise _Lost(self._lost_reason)
            silent = time.monotonic() - self._last_publish
            if silent > self._keepalive_window:
                raise _Lost(f"no publish response or keep-alive for {silent:.1f} s")

    def _mark_lost(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    def _lose(self, exc: BaseException) -> None:
        self.stats.last_error = describe(exc)

    # --- notifications ----------------------------------------------------------------------------

    def _on_publish(self, result: ua.PublishResult) -> None:
        """One PublishResponse: every data change in it becomes one reading of one batch."""
        self._last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive
        now = time.time()
        horizon = now + self.config.max_ahead_s
        batch = ReadingBatch()
        handles = self._handles
        for notification in data:
            if isinstance(notification, ua.StatusChangeNotification):
                self._mark_lost(f"subscription status {status_name(notification.Status)}")
                continue
            if not isinstance(notification, ua.DataChangeNotification):
                continue
            for item in notification.MonitoredItems:
                self.stats.notifications += 1
                handle = item.ClientHandle
                if not 0 <= handle < len(handles):
                    continue
                dv = item.Value
                status = dv.StatusCode
                if status is not None and not status.is_good():
                    self._skip(handle, f"status {status_name(status)}")
                    continue
                value = number(dv.Value.Value if dv.Value is not None else None)
                if value is None:
                    self._skip(handle, f"not a number: {str(dv.Value)[:60]}")
                    continue
                ts = epoch(dv.SourceTimestamp) or epoch(dv.ServerTimestamp) or now
                if ts > horizon:
                    self._skip(handle, f"stamped {ts - now:.0f} s in the future")
                    continue
                asset, signal = handles[handle]
                batch.append(asset, signal, ts, value)
        if len(batch):
            self._deliver(batch)

    def _deliver(self, batch: ReadingBatch) -> None:
        if self._link is None:
            return
        self.stats.readings += len(batch)
        self.stats.deliveries += 1
        try:
            self._link.readings(batch)
        except Exception:  # the agent's side failing must not kill the subscription
            log.exception("%s: delivering %d readings failed", self.name, len(batch))

    def _skip(self, handle: int, reason: str) -> None:
        self.stats.skipped += 1
        kind = reason.split(" ", 1)[0]
        self.stats.skipped_reasons[kind] = self.stats.skipped_reasons.get(kind, 0) + 1
        i = self._item_nodes[handle]
        self._warn_once(i, f"{self.config.nodes[i].node!r}: reading skipped ({reason})", kind)

    def _warn_once(self, i: int, message: str, kind: str = "") -> None:
        if (i, kind) not in self._warned and len(self._warned) < 10_000:
            self._warned.add((i, kind))
            log.warning("%s: %s", self.name, message)
