"""The audit log: every proposal, verdict, refused result and read-back, append-only, in SQLite.

One row per event with its provenance (input window, model, sha256, provider, job id, solver, energy,
deadline), the verdict and its reason, and the hash of the config that decided it. The file survives
restarts (WAL mode); rows older than ``retention_days`` are deleted when the log opens and every hour.
``qxedge audit`` reads it.

How a row gets there. A proposal's row is on disk before its setpoint is written, so writing it is on
the reading → setpoint path (bench/latency.py):

- ``record`` / ``write`` append the row, with its id, as one JSON line to the open segment file
  (``<log>.rows-<n>``): one ``write`` of a few hundred bytes on the event loop, ~20 µs. From then on
  the row is as durable as a row in SQLite's WAL with ``synchronous=NORMAL`` (a process crash loses
  nothing, a power cut may lose the last writes). An INSERT costs ~15 system calls here (four B-tree
  pages appended to the WAL, its locks), 0.15-0.2 ms a setpoint on this machine kind, and handing it to
  a thread and back 0.3 ms;
- every ``FLUSH_S`` the log's thread inserts the segment's rows into SQLite in one transaction and
  deletes the segment; the loop has switched to a fresh segment the thread opened beforehand, so it
  never creates or deletes a file. ``query`` (``qxedge audit``) reads the segments too: it sees
  every row on disk, flushed or not. While SQLite cannot take rows (a full disk, an I/O error) they
  stay in their segment and are tried again at the next flush; a row it refuses for itself goes to
  ``<log>.refused``;
- at open, the segments a crash left behind are inserted first, in order: a row inserted before the
  crash is not inserted twice (same id), and a line the crash cut short is skipped. One process at a
  time holds a log (a lock file next to it): two agents on one file would reuse each other's ids.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from qxedge.agent.jsonbytes import dumps
from qxedge.core.errors import AuditError

log = logging.getLogger(__name__)

FLUSH_S = 0.1  # how often the appended rows move into SQLite
PRUNE_EVERY_S = 3600
Row = tuple[Any, ...]  # the values of COLUMNS, in order

SCHEMA = """
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
    provenance TEXT NOT NULL DEFAULT '{}',
    config_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_asset ON audit (asset, ts);
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
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
)


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


class AuditLog:
    """``async with AuditLog(path, site, config_hash, retention_days) as audit: await audit.write(...)``.

    ``write`` and ``record`` run on the event loop's thread; a row is on disk when they return."""

    def __init__(self, path: Path, site: str, config_hash: str, retention_days: float) -> None:
        self.path = path
        self.site = site
        self.config_hash = config_hash
        self.retention_s = retention_days * 86400
        self.rows = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-audit")
        self._db: sqlite3.Connection | None = None  # the log's thread only
        self._lock: int | None = None  # the lock file's descriptor while the log is open
        self._segment: tuple[int, Path] = (-1, path)  # (descriptor, path) rows are appended to
        self._pending: list[Row] = []  # appended, not yet in SQLite
        self._unsaved: list[Path] = []  # segments of pending rows besides the current one
        self._segments = 0  # segment files made so far (their number)
        self._next_id = 1
        self._pruned_at = 0.0
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> AuditLog:
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._open)
        except BaseException:
            self._pool.shutdown()
            raise
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._flusher = tasks.create_task(self._flush_every(FLUSH_S), name=f"audit-flush[{self.path}]")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._flusher.cancel()
        try:
            await self._stack.aclose()
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
    ) -> None:
        at = time.time() if ts is None else float(ts)
        if not _finite(at):
            raise ValueError(f"ts: not a finite time ({ts!r})")
        row = (
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
        )
        # the newline first: a line torn by a failed write is its own line (skipped at recovery), never
        # the start of the next row's; an array cut anywhere is not valid JSON
        line = memoryview(b"\n" + dumps(row))
        self._next_id += 1  # taken even if the append fails: a torn line's id is never reused
        while line:
            written = os.write(self._segment[0], line)
            if written == 0:  # a file size limit reached: no progress will come
                raise OSError(errno.EFBIG, "the audit segment takes no more bytes")
            line = line[written:]
        self._pending.append(row)
        self.rows += 1

    async def flush(self) -> None:
        """Move the rows appended so far into SQLite (in the log's thread), appending from now on to
        a fresh segment; rows SQLite cannot take now stay pending, in their segment."""
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
        try:
            await loop.run_in_executor(self._pool, self._save, rows, done[0], segments)
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

    async def _flush_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
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
            self._recover()
            self._prune()
            self._segment = self._new_segment()
        except BaseException:
            self._close(self._segment, keep=False)
            raise

    def _recover(self) -> None:
        """Insert the rows of the segments a stop or crash left, in order; ids go on after the last."""
        assert self._db is not None
        left = _segments_of(self.path)
        if left:
            rows = [row for segment in left for row in _read_segment(segment)]
            self._insert(rows)
            for segment in left:
                segment.unlink()
            self._segments = int(left[-1].name[-8:])
            log.warning(
                "audit: %d rows of %d segments left by a stop or crash are in the log", len(rows), len(left)
            )
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        self._next_id = (seq[0] if seq else 0) + 1

    def _new_segment(self) -> tuple[int, Path]:
        self._segments += 1
        path = self.path.with_name(f"{self.path.name}.rows-{self._segments:08d}")
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), path

    def _save(self, rows: list[Row], fd: int, segments: list[Path]) -> None:
        os.close(fd)
        self._insert(rows)
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

    def _insert(self, rows: list[Row]) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")  # one transaction (the connection is in autocommit mode)
        try:
            db.executemany(INSERT, rows)
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
        assert self._db is not None
        self._pruned_at = time.time()
        # the trigger forbids UPDATE; DELETE of expired rows is the retention policy
        self._db.execute("DELETE FROM audit WHERE ts < ?", (self._pruned_at - self.retention_s,))

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


def query(
    path: Path, *, asset: str | None = None, since: float | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows in id order, as dicts (``provenance`` decoded); rows still in segment files (a running
    agent's last 0.1 s, or what a crash left before the next start) included."""
    if not path.is_file():
        return []
    appended = []  # read before SQLite: a segment flushed meanwhile has its rows there by then
    for segment in _segments_of(path):
        with contextlib.suppress(FileNotFoundError):
            appended += [dict(zip(COLUMNS, r, strict=True)) for r in _read_segment(segment)]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, args = ["1=1"], list[Any]()
        if asset is not None:
            where.append("asset = ?")
            args.append(asset)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = f"SELECT {', '.join(COLUMNS)} FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in db.execute(sql, args)][::-1]
    finally:
        db.close()
    seen = {row["id"] for row in rows}
    for row in appended:
        if row["id"] not in seen and asset in (None, row["asset"]) and (since is None or row["ts"] >= since):
            rows.append(row)
            seen.add(row["id"])
    rows.sort(key=lambda row: row["id"])
    if limit is not None:
        rows = rows[max(len(rows) - limit, 0) :]
    for row in rows:
        row["provenance"] = json.loads(row["provenance"])
        row["dry_run"] = bool(row["dry_run"])
    return rows


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
