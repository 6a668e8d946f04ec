"""What a job ledger does (:class:`JobLedger`) and the records it hands back.

A ledger makes jobs idempotent by ``(site, job_id)`` across every worker that shares it:

1. :meth:`JobLedger.claim` before solving: the first worker inserts a claim row on the unique key and
   solves; any other gets the recorded result (answer the duplicate with it), or learns that the job is
   being solved (wait for the record). A claim not answered by the job's deadline plus
   ``claim_grace_s`` belonged to a worker presumed dead: the next claim takes it over. So does one
   whose worker is gone by its heartbeat (:meth:`JobLedger.heartbeat`, every ``heartbeat_s``): silent
   for ``holder_timeout_s``, or restarted since it claimed; the next claim takes it over at once.
2. :meth:`JobLedger.record` after answering: the result envelope as sent, and the job's usage added to
   its site's day (jobs by status, solver-seconds, wins by solver).

Errors: :class:`LedgerError` (a QxError) for a ledger that cannot be reached or written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from qxedge.core.errors import QxError

DAY_S = 86_400.0
STATUSES = ("ok", "late", "rejected", "error")


class LedgerError(QxError):
    """The job ledger cannot be opened, reached or written (the message names it and says why)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer of :meth:`JobLedger.claim` (and of :meth:`JobLedger.lookup`).

    - ``claimed``: the caller holds the claim and solves (``took_over``: from that worker, whose claim
      had expired, or which is gone: ``gone`` says why);
    - ``recorded``: answered already; ``result`` is the result envelope as sent;
    - ``pending``: ``worker`` is solving it, its claim good until ``expires_at`` (epoch s); ``gone``
      (from :meth:`JobLedger.lookup`): why that worker is presumed gone by its heartbeat, so that the
      next claim takes the job over at once.
    """

    state: Literal["claimed", "recorded", "pending"]
    worker: str
    expires_at: float
    result: bytes | None = None
    took_over: str | None = None
    gone: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered job, for :meth:`JobLedger.record`. ``result`` None: counted in the usage only (a
    job rejected before it could be claimed: a retry must not get the refusal again)."""

    site: str
    job_id: str | None
    worker: str
    status: str  # ok, late, rejected, error
    answered_at: float  # epoch s
    solver: str | None = None  # the credit of an ``ok`` answer (a win)
    solver_seconds: float = 0.0
    received_at: float | None = None
    deadline_at: float | None = None
    result: bytes | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the ledger holds it (``answered_at`` None while it is being solved)."""

    site: str
    job_id: str
    worker: str
    claimed_at: float
    expires_at: float
    deadline_at: float
    answered_at: float | None
    status: str | None
    solver: str | None
    solver_seconds: float | None
    takeovers: int

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A site's usage over the days asked for: jobs by status (deadline adherence), solver-seconds,
    and wins (``ok`` answers) by solver."""

    site: str
    jobs: int
    statuses: dict[str, int] = field(default_factory=dict)
    solver_seconds: float = 0.0
    wins: dict[str, int] = field(default_factory=dict)

    @property
    def on_time(self) -> float:
        """Answered ``ok`` (by the deadline) over the jobs; NaN for none."""
        return self.statuses.get("ok", 0) / self.jobs if self.jobs else math.nan

    def as_dict(self) -> dict[str, object]:
        return {
            "site": self.site,
            "jobs": self.jobs,
            **{status: self.statuses.get(status, 0) for status in STATUSES},
            "on_time": None if math.isnan(self.on_time) else round(self.on_time, 6),
            "solver_seconds": round(self.solver_seconds, 6),
            "wins": dict(sorted(self.wins.items())),
        }


@dataclass(frozen=True, slots=True)
class Purged:
    jobs: int  # job rows (results) deleted
    usage: int  # usage rows (site-days) deleted


def summarise(rows: Iterable[tuple[str, str, str, int, float]]) -> list[UsageRow]:
    """``(site, status, solver, jobs, solver_seconds)`` groups → one :class:`UsageRow` per site, by site."""
    sites: dict[str, tuple[dict[str, int], dict[str, int], list[float]]] = {}
    for site, status, solver, jobs, seconds in rows:
        statuses, wins, used = sites.setdefault(site, ({}, {}, [0.0]))
        statuses[status] = statuses.get(status, 0) + int(jobs)
        used[0] += float(seconds)
        if status == "ok" and solver:
            wins[solver] = wins.get(solver, 0) + int(jobs)
    return [
        UsageRow(site, sum(statuses.values()), statuses, used[0], wins)
        for site, (statuses, wins, used) in sorted(sites.items())
    ]


def day_of(epoch_s: float) -> int:
    """The UTC day number of a moment (usage is aggregated by it)."""
    return int(epoch_s // DAY_S)


class JobLedger(Protocol):
    """One ledger for all workers (hybrid.ledger.sqlite, hybrid.ledger.postgres). Every method may
    raise :class:`LedgerError`; times are epoch seconds given by the caller."""

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
        """Claim a job to solve it, or say who has it / what its recorded result is. ``holder_gone``: the
        transport delivered the job again because the worker holding it is gone (its connection died),
        so its unanswered claim is taken over now rather than when it expires. So is the claim of a
        worker gone by its heartbeat (:func:`holder_gone <qxedge.hybrid.ledger._sql.holder_gone>`)."""
        ...

    async def lookup(self, site: str, job_id: str) -> Claim | None:
        """The job's state (``recorded`` or ``pending``; a held claim reads ``pending``, with ``gone`` set
        when its worker is gone by its heartbeat), None if unknown."""
        ...

    async def heartbeat(self, worker: str, started_at: float, now: float) -> None:
        """``worker`` (its process started at ``started_at``) is alive as of ``now``."""
        ...

    async def record(self, outcome: Outcome) -> bool:
        """Record an answer and add it to its site's usage; False when the job was recorded already
        (by another worker that took the claim over): nothing is counted twice."""
        ...

    async def jobs(
        self, *, site: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[JobRow]:
        """Jobs claimed since ``since``, newest last (the last ``limit`` of them)."""
        ...

    async def usage(self, *, site: str | None = None, since: float | None = None) -> list[UsageRow]:
        """Per-site usage over the days from ``since``'s (all the usage kept when None)."""
        ...

    async def purge(self, now: float) -> Purged:
        """Delete jobs older than ``retention_days`` and usage older than ``usage_retention_days`` (and
        the heartbeats of workers not seen for ``retention_days``)."""
        ...
