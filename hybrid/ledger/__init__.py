"""One job ledger for all workers: a claim per ``(site, job_id)`` so that a job is solved once, its
recorded result for every duplicate delivery, per-site usage, and retention.

- :class:`JobLedger`: the Protocol (``protocol.py``); :class:`LedgerError` its error;
- :class:`LedgerConfig`: ``ledger:`` in a worker's config (``config.py``, no driver imported);
- :func:`open_ledger`: SQLite (``sqlite.py``, one worker or one host) or PostgreSQL (``postgres.py``,
  psycopg 3, a pool of workers), by ``kind``;
- :func:`keep_ledger`: the background retention and usage refresh of a worker, :func:`keep_heartbeat`
  its heartbeat (``upkeep.py``).
"""

from __future__ import annotations

from qxedge.hybrid.ledger._open import open_ledger
from qxedge.hybrid.ledger.config import LedgerConfig
from qxedge.hybrid.ledger.protocol import (
    Claim,
    JobLedger,
    JobRow,
    LedgerError,
    Outcome,
    Purged,
    UsageRow,
)
from qxedge.hybrid.ledger.upkeep import keep_heartbeat, keep_ledger

__all__ = [
    "Claim",
    "JobLedger",
    "JobRow",
    "LedgerConfig",
    "LedgerError",
    "Outcome",
    "Purged",
    "UsageRow",
    "keep_heartbeat",
    "keep_ledger",
    "open_ledger",
]
