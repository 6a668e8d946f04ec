"""The audit log: every proposal, verdict, refused result and read-back, append-only, in SQLite.

One row per event with its provenance (input window, model, sha256, provider, job id, solver, energy,
deadline), the verdict and its reason, and the hash of the config that decided it. The file survives
restarts (WAL mode); rows older than ``retention_days`` are deleted when the log opens and every hour.
``qxedge audit`` reads it.

Where the work runs (a proposal's row is on disk before its setpoint is written, so the row's write is
on the reading → setpoint path):

- a row is an INSERT appended to the WAL: no fsync (``synchronous=NORMAL``), tens of µs. It runs on
  the event loop while the last row took under ``INLINE_ROW_S`` and the log's thread has nothing
  queued; otherwise it goes to that thread, behind what is queued, so rows stay in order. Handing it
  to the thread and back cost 0.2-0.3 ms a setpoint on this machine kind (bench/latency.py): more than
  the row;
- what can take long stays in the log's thread: opening the file, the hourly prune (rows written
  meanwhile queue behind it) and WAL checkpoints (the fsyncs), which run every ``CHECKPOINT_ROWS``
  rows on a connection of their own, never inside a row's INSERT (``wal_autocheckpoint=0`` on the
  writing connection).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.inline import InlineWhileQuick
from agent.jsonbytes import dumps

log = logging.getLogger(__name__)

INLINE_ROW_S = 0.001  # a row is 30-150 µs here: one that took longer means a stalling disk
CHECKPOINT_ROWS = 250  # ~1000 WAL pages at ~4 pages a row, SQLite's own auto-checkpoint point
PRUNE_EVERY_S = 3600
INSERT = (
    "INSERT INTO audit (ts, site, kind, asset, source, proposed, verdict, value, reason, limit_name, "
    "dry_run, provenance, config_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

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


class AuditLog:
    """``async with AuditLog(path, site, config_hash, retention_days) as audit: audit.record(...)``.

    ``record`` never waits for the disk: a row is written at once or queued to the log's thread."""

    def __init__(self, path: Path, site: str, config_hash: str, retention_days: float) -> None:
        self.path = path
        self.site = site
        self.config_hash = config_hash
        self.retention_s = retention_days * 86400
        self.rows = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-audit")
        self._db: sqlite3.Connection | None = None  # rows and prunes: one thread at a time
        self._checkpointer: sqlite3.Connection | None = None  # the log's thread only
        self._queued: concurrent.futures.Future[None] | None = None  # the last row or prune queued
        self._inline = InlineWhileQuick(INLINE_ROW_S)
        self._pruned_at = 0.0
        self._unchecked = 0  # rows since the last checkpoint was queued

    async def __aenter__(self) -> AuditLog:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._open)
        await loop.run_in_executor(self._pool, self._prune)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=True)

    def _open(self) -> None:
        self._db = connect(self.path)
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in this thread, not in a row
        self._checkpointer = sqlite3.connect(self.path, isolation_level=None)

    def _close(self) -> None:
        for db in (self._checkpointer, self._db):
            if db is not None:
                db.close()

    def _prune(self) -> None:
        assert self._db is not None
        self._pruned_at = time.time()
        # the trigger forbids UPDATE; DELETE of expired rows is the retention policy
        self._db.execute("DELETE FROM audit WHERE ts < ?", (self._pruned_at - self.retention_s,))

    def _insert(self, row: tuple[Any, ...]) -> None:
        assert self._db is not None
        self._db.execute(INSERT, row)

    def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for the writer

    def _queue(self, fn: Callable[..., None], *args: Any) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = self._pool.submit(fn, *args)
        future.add_done_callback(_log_failure)
        return future

    def record(
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
    ) -> concurrent.futures.Future[None]:
        """Write a row (on the loop while rows are quick, else through the log's thread, in order);
        the returned future says when it is on disk."""
        row = (
            ts or time.time(),
            self.site,
            kind,
            asset,
            source,
            proposed if proposed is None or _finite(proposed) else None,
            verdict,
            value,
            reason,
            limit,
            int(dry_run),
            dumps(provenance or {}).decode(),
            self.config_hash,
        )
        self.rows += 1
        if self._inline.quick and (self._queued is None or self._queued.done()):
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            try:
                self._inline.call(self._insert, row)
            except Exception as exc:  # sqlite3.Error: the caller learns it from the future
                future.set_exception(exc)
                future.add_done_callback(_log_failure)
            else:
                future.set_result(None)
        else:
            future = self._queued = self._queue(self._inline.call, self._insert, row)
        self._unchecked += 1
        if self._unchecked >= CHECKPOINT_ROWS:
            self._unchecked = 0
            self._queue(self._checkpoint)
        if row[0] - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = row[0]
            self._queued = self._queue(self._prune)
        return future

    async def write(self, kind: str, verdict: str, **fields: Any) -> None:
        """``record`` and wait until the row is on disk (raises if it could not be written)."""
        future = self.record(kind, verdict, **fields)
        if not future.done():
            await asyncio.wrap_future(future)
        future.result()


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if future.exception() is not None:
        log.error("audit write failed: %s", future.exception())


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def query(
    path: Path, *, asset: str | None = None, since: float | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows in time order, as dicts (``provenance`` decoded)."""
    if not path.is_file():
        return []
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
    for row in rows:
        row["provenance"] = json.loads(row["provenance"])
        row["dry_run"] = bool(row["dry_run"])
    return rows
