"""Readings from Sparkplug B edge nodes of the plant (their NBIRTH / DBIRTH / NDATA / DDATA).

- asset = ``{node}/{device}`` for device metrics, ``{node}`` for node metrics; signal = the metric
  name as sent (``Inputs/temp`` stays ``Inputs/temp``); value: numbers and booleans (1.0 / 0.0); strings,
  bytes, data sets, templates and nulls are skipped (counted);
- a metric name must be valid UTF-8 (protobuf hands proto2 strings that are not as bytes) with 1 to
  ``readings.MAX_NAME_CHARS`` characters and no control character; other metrics are skipped (counted);
- timestamp: the metric's, else the payload's (ms), else the receive time; one further ahead than
  ``max_ahead_s`` is skipped (counted);
- births bind aliases to names (per edge node, across its devices, as the specification says) and their
  values are readings too; a DATA metric with an alias that no birth bound is skipped and the edge node
  is asked for its births again (NCMD ``Node Control/Rebirth``), at most once per ``rebirth_interval_s``;
- an NDEATH whose ``bdSeq`` matches the node's NBIRTH forgets its aliases (a late will of an older
  session is ignored);
- a payload that is not Sparkplug B is counted and logged, never raised.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qxedge.connectors.readings import ReadingBatch, name_problem
from qxedge.connectors.sparkplug_payload import BD_SEQ, Metric, decode, number, rebirth_request, topic
from qxedge.core.errors import PayloadError

if TYPE_CHECKING:
    from qxedge.connectors.sparkplug_config import SparkplugSourceConfig

log = logging.getLogger(__name__)

_KINDS = frozenset({"NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH"})


@dataclass(slots=True)
class SourceStats:
    messages: int = 0
    readings: int = 0
    rebirth_requests: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason → count


@dataclass(slots=True)
class _Node:
    aliases: dict[int, tuple[str | None, str, int]] = field(default_factory=dict)  # → device, name, type
    types: dict[tuple[str | None, str], int] = field(default_factory=dict)  # (device, name) → datatype
    bd_seq: int | None = None
    asked_at: float = -1e18  # monotonic time of the last rebirth request


class SparkplugSource:
    """Decodes batches of Sparkplug messages into readings; ``publish`` sends the rebirth requests."""

    def __init__(
        self,
        config: SparkplugSourceConfig,
        own: tuple[str, str],
        publish: Callable[[str, bytes], object],
    ) -> None:
        self.config = config
        self.own = own  # (group, edge node) of the agent's own edge node: never read back
        self.stats = SourceStats()
        self._publish = publish
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._node_ok: dict[str, bool] = {}
        self._names_ok: set[str] = set()  # metric names already checked

    def decode(self, messages: list[tuple[str, bytes]], received_at: float) -> ReadingBatch:
        batch = ReadingBatch()
        for mqtt_topic, raw in messages:
            levels = mqtt_topic.split("/")
            if len(levels) not in (4, 5) or levels[2] not in _KINDS:
                continue  # commands, STATE, other namespaces
            group, kind, node = levels[1], levels[2], levels[3]
            device = levels[4] if len(levels) == 5 else None
            if (device is None) != kind.startswith("N") or (group, node) == self.own:
                continue
            if not self._wanted(node):
                continue
            self.stats.messages += 1
            try:
                payload = decode(raw, self.config.max_payload_bytes)
            except PayloadError as exc:
                self._skip("bad payload", f"{mqtt_topic}: {exc}")
                continue
            state = self._nodes.setdefault((group, node), _Node())
            if kind == "NDEATH":
                self._death(group, node, state, payload.metrics)
                continue
            if kind == "NBIRTH":
                state.aliases.clear()
                state.types.clear()
                state.bd_seq = next((int(m.long_value) for m in payload.metrics if m.name == BD_SEQ), None)
            elif kind == "DBIRTH":
                state.aliases = {a: v for a, v in state.aliases.items() if v[0] != device}
            birth = kind.endswith("BIRTH")
            asset = node if device is None else f"{node}/{device}"
            default_ts = payload.timestamp / 1000 if payload.timestamp else received_at
            asked = False
            for metric in payload.metrics:
                name, datatype = self._resolve(state, device, metric, birth)
                if name is None:
                    self.stats.skipped["unknown alias"] += 1
                    if not asked:
                        asked = True
                        self._ask_rebirth(group, node, state, metric.alias)
                    continue
                if name not in self._names_ok:
                    problem = name_problem(name, topic_level=False)
                    if problem is not None:
                        self._skip("bad metric name", f"{mqtt_topic} {str(name)[:40]!r}: {problem}")
                        continue
                    if len(self._names_ok) < 100_000:
                        self._names_ok.add(name)
                if birth and (name == BD_SEQ or name.startswith("Node Control/")):
                    continue
                value = number(metric, datatype)
                if value is None:
                    self.stats.skipped["null or not a number"] += 1
                    continue
                ts = metric.timestamp / 1000 if metric.timestamp else default_ts
                if ts > received_at + self.config.max_ahead_s:
                    self._skip("timestamp in the future", f"{mqtt_topic} {name}: {ts - received_at:.0f} s")
                    continue
                batch.append(asset, name, ts, value)
        self.stats.readings += len(batch)
        return batch

    def _resolve(
        self, state: _Node, device: str | None, metric: Metric, birth: bool
    ) -> tuple[str | None, int]:
        if metric.HasField("name") and metric.name:
            name = metric.name
            datatype = metric.datatype or state.types.get((device, name), 0)
            if birth:
                state.types[(device, name)] = datatype
                if metric.HasField("alias"):
                    state.aliases[metric.alias] = (device, name, datatype)
            return name, datatype
        bound = state.aliases.get(metric.alias) if metric.HasField("alias") else None
        if bound is None or bound[0] != device:
            return None, 0
        return bound[1], metric.datatype or bound[2]

    def _death(self, group: str, node: str, state: _Node, metrics: Iterable[Metric]) -> None:
        bd_seq = next((int(m.long_value) for m in metrics if m.name == BD_SEQ), None)
        if state.bd_seq is not None and bd_seq is not None and bd_seq != state.bd_seq:
            self.stats.skipped["NDEATH of an older session"] += 1
            return
        state.aliases.clear()
        state.types.clear()
        state.bd_seq = None
        log.info("sparkplug: edge node %s/%s is offline (NDEATH)", group, node)

    def _ask_rebirth(self, group: str, node: str, state: _Node, alias: int) -> None:
        now = time.monotonic()
        if now - state.asked_at < self.config.rebirth_interval_s:
            return
        state.asked_at = now
        self.stats.rebirth_requests += 1
        log.info("sparkplug: unknown alias %d from %s/%s: asking for a rebirth", alias, group, node)
        self._publish(topic(group, "NCMD", node), rebirth_request())

    def _wanted(self, node: str) -> bool:
        ok = self._node_ok.get(node)
        if ok is None:
            ok = self._node_ok[node] = any(fnmatch.fnmatchcase(node, p) for p in self.config.nodes)
        return ok

    def _skip(self, reason: str, detail: str) -> None:
        self.stats.skipped[reason] += 1
        if self.stats.skipped[reason] <= 10:
            log.warning("sparkplug source: %s (%s)", reason, detail)
