"""The job ledger in a SQLite file: one worker, or several on one host sharing the file.

sqlite3 runs on a thread of its own (one connection, one thread), never on the event loop. The file is
in WAL mode, so ``qxedge jobs`` reads it while workers write; claims and records are ``BEGIN
IMMEDIATE`` transactions, so workers sharing the file claim a job once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from qxedge.hybrid.ledger import _sql
from qxedge.hybrid.ledger.config import LedgerConfig
from qxedge.hybrid.ledger.protocol import (
    DAY_S,
    Claim,
    JobRow,
    LedgerError,
    Outcome,
    Purged,
    UsageRow,
    day_of,
    summarise,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


class SqliteLedger:
    """``async with SqliteLedger(config) as ledger``; ``create=False`` opens only a file that exists."""

    def __init__(self, config: LedgerConfig, *, create: bool = True) -> None:
        self.config = config
        self.path: Path = config.sqlite_path()
        self._create = create
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> SqliteLedger:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="qxedge-ledger")
        try:
            await self._call(self._open)
        except BaseException:
            self._thread.shutdown(wait=False)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
            self._thread.shutdown(wait=True)

    def _open(self) -> None:
        if not self._create and not self.path.exists():
            raise LedgerError(f"no job ledger at {self.path} (has a worker run with this config?)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.config.timeout_s, isolation_level=None)
        try:
            _switch_to_wal(db, self.path, self.config.timeout_s)
            db.execute("PRAGMA synchronous=NORMAL")
            if self._create:
                db.executescript(_sql.SQLITE_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise LedgerError("the ledger is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        except sqlite3.Error as exc:
            raise LedgerError(f"job ledger {self.path}: {exc}") from exc
        except OSError as exc:
            raise LedgerError(f"job ledger {self.path}: {exc.strerror or exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise LedgerError("the ledger is not open")
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            value = work(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return value

    async def claim(
        self,
        site: str,
        job_id: str,
        worker: str,
        deadline_at: float,
        now: float,
        *,
        holder_gone: bool = False,
    ) -> Claim:
        until = _sql.expires_at(deadline_at, now, self.config.claim_grace_s)
        cutoff = math.inf if holder_gone else now  # a claim expiring before this is taken over
        params = {
            "site": site,
            "job_id": job_id,
            "worker": worker,
            "now": now,
            "cutoff": cutoff,
            "expires_at": until,
            "deadline_at": deadline_at,
        }

        def work(db: sqlite3.Connection) -> Claim:
            if db.execute(_sql.CLAIM, params).rowcount == 1:
                return Claim("claimed", worker, until)
            row = db.execute(_sql.LOOKUP, params).fetchone()
            held, holder_until, answered_at, result = row[:4]
            if answered_at is not None:
                return Claim("recorded", held, holder_until, bytes(result) if result is not None else b"")
            gone = _sql.holder_gone(row, now, self.config.holder_timeout_s)
            if (holder_until <= cutoff or gone) and db.execute(
                _sql.TAKE_OVER, {**params, "holder": held}
            ).rowcount == 1:
                return Claim("claimed", worker, until, took_over=held, gone=gone)
            return Claim("pending", held, holder_until)  # (in one transaction: nobody took it meanwhile)

        return await self._call(self._transaction, work)

    async def lookup(self, site: str, job_id: str) -> Claim | None:
        def work() -> Claim | None:
            row = self.db.execute(_sql.LOOKUP, {"site": site, "job_id": job_id}).fetchone()
            if row is None:
                return None
            held, until, answered_at, result = row[:4]
            if answered_at is None:
                gone = _sql.holder_gone(row, time.time(), self.config.holder_timeout_s)
                return Claim("pending", held, until, gone=gone)
            return Claim("recorded", held, until, bytes(result) if result is not None else b"")

        return await self._call(work)

    async def heartbeat(self, worker: str, started_at: float, now: float) -> None:
        params = {"worker": worker, "started_at": started_at, "now": now}
        await self._call(self._transaction, lambda db: db.execute(_sql.HEARTBEAT, params))

    async def record(self, outcome: Outcome) -> bool:
        params = _sql.record_params(outcome)

        def work(db: sqlite3.Connection) -> bool:
            if outcome.job_id is not None and db.execute(_sql.RECORD, params).rowcount != 1:
                return False
            db.execute(_sql.ADD_USAGE, params)
            db.execute(_sql.ADD_TOTAL, params)
            return True

        return await self._call(self._transaction, work)

    async def jobs(
        self, *, site: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[JobRow]:
        sql, params = _sql.jobs_query(site, since, limit)
        rows = await self._call(lambda: self.db.execute(sql, params).fetchall())
        return [JobRow(*row) for row in reversed(rows)]

    async def usage(self, *, site: str | None = None, since: float | None = None) -> list[UsageRow]:
        sql, params = _sql.usage_query(site, since)
        return summarise(await self._call(lambda: self.db.execute(sql, params).fetchall()))

    async def purge(self, now: float) -> Purged:
        cutoff = now - self.config.retention_days * DAY_S
        day = day_of(now - self.config.usage_retention_days * DAY_S)

        def work(db: sqlite3.Connection) -> Purged:
            jobs = db.execute(_sql.PURGE_JOBS, {"cutoff": cutoff}).rowcount
            db.execute(_sql.PURGE_WORKERS, {"cutoff": cutoff})
            return Purged(jobs, db.execute(_sql.PURGE_USAGE, {"day": day}).rowcount)

        return await self._call(self._transaction, work)


def _switch_to_wal(db: sqlite3.Connection, path: Path, timeout_s: float) -> None:
    """WAL mode. The switch needs the file to itself, and SQLite answers "database is locked" at once
    rather than waiting out its busy timeout while another connection writes (a second worker sharing a
    new file, creating the tables): the switch is tried again until ``timeout_s``."""
    until = time.monotonic() + timeout_s
    waiting = False
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= until:
                raise
            if not waiting:
                log.info("job ledger %s: another connection writes; waiting to switch it to WAL", path)
                waiting = True
            time.sleep(0.02)  # on the ledger's own thread, never the event loop
