"""``qxedge historian``: the data-center service that turns history batches into Parquet.

Several historians share the subscription ``$share/qx-historians/qx/v1/+/history`` (the broker hands
each batch to one of them). A historian

- decodes and validates every batch (:mod:`qxedge.connectors.history_wire`) in a worker thread; a bad
  one is dead-lettered with its reason under ``{root}/_deadletter/`` and never stops the service (one
  whose header names its site and seq is confirmed once dead-lettered, so the agent does not send it
  for ever);
- buffers the valid ones for ``flush_s`` (or ``flush_rows`` readings), then writes them durably
  (:class:`~qxedge.hybrid.history_store.ParquetStore`: fsync, atomic rename, the ledger as the commit
  point), leaving out every ``(site, stream, seq)`` already written: a batch sent again after a broker
  or agent crash is written once;
- then confirms what it holds, duplicates included, on ``qx/v1/{site}/confirm`` (QoS 1, the format of
  :mod:`qxedge.connectors.confirm`), so the agent's outbox deletes those records;
- logs a gap in a stream's sequence numbers (``missing`` in :meth:`Historian.stats`): numbers the agent
  never sent (its outbox overflowed) or not received yet.

A crash loses nothing: what was not written was not confirmed, and the agent sends it again (after a
reconnect, or once later records are confirmed and ``outbox.confirm_timeout_s`` passed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from qxedge.connectors.confirm import Receipts
from qxedge.connectors.history_wire import NAME, BadBatch, decode_body, decode_header
from qxedge.connectors.mqtt import BrokerConfig, Message, MqttClient, Subscription, site_topic
from qxedge.core.config import resolve_path
from qxedge.hybrid.history_store import Batch, ParquetStore

log = logging.getLogger(__name__)

SHARED_HISTORY = "$share/qx-historians/qx/v1/+/history"


class HistorianConfig(BaseModel):
    """``qxedge historian --config FILE``."""

    model_config = ConfigDict(extra="forbid")

    historian_id: str | None = Field(
        None, description="default: the host name (stable: its persistent session); unique per historian"
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    subscription: str = Field(SHARED_HISTORY, description="where batches come from")
    root: Path = Field(description="the Parquet tree: {root}/site=<site>/date=<YYYY-MM-DD>/part-*.parquet")
    flush_s: float = Field(2.0, gt=0, le=3600, description="batches are written (then confirmed) this often")
    flush_rows: int = Field(500_000, ge=1, description="or as soon as this many readings wait")
    max_batch_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="a larger message is dead-lettered unread"
    )

    @field_validator("root")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        resolved = resolve_path(path, info)
        assert resolved is not None
        return resolved


@dataclass(frozen=True, slots=True)
class HistorianStats:
    """What a historian has done, as of one moment (:meth:`Historian.stats`)."""

    historian: str
    received: int  # messages on the history subscription
    batches: int  # batches written
    rows: int  # readings written
    duplicates: int  # batches already written (sent again): confirmed, not written twice
    deadletters: int  # messages rejected (see {root}/_deadletter/)
    files: int  # Parquet files written
    buffered: int  # readings waiting for the next write
    missing: Mapping[tuple[str, str], int]  # (site, stream) -> sequence numbers missing so far
    broker_connected: bool


def site_of(topic: str) -> str | None:
    """``qx/v1/{site}/history`` → site (None unless it is a plain name)."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["qx", "v1"] and parts[3] == "history" and NAME.match(parts[2]):
        return parts[2]
    return None


@dataclass(frozen=True, slots=True)
class _Rejected:
    topic: str
    payload: bytes
    reason: str
    confirm: tuple[str, str, int] | None  # (site, stream, seq) when the header could be trusted


class Historian:
    """One historian; ``await historian.run(stop)`` runs until ``stop`` is set or it is cancelled."""

    def __init__(self, config: HistorianConfig) -> None:
        self.config = config
        self.historian_id = config.historian_id or socket.gethostname()
        self.store = ParquetStore(config.root, self.historian_id)
        self.counts: Counter[str] = Counter()
        self.missing: dict[tuple[str, str], int] = {}
        self.ready = asyncio.Event()
        self.mqtt: MqttClient | None = None
        self._buffer: list[Batch] = []
        self._buffered = 0
        self._rejected: list[_Rejected] = []
        self._due = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-historian")

    def stats(self) -> HistorianStats:
        c = self.counts
        return HistorianStats(
            historian=self.historian_id,
            received=c["received"],
            batches=c["batches"],
            rows=c["rows"],
            duplicates=c["duplicates"],
            deadletters=c["deadletters"],
            files=c["files"],
            buffered=self._buffered,
            missing=dict(self.missing),
            broker_connected=self.mqtt is not None and self.mqtt.connected,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.open)
        try:
            async with MqttClient(self.config.broker, role=f"historian-{self.historian_id}") as mqtt:
                self.mqtt = mqtt
                batches = await mqtt.subscribe(self.config.subscription, qos=1)
                log.info(
                    "historian %s: writing %s from %s",
                    self.historian_id,
                    self.config.root,
                    self.config.subscription,
                )
                self.ready.set()
                try:
                    async with asyncio.TaskGroup() as tasks:
                        loops = [
                            tasks.create_task(self._receive(batches), name="historian-receive"),
                            tasks.create_task(self._flush_loop(mqtt), name="historian-flush"),
                        ]
                        if stop is not None:
                            await stop.wait()
                            for task in loops:
                                task.cancel()
                finally:
                    await self.flush(mqtt)  # what was received: written and confirmed before leaving
        finally:
            await loop.run_in_executor(self._pool, self.store.close)
            self._pool.shutdown(wait=True)
            log.info(
                "historian %s stopped: %d batches (%d readings) written, %d duplicates, %d dead letters",
                self.historian_id,
                self.counts["batches"],
                self.counts["rows"],
                self.counts["duplicates"],
                self.counts["deadletters"],
            )

    async def _receive(self, subscription: Subscription) -> None:
        async for messages in subscription:
            self.counts["received"] += len(messages)
            good, bad = await asyncio.to_thread(self._decode, messages)
            self._buffer.extend(good)
            self._buffered += sum(b.readings.height for b in good)
            self._rejected.extend(bad)
            if self._buffered >= self.config.flush_rows or bad:
                self._due.set()

    def _decode(self, messages: list[Message]) -> tuple[list[Batch], list[_Rejected]]:
        """(worker thread) Valid batches, and the rejected messages with their reasons."""
        good: list[Batch] = []
        bad: list[_Rejected] = []
        for topic, data in messages:
            site = site_of(topic)
            if site is None:
                bad.append(_Rejected(topic, data, "not a history topic qx/v1/<site>/history", None))
                continue
            if len(data) > self.config.max_batch_bytes:
                reason = f"{len(data)} bytes: over max_batch_bytes ({self.config.max_batch_bytes})"
                bad.append(_Rejected(topic, data, reason, None))
                continue
            try:
                header, body = decode_header(data)
            except BadBatch as exc:
                bad.append(_Rejected(topic, data, str(exc), None))
                continue
            if header.site != site:
                reason = f"the header's site {header.site!r} is not the topic's {site!r}"
                bad.append(_Rejected(topic, data, reason, None))
                continue
            try:
                readings = decode_body(header, body)
            except BadBatch as exc:  # sent again it would be as bad: confirmed once dead-lettered
                bad.append(_Rejected(topic, data, str(exc), (site, header.stream, header.seq)))
                continue
            good.append(Batch(site, header.stream, header.seq, readings))
        return good, bad

    async def _flush_loop(self, mqtt: MqttClient) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.flush_s):
                    await self._due.wait()
            self._due.clear()
            await self.flush(mqtt)

    async def flush(self, mqtt: MqttClient) -> None:
        """Write what is buffered (in the worker thread), then confirm it upstream."""
        batches, self._buffer, self._buffered = self._buffer, [], 0
        rejected, self._rejected = self._rejected, []
        if not batches and not rejected:
            return
        loop = asyncio.get_running_loop()
        try:
            written = await loop.run_in_executor(self._pool, self.store.write, batches)
            for bad in rejected:
                await loop.run_in_executor(
                    self._pool, self.store.deadletter, bad.topic, bad.payload, bad.reason
                )
        except Exception:  # the disk refuses: nothing is confirmed, the agents send it again
            log.exception("historian %s: could not write %d batches", self.historian_id, len(batches))
            self._buffer[:0] = batches
            self._buffered += sum(b.readings.height for b in batches)
            self._rejected[:0] = rejected
            await asyncio.sleep(1.0)
            return
        for bad in rejected:
            log.warning(
                "historian %s: dead-lettered a message on %s: %s", self.historian_id, bad.topic, bad.reason
            )
        self.counts["deadletters"] += len(rejected)
        self.counts["batches"] += len(written.new)
        self.counts["duplicates"] += len(written.duplicates)
        self.counts["rows"] += written.rows
        self.counts["files"] += len(written.files)
        receipts: dict[str, Receipts] = {}
        for b in (*written.new, *written.duplicates):
            receipts.setdefault(b.site, Receipts()).note(b.stream, b.seq)
        for bad in rejected:
            if bad.confirm is not None:
                site, stream, seq = bad.confirm
                receipts.setdefault(site, Receipts()).note(stream, seq)
        for site, notes in receipts.items():
            for confirmation in notes.take():
                mqtt.publish(site_topic(site, "confirm"), confirmation, qos=1)
        await self._check_gaps({(b.site, b.stream) for b in written.new})

    async def _check_gaps(self, streams: set[tuple[str, str]]) -> None:
        loop = asyncio.get_running_loop()
        for site, stream in streams:
            missing = await loop.run_in_executor(self._pool, self.store.missing, site, stream)
            if missing > self.missing.get((site, stream), 0):
                log.warning(
                    "historian %s: site %s stream %s: %d sequence numbers missing so far (not received yet, "
                    "or dropped by the agent's outbox)",
                    self.historian_id,
                    site,
                    stream,
                    missing,
                )
            self.missing[(site, stream)] = missing
