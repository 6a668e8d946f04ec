"""The audit log: every proposal, verdict, refused result and read-back, append-only, in SQLite.

One row per event with its provenance (input window, model, sha256, provider, job id, solver, energy,
deadline), the verdict and its reason, and the hash of the config that decided it. The file survives
restarts (WAL mode); rows older than ``retention_days`` are deleted when the log opens and every hour.
Writes go to one worker thread, never the event loop. ``qxedge audit`` reads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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

    ``record`` never blocks: the row goes to the log's own thread, which writes rows in order."""

    def __init__(self, path: Path, site: str, config_hash: str, retention_days: float) -> None:
        self.path = path
        self.site = site
        self.config_hash = config_hash
        self.retention_s = retention_days * 86400
        self.rows = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-audit")
        self._db: sqlite3.Connection | None = None
        self._pruned_at = 0.0

    async def __aenter__(self) -> AuditLog:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._pool, connect, self.path)
        await loop.run_in_executor(self._pool, self._prune)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        if self._db is not None:
            await loop.run_in_executor(self._pool, self._db.close)
        self._pool.shutdown(wait=True)

    def _prune(self) -> None:
        assert self._db is not None
        self._pruned_at = time.time()
        # the trigger forbids UPDATE; DELETE of expired rows is the retention policy
        self._db.execute("DELETE FROM audit WHERE ts < ?", (self._pruned_at - self.retention_s,))

    def _insert(self, row: tuple[Any, ...]) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO audit (ts, site, kind, asset, source, proposed, verdict, value, reason, limit_name, "
            "dry_run, provenance, config_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        if row[0] - self._pruned_at > 3600:
            self._prune()

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
        """Queue a row (never blocks); the returned future says when it is on disk."""
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
            json.dumps(provenance or {}, default=str, separators=(",", ":")),
            self.config_hash,
        )
        self.rows += 1
        future = self._pool.submit(self._insert, row)
        future.add_done_callback(_log_failure)
        return future

    async def write(self, kind: str, verdict: str, **fields: Any) -> None:
        """``record`` and wait until the row is on disk (raises if it could not be written)."""
        await asyncio.wrap_future(self.record(kind, verdict, **fields))


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
