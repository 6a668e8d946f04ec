"""History upstream: every accepted reading, in compressed columnar batches, through the disk outbox.

The agent hands each batch of accepted readings to :meth:`HistoryRecorder.add`, which keeps a reference
to it (the sources give the agent a fresh batch per call and never touch it again) and counts: nothing
more on the hot path. ``run`` (in the agent's TaskGroup) cuts a batch every ``every_s``, or as soon as
``max_readings`` are held; a worker thread of its own builds one Polars frame of them, drops the assets
the config leaves out, and encodes it (:mod:`qxedge.connectors.history_wire`: Arrow IPC, zstd), in
slices of at most ``max_readings``; back on the loop each slice goes into the outbox (stream
``history``), which numbers it (``seq``, without gaps across restarts), commits it to disk and sends it
in order at QoS 1. The stream waits for the historian's confirmation on ``qx/v1/{site}/confirm`` before
its records are deleted, whatever ``outbox.confirm`` says of the other streams.

Every batch held is also journaled (:meth:`Outbox.journal`, stream ``history``): the outbox writes the
batches added since its last flush as one row of its SQLite at its next flush (every ``flush_ms``, in
its thread), and deletes them in the transaction that commits the records a cut made of them. At
start the rows a ``kill -9`` left are read back and held for the first cut. So a ``kill -9`` loses only
the readings accepted in the last ``outbox.flush_ms`` (not yet on disk), where it lost those of the
last ``every_s`` before. A graceful stop cuts what is held, on the loop.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import struct
import time
from collections import Counter

import orjson
import polars as pl

from qxedge.agent._patterns import AssetFilter
from qxedge.agent.history_config import HistoryConfig as HistoryConfig
from qxedge.connectors.history_wire import Body, encode_body, frame, payload
from qxedge.connectors.mqtt import site_topic
from qxedge.connectors.outbox import Outbox
from qxedge.connectors.readings import ReadingBatch

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<I")


def encode_journal(batches: list[ReadingBatch]) -> bytes:
    """(the outbox's thread) Batches of readings as one journal row: the length of a JSON array of the
    assets and the signals, that array, then the times and the values as float64 arrays (this
    machine's byte order: the journal never leaves it)."""
    chain = itertools.chain.from_iterable
    names = orjson.dumps([list(chain(b.assets for b in batches)), list(chain(b.signals for b in batches))])
    ts = array.array("d", chain(b.ts for b in batches))
    values = array.array("d", chain(b.values for b in batches))
    return b"".join((_HEAD.pack(len(names)), names, ts.tobytes(), values.tobytes()))


def decode_journal(data: bytes) -> ReadingBatch:
    """A journal row back as one batch of readings."""
    (size,) = _HEAD.unpack_from(data)
    assets, signals = orjson.loads(data[_HEAD.size : _HEAD.size + size])
    numbers = array.array("d")
    numbers.frombytes(data[_HEAD.size + size :])
    n = len(assets)
    if len(signals) != n or len(numbers) != 2 * n:
        raise ValueError(f"a journal row of {n} assets, {len(signals)} signals and {len(numbers)} numbers")
    return ReadingBatch(assets, signals, numbers[:n].tolist(), numbers[n:].tolist())


class HistoryRecorder:
    """``add`` holds accepted readings; ``run`` cuts, encodes (in a thread) and puts batches in the outbox."""

    name = "history"

    def __init__(self, site: str, config: HistoryConfig, outbox: Outbox) -> None:
        self.site = site
        self.config = config
        self.outbox = outbox
        self.topic = site_topic(site, "history")
        # readings: held, batches/sent: put in the outbox, refused: the outbox refused them (full),
        # excluded: left out by include/exclude
        self.stats: Counter[str] = Counter()
        self._held: list[ReadingBatch] = []
        self._count = 0
        self._encoding: list[ReadingBatch] = []  # taken by a cut, not yet in the outbox
        self._due = asyncio.Event()
        self._everything = config.include == ["*"] and not config.exclude
        self._included = AssetFilter(config.include)
        self._excluded = AssetFilter(config.exclude)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-history")
        self.encode_seconds = 0.0
        self.journal = outbox.journal(config.stream, encode_journal)
        self._mark = 0  # the journal's position after the batches of the cut being encoded
        for row in self.journal.restored:  # what a kill -9 left: held for the first cut
            try:
                batch = decode_journal(row)
            except ValueError as exc:
                log.error("history %s: a journal row cannot be read, skipped: %s", site, exc)
                continue
            self._held.append(batch)
            self._count += len(batch)
            self.stats["restored"] += len(batch)
        if self._count:
            log.info("history %s: %d readings from the journal of the last run", site, self._count)

    @property
    def held(self) -> int:
        """Readings held for the next cut."""
        return self._count

    def add(self, batch: ReadingBatch) -> None:
        """Hold a batch of accepted readings (the hot path: a list append)."""
        self._held.append(batch)
        self.journal.add(batch)
        self._count += len(batch)
        if self._count >= self.config.max_readings:
            self._due.set()

    async def run(self) -> None:
        every = self.config.every_s
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await self._due.wait()
                self._due.clear()
                await self.cut()
        finally:
            self._final_cut()
            self._pool.shutdown(wait=False)

    async def cut(self) -> int:
        """Encode what is held (in the worker thread) and put it in the outbox; the batches put."""
        batches = self._take()
        if not batches:
            return 0
        loop = asyncio.get_running_loop()
        bodies = await loop.run_in_executor(self._pool, self._encode, batches)
        self._encoding = []
        return self._put(bodies, self._mark)

    def _take(self) -> list[ReadingBatch]:
        batches, self._held, self._count = self._held, [], 0
        self._encoding = batches
        self._mark = self.journal.mark()
        return batches

    def _final_cut(self) -> None:
        """On stop: what is held and what a cancelled cut was encoding, encoded here (on the loop)."""
        batches = self._encoding + self._held
        self._held, self._count, self._encoding = [], 0, []
        if batches:
            put = self._put(self._encode(batches), self.journal.mark())
            log.info("history %s: %d batches put in the outbox at stop", self.site, put)

    def _encode(self, batches: list[ReadingBatch]) -> list[Body]:
        """(worker thread) One frame of every reading held, less the assets left out, in slices."""
        started = time.perf_counter()
        df = frame(
            list(itertools.chain.from_iterable(b.assets for b in batches)),
            list(itertools.chain.from_iterable(b.signals for b in batches)),
            list(itertools.chain.from_iterable(b.ts for b in batches)),
            list(itertools.chain.from_iterable(b.values for b in batches)),
        )
        if not self._everything:
            assets = df.get_column("asset").unique().to_list()
            sent = [a for a in assets if self._included(a) and not self._excluded(a)]
            before = df.height
            df = df.filter(pl.col("asset").is_in(sent))
            self.stats["excluded"] += before - df.height
        step = self.config.max_readings
        bodies = [encode_body(df.slice(i, step)) for i in range(0, df.height, step)]
        self.encode_seconds += time.perf_counter() - started
        return bodies

    def _put(self, bodies: list[Body], mark: int) -> int:
        """Put the bodies in the outbox; the journal's rows up to ``mark`` (their readings) go with
        them, in the same transaction (refused ones too: counted, not kept)."""
        put = 0
        for body in bodies:

            def make(seq: int, body: Body = body) -> bytes:
                data = payload(self.site, self.config.stream, seq, body)
                self.stats["bytes"] += len(data)
                return data

            if self.outbox.put(self.config.stream, self.topic, make) is None:
                self.stats["refused_batches"] += 1
                self.stats["refused_readings"] += body.rows
            else:
                self.stats["batches"] += 1
                self.stats["readings"] += body.rows
                put += 1
        self.journal.done(mark)
        return put
