"""The audit log: every proposal, verdict, refused result and read-back, append-only, in SQLite.

One row per event with its provenance (input window, model, sha256, provider, job id, solver, energy,
deadline), the verdict and its reason, and the hash of the config that decided it. The file survives
restarts (WAL mode); the oldest rows, once older than ``retention_days``, are deleted when the log
opens and every hour. ``qxedge audit`` reads it, ``qxedge audit verify`` checks its hash chain.

How a row gets there. A proposal's row is on disk before its setpoint is written, so writing it is on
the reading → setpoint path (bench/latency.py):

- ``record`` / ``write`` append the row, with its id, as one JSON line to the open segment file
  (``<log>.rows-<n>``): one ``write`` of a few hundred bytes on the event loop, ~20 µs (its hash
  ~2 µs of it, ~5 µs with a key). From then on the row is as durable as a row in SQLite's WAL with
  ``synchronous=NORMAL`` (a process crash loses nothing, a power cut may lose the last writes). An
  INSERT costs ~15 system calls here (four B-tree pages appended to the WAL, its locks), 0.15-0.2 ms a
  setpoint on this machine kind, and handing it to a thread and back 0.3 ms;
- every ``FLUSH_S`` the log's thread inserts the segment's rows into SQLite in one transaction and
  deletes the segment; the loop has switched to a fresh segment the thread opened beforehand, so it
  never creates or deletes a file. ``query`` (``qxedge audit``) reads the segments too: it sees
  every row on disk, flushed or not. While SQLite cannot take rows (a full disk, an I/O error) they
  stay in their segment and are tried again at the next flush; a row it refuses for itself goes to
  ``<log>.refused``;
- at open, the segments a crash left behind are inserted first, in order: a row inserted before the
  crash is not inserted twice (same id), and a line the crash cut short is skipped. One process at a
  time holds a log (a lock file next to it): two agents on one file would reuse each other's ids.

Tamper evidence (docs/audit.md). Each row is chained to the one before by its hash (agent/auditchain.py),
computed when it is appended; every ``checkpoint_rows`` rows or ``checkpoint_s`` seconds the newest row's
id and hash are recorded in ``audit_checkpoints`` and given to ``anchor`` (the telemetry stream: the
upstream copy). Retention deletes the oldest rows only as a prefix, and records the last deleted row's id
and hash (``audit_retention``, and a chained ``retention`` row): the rows kept still verify. A log from
before the chain gets its columns at open, its rows chained from GENESIS (a chained ``migrated`` row
says so). :func:`verify` is ``qxedge audit verify``.

Repeats (``tally``): refusals and no-ops get a row for the first of their kind in ``summary_s``; the
others are counted, and one row with their ``count`` closes the interval.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import heapq
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from qxedge.agent._jsonbytes import dumps
from qxedge.agent.auditchain import (
    GENESIS,
    Anchor,
    Checkpoint,
    Verification,
    chain_name,
    check,
    digest,
    read_key,
)
from qxedge.core.errors import AuditError

if TYPE_CHECKING:
    from qxedge.agent.safety import AuditConfig

log = logging.getLogger(__name__)

FLUSH_S = 0.1  # how often the appended rows move into SQLite
PRUNE_EVERY_S = 3600
CHECKPOINT_ROWS = 1000
CHECKPOINT_S = 60.0
SUMMARY_S = 60.0
MAX_TALLIES = 10_000  # kinds of repeats counted apart in one interval (each costs a dict entry)
Row = tuple[Any, ...]  # the values of COLUMNS, in order

APPEND_ONLY = """CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    site TEXT NOT NULL,
    kind TEXT NOT NULL,           -- proposal | result | readback | lock
    asset TEXT,
    source TEXT,
    proposed REAL,
    verdict TEXT NOT NULL,        -- accepted | clamped | refused | confirmed | alarm | locked | unlocked
    value REAL,
    reason TEXT,
    limit_name TEXT,
    dry_run INTEGER NOT NULL DEFAULT 0,
    provenance TEXT NOT NULL DEFAULT '{{}}',
    config_hash TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1, -- events the row stands for (a summary of repeats: more than one)
    prev_hash TEXT,               -- the hash of the row before (auditchain.GENESIS for the first)
    hash TEXT                     -- H(prev_hash || the columns id..count as a JSON array)
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_asset ON audit (asset, ts);
{APPEND_ONLY}
CREATE TABLE IF NOT EXISTS audit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    row_id INTEGER PRIMARY KEY, hash TEXT NOT NULL, ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_retention (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    upto_id INTEGER NOT NULL,     -- the last row deleted: the retained rows chain from its hash
    upto_hash TEXT NOT NULL,
    deleted INTEGER NOT NULL
);
"""
CHAINED = ("count", "prev_hash", "hash")  # the columns the chain added
COLUMNS = (
    "id",
    "ts",
    "site",
    "kind",
    "asset",
    "source",
    "proposed",
    "verdict",
    "value",
    "reason",
    "limit_name",
    "dry_run",
    "provenance",
    "config_hash",
    *CHAINED,
)
CONTENT = COLUMNS[:-2]  # what a row's hash covers (with its prev_hash)
_OLD_WIDTH = len(COLUMNS) - len(CHAINED)  # a row of a segment from before the chain
_NUMBERS = re.compile(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


INSERT = (
    f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING"  # a row inserted before a crash or a failed flush: not twice
)


@dataclass(slots=True)
class _Tally:
    """Repeats of one kind of event in the current summary interval (the first has its own row)."""

    started: float  # monotonic
    count: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)  # the newest repeat's


Note = tuple[str, str, str, dict[str, Any]]  # (kind, verdict, reason, provenance): a row to append


class AuditLog:
    """``async with AuditLog(path, site, config_hash, retention_days) as audit: await audit.write(...)``.

    ``write``, ``record`` and ``tally`` run on the event loop's thread; a row is on disk when they
    return. ``anchor``, when set, gets every checkpoint (``{"id", "hash", "ts"}``) to send upstream."""

    def __init__(
        self,
        path: Path,
        site: str,
        config_hash: str,
        retention_days: float,
        *,
        key: bytes | None = None,
        checkpoint_rows: int = CHECKPOINT_ROWS,
        checkpoint_s: float = CHECKPOINT_S,
        summary_s: float = SUMMARY_S,
    ) -> None:
        self.path = path
        self.site = site
        self.config_hash = config_hash
        self.retention_s = retention_days * 86400
        self.key = key
        self.checkpoint_rows = checkpoint_rows
        self.checkpoint_s = checkpoint_s
        self.summary_s = summary_s
        self.anchor: Callable[[Mapping[str, Any]], bool] | None = None
        self.rows = 0
        self.checkpoints = 0  # taken (recorded locally; given to anchor when set)
        self.unanchored = 0  # checkpoints anchor refused or failed to take
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-audit")
        self._db: sqlite3.Connection | None = None  # the log's thread only
        self._lock: int | None = None  # the lock file's descriptor while the log is open
        self._segment: tuple[int, Path] = (-1, path)  # (descriptor, path) rows are appended to
        self._pending: list[Row] = []  # appended, not yet in SQLite
        self._unsaved: list[Path] = []  # segments of pending rows besides the current one
        self._segments = 0  # segment files made so far (their number)
        self._next_id = 1
        self._last_hash = GENESIS  # the hash the next row chains from
        self._since_checkpoint = 0  # rows saved since the last checkpoint
        self._checkpoint_at = time.monotonic()
        self._tallies: dict[tuple[Any, ...], _Tally] = {}
        self._notes: list[Note] = []  # rows the log's thread asks to append (retention, migration)
        self._pruned_at = 0.0
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    def configured(cls, config: AuditConfig, site: str, config_hash: str) -> AuditLog:
        """The log an agent config describes (its key read now: a missing key fails the start)."""
        key = None if config.key_file is None else read_key(config.key_file)
        return cls(
            config.resolved(site),
            site,
            config_hash,
            config.retention_days,
            key=key,
            checkpoint_rows=config.checkpoint_rows,
            checkpoint_s=config.checkpoint_s,
            summary_s=config.summary_s,
        )

    async def __aenter__(self) -> AuditLog:
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._open)
        except BaseException:
            self._pool.shutdown()
            raise
        self._append_notes()
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._flusher = tasks.create_task(self._flush_every(FLUSH_S), name=f"audit-flush[{self.path}]")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._flusher.cancel()
        try:
            await self._stack.aclose()
            self._summarise(float("inf"))  # the repeats counted so far: in the log before it closes
            await self.flush()
        finally:
            # closed here, on the loop: a row appended from now on fails instead of landing in a file
            # the thread closes; segments holding rows not yet in SQLite stay for the next open
            segment, keep = self._segment, bool(self._pending)
            self._segment = (-1, self.path)
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close, segment, keep)
            self._pool.shutdown(wait=True)

    # --------------------------------------------------------------- on the event loop
    def record(self, kind: str, verdict: str, **fields: Any) -> None:
        """A row for the record; a row that cannot be written is logged (``write`` raises instead)."""
        try:
            self._append(kind, verdict, **fields)
        except (OSError, TypeError, ValueError) as exc:
            log.error("audit write failed (%s %s): %s", kind, verdict, exc)

    async def write(self, kind: str, verdict: str, **fields: Any) -> None:
        """A row that must be on disk before the caller goes on (raises OSError when it is not, and
        TypeError / ValueError for a field that is not what its column holds)."""
        self._append(kind, verdict, **fields)

    def tally(
        self,
        kind: str,
        verdict: str,
        *,
        asset: str | None = None,
        limit: str | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> bool:
        """An event that may repeat (a refusal, a no-op): the first of its kind (kind, verdict, asset,
        limit, reason but for its numbers) in ``summary_s`` gets a row, and True is returned (log it
        then); later ones are counted, and one row with their ``count`` ends the interval."""
        key = (kind, verdict, asset, limit, _NUMBERS.sub("#", reason or ""))
        repeats = self._tallies.get(key)
        if repeats is None and len(self._tallies) >= MAX_TALLIES:  # a flood of kinds: counted together
            key = (kind, verdict, None, None, "(of many kinds)")
            repeats = self._tallies.get(key)
        if repeats is None:
            self._tallies[key] = _Tally(time.monotonic())
            self.record(kind, verdict, asset=asset, limit=limit, reason=reason, **fields)
            return True
        at = time.time() if fields.get("ts") is None else float(fields["ts"])
        repeats.count += 1
        repeats.first_ts = repeats.first_ts or at
        repeats.last_ts = at
        repeats.fields = {"reason": reason, **fields}
        return False

    def _summarise(self, now: float) -> None:
        """One row for each kind of repeat whose interval has ended (``now`` monotonic)."""
        ended = [key for key, t in self._tallies.items() if now - t.started >= self.summary_s]
        for key in ended:
            repeats = self._tallies.pop(key)
            if not repeats.count:
                continue
            kind, verdict, asset, limit, _ = key
            fields = repeats.fields
            span = repeats.last_ts - repeats.first_ts
            summary = {"first_ts": repeats.first_ts, "last_ts": repeats.last_ts}
            self.record(
                kind,
                verdict,
                **{
                    **fields,
                    "asset": asset,
                    "limit": limit,
                    "count": repeats.count,
                    "ts": repeats.last_ts,
                    "reason": f"{repeats.count} more in {span:.1f} s, the last: {fields.get('reason')}",
                    "provenance": {**(fields.get("provenance") or {}), "repeats": summary},
                },
            )

    def _append(
        self,
        kind: str,
        verdict: str,
        *,
        asset: str | None = None,
        source: str | None = None,
        proposed: float | None = None,
        value: float | None = None,
        reason: str | None = None,
        limit: str | None = None,
        dry_run: bool = False,
        provenance: Mapping[str, Any] | None = None,
        ts: float | None = None,
        count: int = 1,
    ) -> None:
        at = time.time() if ts is None else float(ts)
        if not _finite(at):
            raise ValueError(f"ts: not a finite time ({ts!r})")
        content = (
            self._next_id,
            at,
            self.site,
            str(kind),
            _text(asset),
            _text(source),
            _number(proposed),
            str(verdict),
            _number(value),
            _text(reason),
            _text(limit),
            int(dry_run),
            dumps(provenance or {}).decode(),
            self.config_hash,
            int(count),
        )
        row = (*content, self._last_hash, digest(self.key, self._last_hash, content))
        # the newline first: a line torn by a failed write is its own line (skipped at recovery), never
        # the start of the next row's; an array cut anywhere is not valid JSON
        line = memoryview(b"\n" + dumps(row))
        self._next_id += 1  # taken even if the append fails: a torn line's id is never reused
        while line:
            written = os.write(self._segment[0], line)
            if written == 0:  # a file size limit reached: no progress will come
                raise OSError(errno.EFBIG, "the audit segment takes no more bytes")
            line = line[written:]
        self._last_hash = row[-1]  # only now: a row that failed is skipped by the chain, its id unused
        self._pending.append(row)
        self.rows += 1

    def _append_notes(self) -> None:
        notes, self._notes = self._notes, []
        for kind, verdict, reason, provenance in notes:
            self.record(kind, verdict, reason=reason, provenance=provenance)

    async def flush(self) -> None:
        """Move the rows appended so far into SQLite (in the log's thread), appending from now on to
        a fresh segment; rows SQLite cannot take now stay pending, in their segment. A checkpoint of
        the newest row comes with them when one is due."""
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        try:  # opened by the log's thread: the loop never creates or deletes a file
            fresh = await loop.run_in_executor(self._pool, self._new_segment)
        except OSError as exc:  # a full disk: the rows stay in the current segment
            log.error("audit: cannot open a new segment next to %s: %s", self.path, exc)
            return
        # no await from here to the swap: the rows taken are exactly those of the segment retired
        rows, self._pending = self._pending, []
        done, self._segment = self._segment, fresh
        segments, self._unsaved = [*self._unsaved, done[1]], []
        due = (
            self._since_checkpoint + len(rows) >= self.checkpoint_rows
            or time.monotonic() - self._checkpoint_at >= self.checkpoint_s
        )
        checkpoint = {"id": rows[-1][0], "hash": rows[-1][-1], "ts": time.time()} if due else None
        try:
            await loop.run_in_executor(self._pool, self._save, rows, done[0], segments, checkpoint)
        except Exception as exc:
            log.error(
                "audit: %d rows not yet in %s (%s); kept in %s, tried again",
                len(rows),
                self.path,
                exc,
                done[1],
            )
            self._pending[:0] = rows
            self._unsaved = segments
            return
        self._since_checkpoint += len(rows)
        if checkpoint is not None:
            self._checkpointed(checkpoint)
        self._append_notes()

    def _checkpointed(self, checkpoint: Mapping[str, Any]) -> None:
        self._since_checkpoint, self._checkpoint_at = 0, time.monotonic()
        self.checkpoints += 1
        if self.anchor is None:
            return
        try:
            anchored = self.anchor(checkpoint)
        except Exception:  # a bug in the upstream path: the log goes on, the checkpoint is local only
            log.exception("audit: checkpoint at row %s not sent upstream", checkpoint["id"])
            anchored = False
        if not anchored:
            self.unanchored += 1
            log.warning("audit: checkpoint at row %s refused upstream (local only)", checkpoint["id"])

    async def _flush_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            self._summarise(time.monotonic())
            await self.flush()

    # --------------------------------------------------------------- in the log's thread
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise AuditError(f"the audit log {self.path} is in use by another process") from None
        self._lock = lock
        try:
            self._db = connect(self.path)
            self._chain_columns()
            self._recover()
            self._prune()
            self._segment = self._new_segment()
        except BaseException:
            self._close(self._segment, keep=False)
            raise

    def _chain_columns(self) -> None:
        """Check the log is hashed as configured; give a log from before the chain its columns, its
        rows chained from GENESIS in one transaction (the trigger lifted for it)."""
        assert self._db is not None
        db, chain = self._db, chain_name(self.key)
        columns = {name for _, name, *_ in db.execute("PRAGMA table_info(audit)")}
        recorded = db.execute("SELECT value FROM audit_meta WHERE name = 'chain'").fetchone()
        if recorded is not None and recorded[0] != chain:
            raise AuditError(
                f"the audit log {self.path} is chained with {recorded[0]}, the config says {chain}: "
                "a log keeps the hashing it was created with (start a new log to change the key)"
            )
        if set(CHAINED) <= columns:
            if recorded is None:
                db.execute("INSERT INTO audit_meta VALUES ('chain', ?)", (chain,))
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for name in CHAINED:
                if name not in columns:
                    kind = "INTEGER NOT NULL DEFAULT 1" if name == "count" else "TEXT"
                    db.execute(f"ALTER TABLE audit ADD COLUMN {name} {kind}")
            db.execute("DROP TRIGGER IF EXISTS audit_append_only")
            last, rows = GENESIS, 0
            for content in db.execute(f"SELECT {', '.join(CONTENT)} FROM audit ORDER BY id").fetchall():
                row_hash = digest(self.key, last, content)
                db.execute(
                    "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (last, row_hash, content[0])
                )
                last, rows = row_hash, rows + 1
            db.execute(APPEND_ONLY)
            db.execute("INSERT OR REPLACE INTO audit_meta VALUES ('chain', ?)", (chain,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        log.warning(
            "audit: %s is from before the hash chain: its %d rows are chained from now on", self.path, rows
        )
        self._notes.append(
            (
                "audit",
                "migrated",
                f"{rows} rows written before the hash chain were chained when the log was upgraded",
                {"rows": rows},
            )
        )

    def _recover(self) -> None:
        """Insert the rows of the segments a stop or crash left, in order; ids go on after the last,
        the chain from the last row (or from the retention anchor, or GENESIS)."""
        assert self._db is not None
        db = self._db
        left = _segments_of(self.path)
        if left:
            rows = [row for segment in left for row in _read_segment(segment)]
            self._insert(self._chained(rows))
            for segment in left:
                segment.unlink()
            self._segments = int(left[-1].name[-8:])
            log.warning(
                "audit: %d rows of %d segments left by a stop or crash are in the log", len(rows), len(left)
            )
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        self._next_id = (seq[0] if seq else 0) + 1
        self._last_hash = self._tip()

    def _tip(self) -> str:
        """The hash the next row chains from."""
        assert self._db is not None
        last = self._db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        if last is not None:
            return str(last[0])
        anchor = _anchor(self._db)
        return GENESIS if anchor is None else anchor.upto_hash

    def _chained(self, rows: list[Row]) -> list[Row]:
        """Rows of segments written before the chain (no hash) chained after the log's newest row."""
        if all(row[-1] is not None for row in rows):
            return rows
        assert self._db is not None
        newest = self._db.execute("SELECT MAX(id) FROM audit").fetchone()[0] or 0
        last, out = self._tip(), []
        for row in rows:
            if row[-1] is None and row[0] > newest:
                row = (*row[:-2], last, digest(self.key, last, row[:-2]))
                last = row[-1]
            out.append(row)
        return out

    def _new_segment(self) -> tuple[int, Path]:
        self._segments += 1
        path = self.path.with_name(f"{self.path.name}.rows-{self._segments:08d}")
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), path

    def _save(
        self, rows: list[Row], fd: int, segments: list[Path], checkpoint: Mapping[str, Any] | None
    ) -> None:
        os.close(fd)
        self._insert(rows, checkpoint)
        # the rows are in: what fails from here is logged, never a reason to insert them again
        for segment in segments:
            try:
                segment.unlink(missing_ok=True)
            except OSError as exc:  # inserted again at the next open: a no-op (same ids)
                log.warning("audit: cannot delete %s: %s", segment, exc)
        if time.time() - self._pruned_at > PRUNE_EVERY_S:
            try:
                self._prune()
            except sqlite3.Error as exc:  # tried again in an hour
                log.error("audit: pruning %s failed: %s", self.path, exc)

    def _insert(self, rows: list[Row], checkpoint: Mapping[str, Any] | None = None) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")  # one transaction (the connection is in autocommit mode)
        try:
            db.executemany(INSERT, rows)
            if checkpoint is not None:
                db.execute(
                    "INSERT OR REPLACE INTO audit_checkpoints VALUES (?, ?, ?)",
                    (checkpoint["id"], checkpoint["hash"], checkpoint["ts"]),
                )
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) or not isinstance(exc, Exception):
                raise  # the database is unavailable (disk full, I/O): every row is tried again later
            self._insert_one_by_one(rows)

    def _insert_one_by_one(self, rows: list[Row]) -> None:
        """A batch one row of which SQLite refuses (a segment from an older or damaged writer): the
        others go in, the refused ones to ``<log>.refused`` (JSON lines), and the log says so."""
        assert self._db is not None
        for row in rows:
            try:
                self._db.execute(INSERT, row)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                log.error("audit: SQLite refused row %s (%s); kept in %s.refused", row[0], exc, self.path)
                with open(f"{self.path}.refused", "ab") as refused:
                    refused.write(dumps(row) + b"\n")

    def _prune(self) -> None:
        """Delete the expired rows as a prefix of the log (a row kept stays until every older one has
        expired), recording the last deleted row's id and hash: the rows kept chain from it."""
        assert self._db is not None
        db = self._db
        self._pruned_at = time.time()
        cutoff = self._pruned_at - self.retention_s
        # +ts: a scan in id order that stops at the first row kept (with the ts index SQLite would sort
        # every row kept to find it)
        kept = db.execute("SELECT id FROM audit WHERE +ts >= ? ORDER BY id LIMIT 1", (cutoff,)).fetchone()
        last = db.execute(
            "SELECT id, hash FROM audit WHERE id < ? ORDER BY id DESC LIMIT 1",
            (kept[0] if kept else 2**63 - 1,),
        ).fetchone()
        if last is None:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute("DELETE FROM audit WHERE id <= ?", (last[0],)).rowcount
            db.execute(
                "INSERT INTO audit_retention (ts, upto_id, upto_hash, deleted) VALUES (?, ?, ?, ?)",
                (self._pruned_at, last[0], last[1], deleted),
            )
            db.execute("DELETE FROM audit_checkpoints WHERE row_id < ?", (last[0],))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._notes.append(
            (
                "retention",
                "pruned",
                f"rows up to {last[0]} deleted ({deleted}): older than the retention",
                {"upto_id": last[0], "upto_hash": last[1], "deleted": deleted},
            )
        )

    def _close(self, segment: tuple[int, Path], keep: bool) -> None:
        try:
            fd, path = segment
            if fd >= 0:
                os.close(fd)
                if not keep:  # else rows not yet in SQLite wait in it for the next open
                    path.unlink(missing_ok=True)
            if self._db is not None:
                self._db.close()
        finally:
            if self._lock is not None:
                os.close(self._lock)  # releases the lock


def _anchor(db: sqlite3.Connection) -> Anchor | None:
    """The newest retention record: where the retained rows begin."""
    found = db.execute("SELECT upto_id, upto_hash FROM audit_retention ORDER BY id DESC LIMIT 1").fetchone()
    return None if found is None else Anchor(int(found[0]), str(found[1]))


def _segments_of(log_path: Path) -> list[Path]:
    """The segment files of a log, oldest first (``<log>.rows-<8 digits>``)."""
    found = log_path.parent.glob(f"{log_path.name}.rows-{'[0-9]' * 8}")
    return sorted(found, key=lambda p: int(p.name[-8:]))


def _read_segment(path: Path) -> list[Row]:
    """The rows of a segment (each line begins with a newline); a line a failed write or a crash cut
    short is not valid JSON and is skipped, and said."""
    rows, damaged = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            damaged += 1
            continue
        if isinstance(row, list) and len(row) == len(COLUMNS):
            rows.append(tuple(row))
        elif isinstance(row, list) and len(row) == _OLD_WIDTH:  # written before the chain
            rows.append((*row, 1, None, None))
        else:
            damaged += 1
    if damaged:
        log.warning("audit: %d damaged lines skipped in %s", damaged, path)
    return rows


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _number(x: float | None) -> float | None:
    """A REAL column: a finite float or NULL."""
    if x is None:
        return None
    number = float(x)
    return number if _finite(number) else None


def _text(x: object) -> str | None:
    return None if x is None else str(x)


SEARCHED = ("kind", "asset", "source", "verdict", "reason", "limit_name", "provenance")  # by ``text``


def query(
    path: Path,
    *,
    asset: str | None = None,
    since: float | None = None,
    limit: int | None = None,
    kind: str | None = None,
    text: str | None = None,
) -> list[dict[str, Any]]:
    """Rows in id order, as dicts (``provenance`` decoded); rows still in segment files (a running
    agent's last 0.1 s, or what a crash left before the next start) included. ``kind`` keeps one kind of
    row; ``text`` the rows with it in one of the SEARCHED columns (case-insensitive for ASCII)."""
    appended = _appended(path)
    db = _read_only(path)
    try:
        where, args = ["1=1"], list[Any]()
        if asset is not None:
            where.append("asset = ?")
            args.append(asset)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in SEARCHED) + ")")
            args.extend([pattern] * len(SEARCHED))
        sql = f"SELECT {_select(db)} FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in db.execute(sql, args)][::-1]
    finally:
        db.close()
    seen = {row["id"] for row in rows}
    needle = text.lower() if text else None
    for row in appended:
        if row["id"] in seen or asset not in (None, row["asset"]) or kind not in (None, row["kind"]):
            continue
        if since is not None and row["ts"] < since:
            continue
        if needle is not None and not any(needle in str(row[c] or "").lower() for c in SEARCHED):
            continue
        rows.append(row)
        seen.add(row["id"])
    rows.sort(key=lambda row: row["id"])
    if limit is not None:
        rows = rows[max(len(rows) - limit, 0) :]
    for row in rows:
        row["provenance"] = json.loads(row["provenance"])
        row["dry_run"] = bool(row["dry_run"])
    return rows


def verify(path: Path, *, key: bytes | None = None, checkpoints: Iterable[Checkpoint] = ()) -> Verification:
    """``qxedge audit verify``: the chain of every row on disk (segments included) from the retention
    anchor (or GENESIS), against the checkpoints recorded locally and ``checkpoints`` (from upstream)."""
    appended = _appended(path)
    db = _read_only(path)
    try:
        recorded = None
        if set(CHAINED) <= _present(db):
            recorded = db.execute("SELECT value FROM audit_meta WHERE name = 'chain'").fetchone()
        report = Verification(str(path), chain=recorded[0] if recorded else "none")
        if recorded is None:
            report.problem(
                0,
                "the log has no hash chain yet (an older version wrote it): the agent adds it at its next "
                "start",
            )
            return report
        if recorded[0].startswith("hmac-") and key is None:
            raise AuditError(
                f"the audit log {path} is chained with HMAC-SHA256: verifying it needs its key "
                "(--key-file, or safety.audit.key_file in the config)"
            )
        if recorded[0] != chain_name(key):
            report.problem(
                0,
                f"the log says it is chained with {recorded[0]}, the key given makes {chain_name(key)}: "
                "a different key, or the log was re-chained without it",
            )
            return report
        local = [
            Checkpoint(i, h, "local") for i, h in db.execute("SELECT row_id, hash FROM audit_checkpoints")
        ]
        stored = (
            dict(zip(COLUMNS, r, strict=True))
            for r in db.execute(f"SELECT {_select(db)} FROM audit ORDER BY id")
        )
        return check(
            _unique(heapq.merge(stored, appended, key=lambda row: row["id"])),
            CONTENT,
            key,
            _anchor(db),
            [*local, *checkpoints],
            report,
        )
    finally:
        db.close()


def _unique(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows merged by id, each id once (SQLite's copy first: a segment may still hold a row inserted)."""
    last = None
    for row in rows:
        if row["id"] != last:
            last = row["id"]
            yield row


def _appended(path: Path) -> list[dict[str, Any]]:
    """The rows of a log's segments, in id order; read before SQLite: a segment flushed meanwhile has
    its rows there by then."""
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    rows = []
    for segment in _segments_of(path):
        with contextlib.suppress(FileNotFoundError):
            rows += [dict(zip(COLUMNS, r, strict=True)) for r in _read_segment(segment)]
    rows.sort(key=lambda row: row["id"])
    return rows


def _read_only(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM audit LIMIT 1")
    except sqlite3.Error as exc:
        raise AuditError(f"{path} is not a readable audit log: {exc}") from exc
    return db


def _present(db: sqlite3.Connection) -> set[str]:
    return {name for _, name, *_ in db.execute("PRAGMA table_info(audit)")}


def _select(db: sqlite3.Connection) -> str:
    """COLUMNS as a select list; a log from before the chain (not yet upgraded) reads with defaults."""
    present = _present(db)
    defaults = {"count": "1", "prev_hash": "NULL", "hash": "NULL"}
    return ", ".join(c if c in present else defaults[c] for c in COLUMNS)


def last_setpoints(path: Path) -> dict[str, tuple[float, float]]:
    """The last setpoint the agent wrote to each asset, as ``{asset: (value, ts)}`` (the ``setpoint``
    rows the gate records after a write): what is in force after a restart when nothing better says."""
    if not path.is_file():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT asset, value, ts FROM audit WHERE id IN (SELECT MAX(id) FROM audit"
            " WHERE kind = 'setpoint' AND verdict = 'written' AND value IS NOT NULL GROUP BY asset)"
        ).fetchall()
    finally:
        db.close()
    return {str(asset): (float(value), float(ts)) for asset, value, ts in rows if asset is not None}
