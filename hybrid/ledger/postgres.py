"""The job ledger in PostgreSQL: one for a pool of workers on many hosts (psycopg 3, async, with its
connection pool).

Each worker holds a few connections (``pool_size``); the pool replaces a broken one, so a restart of
the database costs the statements of that moment (a :class:`LedgerError` each), not the worker. Every
statement is bounded by ``timeout_s`` (``statement_timeout``). The schema is created at start under an
advisory lock, so workers starting together do not race on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from qxedge.core.config import redact_url
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

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise LedgerError("ledger kind postgres needs psycopg: pip install 'qxedge[postgres]'") from exc

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_SCHEMA_LOCK = 0x71786564  # "qxed": the advisory lock held while the schema is created
_CLAIM = _sql.pyformat(_sql.CLAIM).encode()
_LOOKUP = _sql.pyformat(_sql.LOOKUP).encode()
_TAKE_OVER = _sql.pyformat(_sql.TAKE_OVER).encode()
_RECORD = _sql.pyformat(_sql.RECORD).encode()
_ADD_USAGE = _sql.pyformat(_sql.ADD_USAGE).encode()
_ADD_TOTAL = _sql.pyformat(_sql.ADD_TOTAL).encode()
_PURGE_JOBS = _sql.pyformat(_sql.PURGE_JOBS).encode()
_PURGE_USAGE = _sql.pyformat(_sql.PURGE_USAGE).encode()
_PURGE_WORKERS = _sql.pyformat(_sql.PURGE_WORKERS).encode()
_HEARTBEAT = _sql.pyformat(_sql.HEARTBEAT).encode()


class PostgresLedger:
    """``async with PostgresLedger(config) as ledger``; ``create=False`` creates no table."""

    def __init__(self, config: LedgerConfig, *, create: bool = True) -> None:
        self.config = config
        self.where = config.where()
        self._create = create
        password = config.password()
        self._kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(config.timeout_s)),
            "options": f"-c statement_timeout={round(config.timeout_s * 1000)}",
            "application_name": "qxedge",
        }
        if password is not None:
            self._kwargs["password"] = password.get_secret_value()
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None

    async def __aenter__(self) -> PostgresLedger:
        try:  # one connection first: its failure says why (refused, authentication, no database)
            async with await psycopg.AsyncConnection.connect(
                self.config.dsn or "", autocommit=True, **self._kwargs
            ) as conn:
                if self._create:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        for statement in filter(str.strip, _sql.POSTGRES_SCHEMA.split(";")):
                            await conn.execute(statement.encode())
        except psycopg.Error as exc:
            raise LedgerError(f"job ledger {self.where}: {_reason(exc)}") from exc
        self._pool = AsyncConnectionPool(
            self.config.dsn or "",
            kwargs=self._kwargs,
            min_size=1,
            max_size=self.config.pool_size,
            timeout=self.config.timeout_s,
            open=False,
            name="qxedge-ledger",
        )
        await self._pool.open(wait=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            await self._pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        """A connection in a transaction (committed at the end, rolled back on an error)."""
        if self._pool is None:
            raise LedgerError("the ledger is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise LedgerError(f"job ledger {self.where}: {_reason(exc)}") from exc

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
        async with self._conn() as conn:
            if (await conn.execute(_CLAIM, params)).rowcount == 1:
                return Claim("claimed", worker, until)
            row = await (await conn.execute(_LOOKUP, params)).fetchone()
            if row is None:  # purged between the two: claim it now
                await conn.execute(_CLAIM, params)
                return Claim("claimed", worker, until)
            held, holder_until, answered_at, result = row[:4]
            if answered_at is not None:
                return Claim("recorded", held, holder_until, bytes(result) if result is not None else b"")
            gone = _sql.holder_gone(row, now, self.config.holder_timeout_s)
            if (holder_until <= cutoff or gone) and (
                await conn.execute(_TAKE_OVER, {**params, "holder": held})
            ).rowcount == 1:
                return Claim("claimed", worker, until, took_over=held, gone=gone)
            if holder_until <= cutoff or gone:  # another worker took it over first: say who holds it now
                row = await (await conn.execute(_LOOKUP, params)).fetchone()
                if row is not None and row[2] is not None:
                    return Claim("recorded", row[0], row[1], bytes(row[3]) if row[3] is not None else b"")
                if row is not None:
                    held, holder_until = row[0], row[1]
            return Claim("pending", held, holder_until)

    async def lookup(self, site: str, job_id: str) -> Claim | None:
        async with self._conn() as conn:
            row = await (await conn.execute(_LOOKUP, {"site": site, "job_id": job_id})).fetchone()
        if row is None:
            return None
        held, until, answered_at, result = row[:4]
        if answered_at is None:
            gone = _sql.holder_gone(row, time.time(), self.config.holder_timeout_s)
            return Claim("pending", held, until, gone=gone)
        return Claim("recorded", held, until, bytes(result) if result is not None else b"")

    async def heartbeat(self, worker: str, started_at: float, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(_HEARTBEAT, {"worker": worker, "started_at": started_at, "now": now})

    async def record(self, outcome: Outcome) -> bool:
        params = _sql.record_params(outcome)
        async with self._conn() as conn:
            if outcome.job_id is not None and (await conn.execute(_RECORD, params)).rowcount != 1:
                return False
            await conn.execute(_ADD_USAGE, params)
            await conn.execute(_ADD_TOTAL, params)
        return True

    async def jobs(
        self, *, site: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[JobRow]:
        sql, params = _sql.jobs_query(site, since, limit)
        async with self._conn() as conn:
            rows = await (await conn.execute(_sql.pyformat(sql).encode(), params)).fetchall()
        return [JobRow(*row) for row in reversed(rows)]

    async def usage(self, *, site: str | None = None, since: float | None = None) -> list[UsageRow]:
        sql, params = _sql.usage_query(site, since)
        async with self._conn() as conn:
            rows = await (await conn.execute(_sql.pyformat(sql).encode(), params)).fetchall()
        return summarise((s, st, so, int(n), float(sec)) for s, st, so, n, sec in rows)

    async def purge(self, now: float) -> Purged:
        cutoff = now - self.config.retention_days * DAY_S
        day = day_of(now - self.config.usage_retention_days * DAY_S)
        async with self._conn() as conn:
            jobs = (await conn.execute(_PURGE_JOBS, {"cutoff": cutoff})).rowcount
            await conn.execute(_PURGE_WORKERS, {"cutoff": cutoff})
            usage = (await conn.execute(_PURGE_USAGE, {"day": day})).rowcount
        return Purged(jobs, usage)


def _reason(exc: BaseException) -> str:
    """psycopg's message on one line, with any DSN in it masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_url(text)
