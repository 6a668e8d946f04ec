"""The Sparkplug B v3.0 edge node: the agent's assets published as devices of one edge node.

Session rules (specification v3.0, chapters 5 and 6), as implemented:

- every MQTT connect leaves an NDEATH will carrying ``bdSeq``; ``bdSeq`` goes up by one per connect
  (0..255, wrapping) and the NBIRTH of that connection carries the same value;
- after a connect (and the subscriptions to NCMD / DCMD / STATE), NBIRTH: ``seq`` 0, ``bdSeq``,
  ``Node Control/Rebirth`` (false); then one DBIRTH per device with every metric, each with its name, an
  alias (unique across the node), datatype, timestamp and value (``is_null`` until known);
- then DDATA by exception: only metrics whose value changed (beyond ``deadband``), by alias alone;
  ``seq`` goes up by one per message across all of the node's messages (births included), wrapping
  255 → 0, and starts again at 0 with each NBIRTH;
- a device seen for the first time after the births gets its DBIRTH then; a new metric of a device
  already born makes that device's DBIRTH be sent again (with every metric, old aliases kept);
- NCMD ``Node Control/Rebirth`` = true re-sends the births (same ``bdSeq``, ``seq`` from 0);
- DCMD writes to the ``setpoint_metric`` become setpoint proposals through ``link.propose``: the
  safety envelope decides; the node never writes anything to the plant itself;
- with a ``primary_host_id``, births wait for the host's ``spBv1.0/STATE/{host}`` ``{"online": true,
  "timestamp": ms}`` (a STATE with a timestamp older than the last one seen is ignored); when the host
  goes offline (``"online": false``) the node ends its session as the specification requires (5.10:
  "the Edge Node MUST terminate its session"): NDEATH with the session's ``bdSeq``, then DISCONNECT.
  The connector connects again at once (a new will, ``bdSeq`` + 1) and waits for the host to be back
  online before NBIRTH and the DBIRTHs;
- nothing the node is given can end the process: a metric name or asset id that cannot be encoded
  (not UTF-8, e.g. a lone surrogate) is ignored and counted, and any other error while encoding or
  publishing is logged and counted, never raised to the agent.

Everything is published at QoS 0 without retain, the NDEATH will at QoS 1 (as the specification says).
``observe`` runs on the event loop and publishes synchronously: no task, no buffer per message.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qxedge.connectors.mqtt import MqttClient, Publication
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.sparkplug_payload import (
    BD_SEQ,
    BOOLEAN,
    DOUBLE,
    INT64,
    REBIRTH,
    Payload,
    decode,
    device_id,
    ms,
    now_ms,
    number,
    set_value,
    topic,
)
from qxedge.core.errors import PayloadError
from qxedge.core.state import state_dir

if TYPE_CHECKING:
    from qxedge.connectors.sparkplug_config import SparkplugConfig

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 256 * 1024


@dataclass(slots=True)
class NodeStats:
    connects: int = 0
    births: int = 0  # NBIRTH messages
    device_births: int = 0
    data: int = 0  # DDATA messages
    rebirth_commands: int = 0
    proposals: int = 0
    host_offline: int = 0  # sessions ended because the primary host went offline
    ignored: Counter[str] = field(default_factory=Counter)  # reason → count (bad payloads included)


@dataclass(slots=True)
class _Device:
    asset: str
    id: str
    aliases: dict[str, int] = field(default_factory=dict)  # metric name → alias
    values: dict[str, float | None] = field(default_factory=dict)  # latest known
    sent: dict[str, float] = field(default_factory=dict)  # last published
    ts: float = 0.0
    born: bool = False  # its DBIRTH (with every metric it has) went out in this session


def _changed(new: float, old: float | None, deadband: float) -> bool:
    if old is None:
        return True
    if math.isnan(new) or math.isnan(old):
        return math.isnan(new) != math.isnan(old)
    return abs(new - old) > deadband if deadband > 0 else new != old


class EdgeNode:
    """State and messages of one edge node; the connector owns its MQTT connection."""

    def __init__(self, config: SparkplugConfig) -> None:
        self.config = config
        self.group = config.group_id
        self.node = config.edge_node_id
        self.stats = NodeStats()
        self.bd_seq = -1  # of the connection in force (-1 before the first)
        self.host_online = config.primary_host_id is None
        self.source = f"sparkplug:{config.primary_host_id or 'dcmd'}"
        self._bd_seq_file = state_dir() / f"sparkplug-{self.group}-{self.node}.bdseq"
        self._next_bd_seq = self._load_bd_seq()
        self._seq = 0
        self._born = False  # NBIRTH sent in this session (and the host, if any, online)
        self._started = False  # subscriptions in place: births may go out
        self._host_ts = -1
        self._client: MqttClient | None = None
        self._devices: dict[str, _Device] = {}  # by asset
        self._by_id: dict[str, _Device] = {}  # by device id
        self._refused: set[str] = set()  # assets not published (not selected, or an id collision)
        self._next_alias = 1
        self._metric_ok: dict[str, bool] = {}

    # ----------------------------------------------------------------- session
    def _load_bd_seq(self) -> int:
        """bdSeq goes on across restarts (a host matches an NDEATH to its NBIRTH by it)."""
        try:
            value = int(self._bd_seq_file.read_text().strip())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("sparkplug: cannot read %s (%s): bdSeq starts at 0", self._bd_seq_file, exc)
            return 0
        return value % 256

    def _save_bd_seq(self) -> None:
        try:
            self._bd_seq_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._bd_seq_file.with_suffix(".tmp")
            tmp.write_text(f"{self._next_bd_seq}\n")
            os.replace(tmp, self._bd_seq_file)  # atomic: never a half-written number
        except OSError as exc:
            log.warning("sparkplug: cannot save bdSeq to %s: %s", self._bd_seq_file, exc)

    def will(self) -> Publication:
        """The NDEATH for the next connect (called by MqttClient before each connect)."""
        self.bd_seq, self._next_bd_seq = self._next_bd_seq, (self._next_bd_seq + 1) % 256
        self._save_bd_seq()
        payload = Payload(timestamp=now_ms())
        set_value(payload.metrics.add(name=BD_SEQ, datatype=INT64), INT64, self.bd_seq)
        return Publication(topic(self.group, "NDEATH", self.node), payload.SerializeToString(), 1, False)

    def on_connect(self) -> None:
        """A new MQTT session: everything must be born again (after the host's STATE, if any)."""
        self.stats.connects += 1
        self._born = False
        if self.config.primary_host_id is not None:
            self.host_online = False  # wait for the (retained) STATE of this session
        self._birth_if_allowed()

    def start(self, client: MqttClient) -> None:
        """Subscriptions are in place: births may go out."""
        self._client = client
        self._started = True
        self._birth_if_allowed()

    def stop(self) -> None:
        """A graceful stop: the NDEATH of this session, since the broker will not send the will."""
        client, self._client, self._started = self._client, None, False
        if client is not None and client.connected and self.bd_seq >= 0:
            payload = Payload(timestamp=now_ms())
            set_value(payload.metrics.add(name=BD_SEQ, datatype=INT64), INT64, self.bd_seq)
            client.publish(topic(self.group, "NDEATH", self.node), payload.SerializeToString(), qos=1)

    def _live(self) -> bool:
        return self._born and self._client is not None and self._client.connected

    def _birth_if_allowed(self) -> None:
        if self._started and self.host_online and self._client is not None and self._client.connected:
            try:
                self.births()
            except Exception as exc:  # called from paho's callbacks and STATE: never raise into them
                self._ignore("could not publish the births", f"{type(exc).__name__}: {exc}"[:200])

    def _next(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) % 256
        return seq

    def _publish(self, kind: str, payload: Payload, device: str | None = None) -> None:
        assert self._client is not None
        self._client.publish(topic(self.group, kind, self.node, device), payload.SerializeToString())

    def births(self) -> None:
        """NBIRTH, then a DBIRTH per device; ``seq`` starts again at 0."""
        self._seq = 0
        stamp = now_ms()
        payload = Payload(timestamp=stamp, seq=self._next())
        set_value(payload.metrics.add(name=BD_SEQ, timestamp=stamp, datatype=INT64), INT64, self.bd_seq)
        set_value(payload.metrics.add(name=REBIRTH, timestamp=stamp, datatype=BOOLEAN), BOOLEAN, False)
        self._publish("NBIRTH", payload)
        self.stats.births += 1
        self._born = True
        for device in self._devices.values():
            self._device_birth(device)
        log.info("sparkplug %s/%s: births sent (bdSeq %d)", self.group, self.node, self.bd_seq)

    def _device_birth(self, device: _Device) -> None:
        stamp = ms(device.ts) if device.ts > 0 else now_ms()
        payload = Payload(timestamp=stamp, seq=self._next())
        for name, alias in device.aliases.items():
            value = device.values.get(name)
            metric = payload.metrics.add(name=name, alias=alias, timestamp=stamp, datatype=DOUBLE)
            set_value(metric, DOUBLE, value)
        self._publish("DBIRTH", payload, device.id)
        device.sent = {k: v for k, v in device.values.items() if v is not None}
        device.born = True
        self.stats.device_births += 1

    # ----------------------------------------------------------------- data
    def observe(self, asset: str, metrics: Mapping[str, float], ts: float) -> None:
        """The latest of ``asset``: DDATA of what changed (or its DBIRTH). Never raises: the agent calls
        it for every asset it evaluates, and one bad name must not end the agent."""
        try:
            self._observe(asset, metrics, ts)
        except Exception as exc:
            self._ignore("could not publish", f"{asset!r}: {type(exc).__name__}: {exc}"[:200])

    def _observe(self, asset: str, metrics: Mapping[str, float], ts: float) -> None:
        device = self._devices.get(asset) or self._device(asset)
        if device is None:
            return
        changed: list[str] = []
        for name, value in metrics.items():
            if name not in device.aliases:
                if not self._metric_selected(name):
                    continue
                device.aliases[name] = self._alias()
                device.born = False
            device.values[name] = value
            changed.append(name)
        device.ts = ts
        if not self._live():
            return
        if not device.born:
            self._device_birth(device)
            return
        deadband = self.config.deadband
        stamp = ms(ts)
        payload = Payload(timestamp=stamp)
        for name in changed:
            value = metrics[name]
            if _changed(value, device.sent.get(name), deadband):
                metric = payload.metrics.add(alias=device.aliases[name], timestamp=stamp)
                set_value(metric, DOUBLE, value)
                device.sent[name] = value
        if payload.metrics:
            payload.seq = self._next()
            self._publish("DDATA", payload, device.id)
            self.stats.data += 1

    def _device(self, asset: str) -> _Device | None:
        if asset in self._refused:
            return None
        if not any(fnmatch.fnmatchcase(asset, p) for p in self.config.devices):
            self._refused.add(asset)
            return None
        if not _encodable(asset):
            self._ignore("asset id not UTF-8", repr(asset)[:80])
            self._refused.add(asset)
            return None
        dev_id = device_id(asset, self.config.device_separator)
        other = self._by_id.get(dev_id)
        if other is not None:
            log.warning(
                "sparkplug: asset %r maps to device id %r, already taken by %r: not published",
                asset,
                dev_id,
                other.asset,
            )
            self._refused.add(asset)
            return None
        device = self._devices[asset] = self._by_id[dev_id] = _Device(asset, dev_id)
        if self.config.setpoint_metric is not None:  # writable through DCMD: announced from the start
            device.aliases[self.config.setpoint_metric] = self._alias()
            device.values[self.config.setpoint_metric] = None
        return device

    def _metric_selected(self, name: str) -> bool:
        ok = self._metric_ok.get(name)
        if ok is None:
            ok = any(fnmatch.fnmatchcase(name, p) for p in self.config.metrics)
            if ok and not _encodable(name):
                self._ignore("metric name not UTF-8", repr(name)[:80])
                ok = False
            if len(self._metric_ok) < 100_000:
                self._metric_ok[name] = ok
        return ok

    def _alias(self) -> int:
        alias, self._next_alias = self._next_alias, self._next_alias + 1
        return alias

    # ----------------------------------------------------------------- commands and host state
    async def on_command(self, link: PlantLink, mqtt_topic: str, raw: bytes) -> None:
        """NCMD (rebirth) or DCMD (setpoint writes → proposals); bad ones are counted and logged."""
        levels = mqtt_topic.split("/")
        try:
            payload = decode(raw, MAX_COMMAND_BYTES)
        except PayloadError as exc:
            self._ignore("bad command payload", f"{mqtt_topic}: {exc}")
            return
        if levels[2] == "NCMD":
            for metric in payload.metrics:
                if metric.name == REBIRTH and metric.WhichOneof("value") == "boolean_value":
                    if metric.boolean_value:
                        self.stats.rebirth_commands += 1
                        if self._live():
                            self.births()
                else:
                    self._ignore("unsupported node command", f"{metric.name or metric.alias}")
            return
        device = self._by_id.get(levels[4]) if len(levels) == 5 else None
        if device is None:
            self._ignore("command for an unknown device", mqtt_topic)
            return
        names = {alias: name for name, alias in device.aliases.items()}
        for metric in payload.metrics:
            name = metric.name if metric.HasField("name") else names.get(metric.alias)
            if name is None or name != self.config.setpoint_metric:
                self._ignore("write to a read-only or unknown metric", f"{device.id} {name or metric.alias}")
                continue
            value = number(metric, metric.datatype or DOUBLE)
            if value is None:
                self._ignore("setpoint write that is not a finite number", device.id)
                continue
            stamp = metric.timestamp or payload.timestamp
            data_ts = stamp / 1000 if stamp else time.time()
            self.stats.proposals += 1
            await link.propose(device.asset, value, self.source, data_ts)

    def on_state(self, raw: bytes) -> bool:
        """The primary host's ``{"online": bool, "timestamp": ms}`` (Sparkplug 3.0 STATE, JSON); True when
        the host went offline and the session must end (the caller ends it, ``stop`` sends NDEATH)."""
        try:
            doc = json.loads(raw)
            online, stamp = doc["online"], doc["timestamp"]
            if type(online) is not bool or type(stamp) is not int:
                raise TypeError("online must be a boolean and timestamp an integer (ms)")
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            self._ignore("bad STATE payload", f"{type(exc).__name__}: {exc}"[:200])
            return False
        if stamp < self._host_ts:
            self._ignore("stale STATE", str(stamp))
            return False
        self._host_ts = stamp
        was_online, self.host_online = self.host_online, online
        if online and not was_online:
            log.info("sparkplug: primary host %s online", self.config.primary_host_id)
            self._birth_if_allowed()
        elif not online and was_online:
            log.warning(
                "sparkplug: primary host %s offline: NDEATH, then a new session that waits for it",
                self.config.primary_host_id,
            )
            self._born = False
            self.stats.host_offline += 1
            return True
        return False

    def _ignore(self, reason: str, detail: str) -> None:  # reason: a fixed text (a counter key)
        self.stats.ignored[reason] += 1
        if self.stats.ignored[reason] <= 10:
            log.warning("sparkplug %s: %s (%s)", self.node, reason, detail)


def _encodable(text: str) -> bool:
    """Whether protobuf can encode ``text`` (a lone surrogate, from a JSON escape, cannot be)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
