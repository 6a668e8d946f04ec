"""Store-and-forward for everything durable that goes upstream: a SQLite (WAL) outbox.

``async with Outbox(path, config, mqtt) as outbox: outbox.put("telemetry", topic, make)`` gives the
record the next sequence number of its stream (``make(seq)`` builds the payload with it) and returns at
once. Behind it, in the outbox's TaskGroup:

- the *flusher* commits new records to SQLite every ``flush_ms`` in one transaction, in a thread of its
  own (never on the event loop), together with the stream's next sequence number: after a crash
  (``kill -9``) or a reboot the numbering goes on from the last record on disk, so the upstream side
  sees no gap (records not yet committed were never accepted; their numbers are given again);
- the *sender* publishes committed records in order at QoS 1 while the link is up, at most ``inflight``
  unacknowledged at a time; paho re-sends the unacknowledged ones after a reconnect, and the records
  present at start-up are replayed first. A record is deleted only after the broker's PUBACK for it;
  one acknowledged just before a crash may be sent again: consumers de-duplicate by ``(stream, seq)``.
- with ``confirm: upstream`` a record is deleted only when the consumer confirms it
  (``connectors/confirm.py``): a broker killed with SIGKILL may come back without records it had
  acknowledged. What the broker acknowledged and the consumer did not confirm is sent again (in id
  order, before anything new, loaded in chunks) after each reconnect, and once a confirmation of
  records of its stream acknowledged after it is ``confirm_timeout_s`` old (a broker behind a bridge
  may lose it without the agent's link going down). A graceful exit then waits for confirmations
  (of the streams whose consumer has confirmed anything since the start: with none listening it would
  only wait out ``drain_timeout_s``). ``confirm_streams`` names streams that always wait for their
  consumer's confirmation, whatever ``confirm`` says (the history stream: the historian confirms it).

Bounded: at most ``max_messages`` records on disk. ``overflow: drop_oldest`` (default) deletes the
oldest records to make room, ``refuse_new`` refuses new ones; either way they are counted in ``stats``
(``overflow_dropped`` / ``refused``) and ``alarm`` is called once per overflow episode. When the disk
refuses a write (full, read-only) the records wait in memory (at most ``max_pending``, then new ones are
refused and counted), ``error`` says why, and the writes resume when the disk takes them again; SQLite's
transactions keep the file consistent throughout.

Graceful exit: pending records are committed, the sender gets up to ``drain_timeout_s`` to have the rest
acknowledged, and whatever is left stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import itertools
import logging
import sqlite3
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from qxedge.connectors.confirm import BadConfirmation, merged, parse_confirmation
from qxedge.connectors.mqtt import Message, MqttClient
from qxedge.connectors.outbox._journal import Journal
from qxedge.connectors.outbox.config import OutboxConfig
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The send loop publishes SEND_SLICE records, then lets the loop run for SEND_PAUSE_S: ~6,000 records/s
# upstream at most (a backlog drains ~8x slower than unpaced, a graceful stop's drain is not paced), and
# the agent's own work never waits behind more than a slice. Sent in one go, the thousand telemetry
# records of a 1,000-asset plant held the loop (publishes, then their acks) for ~0.2 s every 5 s, and a
# setpoint published then waited behind them (bench/latency.py --telemetry).
SEND_SLICE = 8
SEND_PAUSE_S = 0.001

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- send order
    stream TEXT NOT NULL,                   -- e.g. telemetry
    seq INTEGER NOT NULL,                   -- per stream, in the payload: consumers de-duplicate by it
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (        -- items accepted, not in a record yet (_journal.py)
    stream TEXT NOT NULL,
    upto INTEGER NOT NULL,                  -- the stream's item count after this row's items
    payload BLOB NOT NULL,
    PRIMARY KEY (stream, upto)
);
CREATE TABLE IF NOT EXISTS durable_keys (   -- the keys of the when_durable callbacks of the last flush
    a INTEGER NOT NULL,                     -- (the agent's: packet id and payload CRC-32 of plant
    b INTEGER NOT NULL                      -- readings whose PUBACK may not have gone out)
);
"""


class OutboxError(ConnectorError):
    """The outbox file cannot be opened or is not an outbox."""


@dataclass(frozen=True, slots=True)
class _Record:
    stream: str
    seq: int
    topic: str
    payload: bytes
    ts: float


_Row = tuple[int, str, int, str, bytes]  # id, stream, seq, topic, payload
_ROW = "SELECT id, stream, seq, topic, payload FROM outbox"
_Key = tuple[str, int]  # stream, seq
_Journaled = dict[str, list[tuple[int, bytes]]]  # stream -> its journal rows (upto, payload), in order
_Taken = list[tuple[Journal[Any], tuple[list[tuple[int, list[Any]]], int]]]  # see Journal._take


_Opened = tuple[sqlite3.Connection, dict[str, int], int, _Journaled, list[tuple[int, int]]]


def _connect(path: Path, max_pages: int | None) -> _Opened:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed record (and the stream's next seq) survives a power loss too, so a seq is
        # never handed out twice; one fsync per flush (every flush_ms), not per record
        db.execute("PRAGMA synchronous=FULL")
        if max_pages is not None:
            db.execute(f"PRAGMA max_page_count={int(max_pages)}")
        db.executescript(SCHEMA)
        streams = dict(db.execute("SELECT name, next_seq FROM streams").fetchall())
        depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        journaled: _Journaled = defaultdict(list)
        for stream, upto, payload in db.execute(
            "SELECT stream, upto, payload FROM journal ORDER BY stream, upto"
        ):
            journaled[stream].append((int(upto), bytes(payload)))
        keys = [(int(a), int(b)) for a, b in db.execute("SELECT a, b FROM durable_keys")]
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db, streams, int(depth), dict(journaled), keys


class Outbox:
    """A durable, bounded, in-order QoS 1 outbox on one MQTT client; use ``async with``."""

    def __init__(
        self,
        path: Path,
        config: OutboxConfig,
        mqtt: MqttClient,
        *,
        alarm: Callable[[str], None] | None = None,
        max_pages: int | None = None,
        confirm_topic: str | None = None,
        confirm_streams: Collection[str] = (),
    ) -> None:
        """``confirm_topic``: where the consumer confirms (needed with ``confirm: upstream`` or
        ``confirm_streams``). ``confirm_streams``: streams whose records wait for the consumer's
        confirmation whatever ``config.confirm`` says (history: the historian confirms it).
        ``max_pages``: a hard cap on the file in SQLite pages (tests use it as a full disk)."""
        if (config.confirm == "upstream" or confirm_streams) and not confirm_topic:
            raise OutboxError("outbox confirm: upstream needs the topic the consumer confirms on")
        self._confirm_all = config.confirm == "upstream"
        self._confirm_streams = frozenset(confirm_streams)
        self.confirm_topic = confirm_topic if self._confirm_all or self._confirm_streams else None
        self.path = path
        self.config = config
        self.mqtt = mqtt
        self.alarm = alarm
        self.max_pages = max_pages
        self.stats: Counter[str] = Counter()
        self.depth = 0  # records on disk, not yet acknowledged
        self.error: str | None = None  # why the disk refuses writes, while it does
        self.overflowing = False
        self._next_seq: dict[str, int] = {}
        self._pending: list[_Record] = []
        self._acked: list[int] = []
        self._ready: deque[_Row] = deque()
        self._loaded_upto = 0  # highest id read from disk for sending
        self._more_on_disk = True
        self._inflight: dict[int, _Row] = {}  # mid -> record
        # confirm: upstream: acknowledged by the broker, in PUBACK order -> (id, PUBACK time)
        self._unconfirmed: dict[_Key, tuple[int, float]] = {}
        self._confirmed_early: set[_Key] = set()  # confirmed before the broker's PUBACK came
        # per stream, (when, the latest PUBACK among the records it confirmed) of each confirmation, kept
        # for confirm_timeout_s; then what was acknowledged before that PUBACK and is still not
        # confirmed was passed over: the consumer will not get it
        self._confirmations: defaultdict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._passed_over: dict[str, float] = {}
        self._confirming: set[str] = set()  # streams whose consumer confirmed something since the start
        self._again_ids: deque[int] = deque()  # to send again, in id order, not loaded yet
        self._again: deque[_Row] = deque()  # loaded from _again_ids, sent before _ready
        self._reconnects = mqtt.reconnects
        self._closing = False
        self._db: sqlite3.Connection | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-outbox")
        self._flush_lock = asyncio.Lock()
        self._flush_wake = asyncio.Event()
        self._hurry = asyncio.Event()  # someone waits for the next flush (when_durable): no flush_ms wait
        self._durable_waiters: list[tuple[Callable[[], None], Sequence[tuple[int, int]]]] = []
        self.durable_keys: list[tuple[int, int]] = []  # those of the last run's last durable flush
        self._send_wake = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._journals: dict[str, Journal[Any]] = {}
        self._journaled: _Journaled = {}  # the journal rows found at open, until claimed

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Outbox:
        loop = asyncio.get_running_loop()
        try:
            (
                self._db,
                self._next_seq,
                self.depth,
                self._journaled,
                self.durable_keys,
            ) = await loop.run_in_executor(self._pool, _connect, self.path, self.max_pages)
        except (OSError, sqlite3.Error) as exc:
            self._pool.shutdown(wait=False)
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc
        self.stats["replayed"] = self.depth
        if self.depth:
            log.info(
                "outbox %s: %d records from before the restart, sending them first", self.path, self.depth
            )
        self.mqtt.ack_listener = self._on_ack
        if self.confirm_topic is not None:
            try:
                await self.mqtt.subscribe(self.confirm_topic, 1, on_batch=self._on_confirmations)
            except BaseException:
                self.mqtt.ack_listener = None
                db, self._db = self._db, None
                if db is not None:
                    await loop.run_in_executor(self._pool, db.close)
                self._pool.shutdown(wait=False)
                raise
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [
            tasks.create_task(self._flush_loop(), name=f"outbox-flush[{self.path.name}]"),
            tasks.create_task(self._send_loop(), name=f"outbox-send[{self.path.name}]"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        try:
            deadline = time.monotonic() + self.config.drain_timeout_s
            with contextlib.suppress(sqlite3.Error):
                await self._flush()
                while self._left_to_drain() and self.mqtt.connected and time.monotonic() < deadline:
                    self._send_wake.set()
                    await asyncio.sleep(0.02)
                    await self._flush()
        finally:
            for task in self._tasks:
                task.cancel()
            await self._stack.aclose()
            with contextlib.suppress(sqlite3.Error):
                await self._flush()
            if self.mqtt.ack_listener == self._on_ack:
                self.mqtt.ack_listener = None
            loop = asyncio.get_running_loop()
            if self._db is not None:
                await loop.run_in_executor(self._pool, self._db.close)
            self._pool.shutdown(wait=True)
            left = self.depth + len(self._pending)
            log.info("outbox %s closed: %d records left for the next start", self.path, left)

    def _left_to_drain(self) -> int:
        """What a graceful stop waits for: every record on disk or pending, less those the broker
        acknowledged whose stream's consumer has confirmed nothing since the start (no consumer is
        listening: waiting would only delay the stop; they are sent again at the next start)."""
        idle = sum(1 for stream, _ in self._unconfirmed if stream not in self._confirming)
        return self.depth + len(self._pending) - idle

    # ----------------------------------------------------------------- API
    def put(self, stream: str, topic: str, make: Callable[[int], bytes]) -> int | None:
        """Accept a record: its sequence number, or None when refused (full, or the disk refuses writes
        and ``max_pending`` records already wait in memory). Never blocks."""
        cfg = self.config
        if self._closing:
            self.stats["refused"] += 1
            return None
        if len(self._pending) >= cfg.max_pending:
            self.stats["refused"] += 1
            return None
        if cfg.overflow == "refuse_new" and self.depth + len(self._pending) >= cfg.max_messages:
            self.stats["refused"] += 1
            self._overflow(f"outbox full ({cfg.max_messages} records): refusing new records")
            return None
        seq = self._next_seq.get(stream, 0)
        payload = make(seq)
        self._next_seq[stream] = seq + 1
        self._pending.append(_Record(stream, seq, topic, payload, time.time()))
        self.stats["accepted"] += 1
        if len(self._pending) == 1:
            self._flush_wake.set()
        return seq

    def journal(self, stream: str, encode: Callable[[list[T]], bytes]) -> Journal[T]:
        """``stream``'s journal (``_journal.py``): items durable at the next flush until the records
        made of them are; its ``restored`` rows are those the last run left. ``encode`` (a list of
        items -> bytes) is called in the outbox's thread."""
        if stream in self._journals:
            raise OutboxError(f"outbox {self.path}: stream {stream!r} has a journal already")
        restored = self._journaled.pop(stream, [])
        journal: Journal[T] = Journal(stream, encode, restored, self._flush_wake)
        self._journals[stream] = journal
        if restored:
            log.info(
                "outbox %s: %d journal rows of %s from before the restart", self.path, len(restored), stream
            )
        return journal

    def when_durable(self, callback: Callable[[], None], keys: Sequence[tuple[int, int]] = ()) -> None:
        """Call ``callback`` (on the loop) once every record put and every journal item added so far is
        on disk: after the next flush, which starts at once (no ``flush_ms`` wait; callers waiting
        together share one transaction). The agent acknowledges plant readings to their broker so.
        ``keys`` go to disk in that transaction, replacing the last one's: after a crash
        :attr:`durable_keys` says whose callbacks may not have run (the agent: the readings the broker
        may send again). While the disk refuses writes (``error``), at once: the readings must go on to
        the control loop; the loss is the disk's, alarmed and counted (``undurable``)."""
        if self.error is not None:
            self.stats["undurable"] += 1
            self._call(callback)
            return
        self._durable_waiters.append((callback, keys))
        self._flush_wake.set()
        self._hurry.set()

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("outbox %s: a durability callback failed", self.path)

    def _durable(self, waiters: list[tuple[Callable[[], None], Sequence[tuple[int, int]]]]) -> None:
        for callback, _keys in waiters:
            self._call(callback)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def pending(self) -> int:
        """Records accepted and not yet on disk."""
        return len(self._pending)

    # ----------------------------------------------------------------- disk
    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wake.wait()
            with contextlib.suppress(TimeoutError):  # group commit, unless someone waits for it
                async with asyncio.timeout(self.config.flush_ms / 1000):
                    await self._hurry.wait()
            self._flush_wake.clear()
            self._hurry.clear()
            try:
                await self._flush()
            except sqlite3.Error:
                await asyncio.sleep(1.0)  # the disk refuses writes: try again in a second
                self._flush_wake.set()

    async def _flush(self) -> None:
        """Delete acknowledged records, then commit pending ones (two transactions, off the loop)."""
        async with self._flush_lock:
            rows, acked = self._pending, self._acked
            journals: _Taken = [(j, t) for j in self._journals.values() if (t := j._take()) is not None]
            waiters, self._durable_waiters = self._durable_waiters, []
            if not rows and not acked and not journals:
                self._durable(waiters)  # what they wait for is on disk already
                return
            self._pending, self._acked = [], []
            loop = asyncio.get_running_loop()
            deleted = dropped = dropped_upto = 0
            try:
                if acked:  # its own transaction: deleting is what frees room on a full disk
                    deleted = await loop.run_in_executor(self._pool, self._delete, acked)
                    acked = []
                excess = 0  # counted after the acknowledged records are gone: they made room
                if self.config.overflow == "drop_oldest" and rows:  # (journal rows alone drop nothing)
                    excess = max(0, self.depth - deleted + len(rows) - self.config.max_messages)
                if rows or journals:
                    keys = [k for _, waiter_keys in waiters for k in waiter_keys]
                    dropped, dropped_upto = await loop.run_in_executor(
                        self._pool, self._insert, rows, excess, journals, keys
                    )
            except sqlite3.Error as exc:
                self.depth -= deleted
                self._pending[:0] = rows
                self._acked[:0] = acked
                for journal, taken in journals:
                    journal._failed(taken)
                self.stats["write_errors"] += 1
                if self.error is None:
                    log.error(
                        "outbox %s: the disk refuses writes (%s): %d records wait in memory, at most %d",
                        self.path,
                        exc,
                        len(self._pending),
                        self.config.max_pending,
                    )
                    if self.alarm is not None:
                        self.alarm(f"outbox disk error: {exc}")
                self.error = str(exc)
                self.stats["undurable"] += len(waiters)
                self._durable(waiters)  # see when_durable: readings are not held up by a failed disk
                raise
        self._durable(waiters)
        if self.error is not None:
            log.warning("outbox %s: the disk takes writes again", self.path)
            self.error = None
        for journal, taken in journals:
            journal._committed(taken)
        self.stats["written"] += len(rows)
        self.depth += len(rows) - deleted - dropped
        if dropped:
            self.stats["overflow_dropped"] += dropped
            for queue in (self._ready, self._again):  # each in id order
                while queue and queue[0][0] <= dropped_upto:
                    queue.popleft()
            while self._again_ids and self._again_ids[0] <= dropped_upto:
                self._again_ids.popleft()
            self._loaded_upto = max(self._loaded_upto, dropped_upto)
            if len(self._unconfirmed) > 2 * self.config.max_messages:  # gone from disk: never sent again
                self._unconfirmed = {k: v for k, v in self._unconfirmed.items() if v[0] > dropped_upto}
            self._overflow(f"outbox full ({self.config.max_messages} records): dropped the {dropped} oldest")
        elif self.overflowing and self.depth < 0.9 * self.config.max_messages:
            self.overflowing = False
            log.warning("outbox %s: below its limit again", self.path)
        if rows:
            self._more_on_disk = True
            self._send_wake.set()

    def _delete(self, acked: list[int]) -> int:
        """(worker thread) Delete acknowledged records → how many there were."""
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.executemany("DELETE FROM outbox WHERE id = ?", ((i,) for i in acked)).rowcount
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return deleted

    def _encoded(
        self, journal: Journal[Any], sealed: list[tuple[int, list[Any]]]
    ) -> list[tuple[str, int, bytes]]:
        """(worker thread) The journal rows of ``sealed``, encoded before the transaction: an item its
        encoder cannot take costs that group its journaling (logged), never this flush's records."""
        out = []
        for upto, items in sealed:
            try:
                out.append((journal.stream, upto, journal.encode(items)))
            except Exception:
                log.exception(
                    "outbox %s: journal %s: %d items not journaled", self.path, journal.stream, len(items)
                )
        return out

    def _insert(
        self,
        rows: list[_Record],
        excess: int,
        journals: _Taken | None = None,
        keys: list[tuple[int, int]] | None = None,
    ) -> tuple[int, int]:
        """(worker thread) Commit new records, dropping the ``excess`` oldest, with the journals' new
        rows and the deletion of those the records replace, and the durable keys (see when_durable)
        → (dropped, highest id)."""
        db = self._db
        assert db is not None
        encoded = [
            (journal, self._encoded(journal, sealed), delete_upto)
            for journal, (sealed, delete_upto) in journals or []
        ]
        db.execute("BEGIN IMMEDIATE")
        try:
            for journal, sealed_rows, delete_upto in encoded:
                if sealed_rows:
                    db.executemany(
                        "INSERT INTO journal (stream, upto, payload) VALUES (?, ?, ?)", sealed_rows
                    )
                if delete_upto:
                    db.execute(
                        "DELETE FROM journal WHERE stream = ? AND upto <= ?", (journal.stream, delete_upto)
                    )
            if keys:
                db.execute("DELETE FROM durable_keys")
                db.executemany("INSERT INTO durable_keys (a, b) VALUES (?, ?)", keys)
            dropped = dropped_upto = 0
            if rows:
                db.executemany(
                    "INSERT INTO outbox (stream, seq, topic, payload, ts) VALUES (?, ?, ?, ?, ?)",
                    ((r.stream, r.seq, r.topic, r.payload, r.ts) for r in rows),
                )
                last = {r.stream: r.seq + 1 for r in rows}
                db.executemany(
                    "INSERT INTO streams (name, next_seq) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET next_seq = excluded.next_seq",
                    last.items(),
                )
            if excess:
                found = db.execute(
                    "SELECT MAX(id), COUNT(*) FROM (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                ).fetchone()
                dropped_upto, dropped = int(found[0] or 0), int(found[1])
                db.execute("DELETE FROM outbox WHERE id <= ?", (dropped_upto,))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return dropped, dropped_upto

    def _load(self, after: int, limit: int) -> list[_Row]:
        assert self._db is not None
        return self._db.execute(f"{_ROW} WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()

    def _load_ids(self, ids: list[int]) -> list[_Row]:
        """(worker thread) The records with these ids still on disk, in id order."""
        assert self._db is not None
        rows: list[_Row] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(f"{_ROW} WHERE id IN ({marks}) ORDER BY id", chunk).fetchall()
        return rows

    def _overflow(self, reason: str) -> None:
        if not self.overflowing:
            self.overflowing = True
            log.error("%s (%s)", reason, self.path)
            if self.alarm is not None:
                self.alarm(reason)

    # ----------------------------------------------------------------- sending
    def _on_ack(self, mid: int) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # another publish of the same client
        self.stats["acked"] += 1
        self._send_wake.set()
        if self.confirm_topic is None or not (self._confirm_all or row[1] in self._confirm_streams):
            self._done(row[0])
            return
        key = (row[1], row[2])
        if key in self._confirmed_early:
            self._confirmed_early.discard(key)
            self._done(row[0])
        else:
            self._unconfirmed[key] = (row[0], time.monotonic())

    def _done(self, row_id: int) -> None:
        """The record is where it must be: delete it at the next flush."""
        self._acked.append(row_id)
        if len(self._acked) == 1:
            self._flush_wake.set()

    def _on_confirmations(self, batch: list[Message]) -> None:
        for _topic, payload in batch:
            try:
                confirmation = parse_confirmation(payload)
            except BadConfirmation as exc:
                self.stats["bad_confirmations"] += 1
                log.warning("outbox %s: %s", self.path, exc)
                continue
            if confirmation.stream in self._next_seq:  # one of ours (the set stays bounded)
                self._confirming.add(confirmation.stream)
            self._confirm(confirmation.stream, merged(confirmation.seqs))

    def _confirm(self, stream: str, runs: list[tuple[int, int]]) -> None:
        """Done with what ``runs`` (sorted, disjoint) covers; at most min(their width, what waits x
        log(runs)) steps, however many numbers a confirmation names."""
        starts = [first for first, _ in runs]

        def covered(seq: int) -> bool:
            i = bisect.bisect_right(starts, seq) - 1
            return i >= 0 and seq <= runs[i][1]

        if sum(last - first + 1 for first, last in runs) <= len(self._unconfirmed):
            keys = [(stream, seq) for first, last in runs for seq in range(first, last + 1)]
        else:  # wide ranges: look at what waits instead
            keys = [k for k in self._unconfirmed if k[0] == stream and covered(k[1])]
        confirmed, latest = 0, 0.0
        for key in keys:
            found = self._unconfirmed.pop(key, None)
            if found is not None:
                self._done(found[0])
                confirmed += 1
                latest = max(latest, found[1])
        for row in self._inflight.values():  # its PUBACK is still on the way
            if row[1] == stream and covered(row[2]):
                self._confirmed_early.add((stream, row[2]))
        if len(self._confirmed_early) > 10 * self.config.inflight:
            self._confirmed_early.clear()  # PUBACKs that never came: sent again, confirmed again
        if confirmed:
            self.stats["confirmed"] += confirmed
            self._confirmations[stream].append((time.monotonic(), latest))

    def _unconfirmed_lost(self) -> list[_Key]:
        """What the broker acknowledged and the consumer may never get: all of it after a reconnect
        (the broker may have crashed), else what confirmations of its stream passed over
        ``confirm_timeout_s`` ago."""
        if self.mqtt.reconnects != self._reconnects:
            self._reconnects = self.mqtt.reconnects
            return list(self._unconfirmed)
        old = time.monotonic() - self.config.confirm_timeout_s
        passed = self._passed_over
        for stream, done in self._confirmations.items():
            while done and done[0][0] < old:
                passed[stream] = max(passed.get(stream, 0.0), done.popleft()[1])
        return list(
            itertools.takewhile(lambda k: self._unconfirmed[k][1] < passed.get(k[0], 0.0), self._unconfirmed)
        )

    def _queue_again(self, keys: list[_Key]) -> None:
        """Send these records again, in id order, before anything not sent yet."""
        ids = [self._unconfirmed.pop(k)[0] for k in keys]
        self.stats["resent"] -= len(self._again)  # counted again when loaded again
        self._again_ids = deque(sorted(itertools.chain(ids, self._again_ids, (r[0] for r in self._again))))
        self._again.clear()
        log.info("outbox %s: sending %d records again (not confirmed upstream)", self.path, len(ids))

    async def _wait(self, seconds: float) -> None:
        self._send_wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._send_wake.wait()

    async def _send_loop(self) -> None:
        window = self.config.inflight
        loop = asyncio.get_running_loop()
        while True:
            if not self.mqtt.connected or len(self._inflight) >= window:
                await self._wait(0.1)
                continue
            if self.confirm_topic is not None:
                if lost := self._unconfirmed_lost():
                    self._queue_again(lost)
                if not self._again and self._again_ids:  # in chunks, as from disk
                    ids = [self._again_ids.popleft() for _ in range(min(4 * window, len(self._again_ids)))]
                    again = await loop.run_in_executor(self._pool, self._load_ids, ids)
                    self._again.extend(again)
                    self.stats["resent"] += len(again)
                    continue
            queue = self._again or self._ready
            if not queue:
                if not self._more_on_disk:
                    await self._wait(1.0)
                    continue
                self._more_on_disk = False
                rows = await loop.run_in_executor(self._pool, self._load, self._loaded_upto, 4 * window)
                rows = [r for r in rows if r[0] > self._loaded_upto]  # overflow may have moved past them
                if rows:
                    self._ready.extend(rows)
                    self._loaded_upto = rows[-1][0]
                    self._more_on_disk = True
                continue
            for _ in range(SEND_SLICE):
                if not queue or len(self._inflight) >= window:
                    break
                row = queue[0]
                mid = self.mqtt.publish_tracked(row[3], row[4])
                if mid is None:  # not connected, or paho's queue is full: wait instead of spinning
                    await self._wait(0.1)
                    break
                queue.popleft()
                self._inflight[mid] = row
                self.stats["sent"] += 1
            paced = (self._again or self._ready) and not self._closing
            await asyncio.sleep(SEND_PAUSE_S if paced else 0)  # the socket writer, the acks, the agent
