"""The ledger's tables and statements, shared by SQLite and PostgreSQL (named parameters ``:name``;
:func:`pyformat` turns them into psycopg's ``%(name)s``).

- ``qx_jobs``: one row per ``(site, job_id)``, the unique key every claim goes through: who holds the
  claim and until when, then the answer (status, credit, solver-seconds, the result envelope as sent);
- ``qx_usage``: per site, UTC day, status and credited solver: jobs and solver-seconds (kept for
  ``usage_retention_days``);
- ``qx_usage_total``: the same without the day, never purged (a few rows per site): the pool's
  counters in /metrics;
- ``qx_workers``: each worker's heartbeat (when its process started, when it was last seen): a pending
  claim whose worker has gone silent for ``holder_timeout_s``, or has restarted since it claimed, is
  taken over at once (``CREATE TABLE IF NOT EXISTS``: a ledger made before it gets it at the next start).
"""

from __future__ import annotations

import re
from typing import Any

from qxedge.hybrid.ledger.protocol import Outcome, day_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS qx_jobs (
    site TEXT NOT NULL,
    job_id TEXT NOT NULL,
    worker TEXT NOT NULL,
    claimed_at {real} NOT NULL,
    expires_at {real} NOT NULL,
    deadline_at {real} NOT NULL,
    takeovers INTEGER NOT NULL DEFAULT 0,
    answered_at {real},
    status TEXT,
    solver TEXT,
    solver_seconds {real},
    result {blob},
    PRIMARY KEY (site, job_id)
);
CREATE INDEX IF NOT EXISTS qx_jobs_claimed_at ON qx_jobs (claimed_at);
CREATE TABLE IF NOT EXISTS qx_usage (
    site TEXT NOT NULL,
    day INTEGER NOT NULL,
    status TEXT NOT NULL,
    solver TEXT NOT NULL,
    jobs {int} NOT NULL,
    solver_seconds {real} NOT NULL,
    PRIMARY KEY (site, day, status, solver)
);
CREATE INDEX IF NOT EXISTS qx_usage_day ON qx_usage (day);
CREATE TABLE IF NOT EXISTS qx_usage_total (
    site TEXT NOT NULL,
    status TEXT NOT NULL,
    solver TEXT NOT NULL,
    jobs {int} NOT NULL,
    solver_seconds {real} NOT NULL,
    PRIMARY KEY (site, status, solver)
);
CREATE TABLE IF NOT EXISTS qx_workers (
    worker TEXT NOT NULL PRIMARY KEY,
    started_at {real} NOT NULL,
    seen_at {real} NOT NULL
);
"""
SQLITE_SCHEMA = SCHEMA.format(real="REAL", blob="BLOB", int="INTEGER")
POSTGRES_SCHEMA = SCHEMA.format(real="DOUBLE PRECISION", blob="BYTEA", int="BIGINT")

CLAIM = """
INSERT INTO qx_jobs (site, job_id, worker, claimed_at, expires_at, deadline_at)
VALUES (:site, :job_id, :worker, :now, :expires_at, :deadline_at)
ON CONFLICT (site, job_id) DO NOTHING
"""
LOOKUP = """
SELECT j.worker, j.expires_at, j.answered_at, j.result, j.claimed_at, w.started_at, w.seen_at
FROM qx_jobs j LEFT JOIN qx_workers w ON w.worker = j.worker
WHERE j.site = :site AND j.job_id = :job_id
"""
TAKE_OVER = """
UPDATE qx_jobs SET worker = :worker, claimed_at = :now, expires_at = :expires_at, takeovers = takeovers + 1
WHERE site = :site AND job_id = :job_id AND answered_at IS NULL AND worker = :holder
"""
HEARTBEAT = """
INSERT INTO qx_workers (worker, started_at, seen_at) VALUES (:worker, :started_at, :now)
ON CONFLICT (worker) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at
"""
RECORD = """
INSERT INTO qx_jobs (site, job_id, worker, claimed_at, expires_at, deadline_at,
                     answered_at, status, solver, solver_seconds, result)
VALUES (:site, :job_id, :worker, :received_at, :answered_at, :deadline_at,
        :answered_at, :status, :solver, :solver_seconds, :result)
ON CONFLICT (site, job_id) DO UPDATE SET
    worker = excluded.worker, answered_at = excluded.answered_at, status = excluded.status,
    solver = excluded.solver, solver_seconds = excluded.solver_seconds, result = excluded.result
WHERE qx_jobs.answered_at IS NULL
"""
ADD_USAGE = """
INSERT INTO qx_usage (site, day, status, solver, jobs, solver_seconds)
VALUES (:site, :day, :status, :credit, 1, :solver_seconds)
ON CONFLICT (site, day, status, solver) DO UPDATE SET
    jobs = qx_usage.jobs + 1, solver_seconds = qx_usage.solver_seconds + excluded.solver_seconds
"""
ADD_TOTAL = """
INSERT INTO qx_usage_total (site, status, solver, jobs, solver_seconds)
VALUES (:site, :status, :credit, 1, :solver_seconds)
ON CONFLICT (site, status, solver) DO UPDATE SET
    jobs = qx_usage_total.jobs + 1, solver_seconds = qx_usage_total.solver_seconds + excluded.solver_seconds
"""
PURGE_JOBS = "DELETE FROM qx_jobs WHERE COALESCE(answered_at, expires_at) < :cutoff"
PURGE_USAGE = "DELETE FROM qx_usage WHERE day < :day"
PURGE_WORKERS = "DELETE FROM qx_workers WHERE seen_at < :cutoff"
_JOB_COLUMNS = (
    "site, job_id, worker, claimed_at, expires_at, deadline_at, answered_at, status, solver, "
    "solver_seconds, takeovers"
)


def expires_at(deadline_at: float, now: float, grace_s: float) -> float:
    """Until when a claim holds: the job's deadline (or now, for one past it) plus the grace."""
    return max(deadline_at, now) + grace_s


def holder_gone(row: tuple[Any, ...], now: float, holder_timeout_s: float) -> str | None:
    """Why the worker holding an unanswered claim (a ``LOOKUP`` row) is presumed gone, or None: it has
    not refreshed its heartbeat for ``holder_timeout_s``, or its process started after it claimed (a
    restart: the claim belongs to the process that died). A worker that never wrote a heartbeat (one
    of a version before them) is never presumed gone here: its claim expires as before."""
    claimed_at, started_at, seen_at = row[4], row[5], row[6]
    if seen_at is None:
        return None
    if started_at > claimed_at:
        return f"its worker restarted {now - started_at:.1f} s ago, after it claimed the job"
    silent = now - seen_at
    if silent >= holder_timeout_s:
        return f"its worker stopped heartbeating {silent:.1f} s ago"
    return None


def record_params(outcome: Outcome) -> dict[str, Any]:
    at = outcome.answered_at
    return {
        "site": outcome.site,
        "job_id": outcome.job_id,
        "worker": outcome.worker,
        "received_at": outcome.received_at if outcome.received_at is not None else at,
        "deadline_at": outcome.deadline_at if outcome.deadline_at is not None else at,
        "answered_at": at,
        "status": outcome.status,
        "solver": outcome.solver,
        "solver_seconds": outcome.solver_seconds,
        "result": outcome.result,
        "day": day_of(at),
        "credit": (outcome.solver or "") if outcome.status == "ok" else "",
    }


def jobs_query(site: str | None, since: float | None, limit: int | None) -> tuple[str, dict[str, Any]]:
    where, params = _where(site, since, "claimed_at")
    sql = f"SELECT {_JOB_COLUMNS} FROM qx_jobs{where} ORDER BY claimed_at DESC, job_id DESC"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return sql, params


def usage_query(site: str | None, since: float | None) -> tuple[str, dict[str, Any]]:
    """Over the daily rows from ``since``'s day; over the totals when ``since`` is None."""
    if since is None:
        where, params = _where(site, None, "")
        table = "qx_usage_total"
    else:
        where, params = _where(site, day_of(since), "day")
        table = "qx_usage"
    sql = f"SELECT site, status, solver, SUM(jobs), SUM(solver_seconds) FROM {table}{where} "
    return sql + "GROUP BY site, status, solver", params


def _where(site: str | None, since: float | None, column: str) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if site is not None:
        clauses.append("site = :site")
        params["site"] = site
    if since is not None:
        clauses.append(f"{column} >= :since")
        params["since"] = since
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def pyformat(sql: str) -> str:
    """``:name`` → ``%(name)s`` (psycopg's named parameters)."""
    return _NAMED.sub(r"%(\1)s", sql)
