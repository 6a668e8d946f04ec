"""A worker's background work on its ledger: retention (``purge_every_s``) and the pool's usage read
for /metrics (``usage_refresh_s``), and its heartbeat (``heartbeat_s``, :func:`keep_heartbeat`). Every
worker of a pool does all three: deleting what another worker deleted already costs nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from qxedge.hybrid.ledger.config import LedgerConfig
from qxedge.hybrid.ledger.protocol import JobLedger, LedgerError, UsageRow

log = logging.getLogger(__name__)


async def keep_ledger(
    ledger: JobLedger, config: LedgerConfig, on_usage: Callable[[list[UsageRow]], None]
) -> None:
    """Run until cancelled: purge at start and every ``purge_every_s``; hand the pool's usage (all
    the usage totals kept) to ``on_usage`` every ``usage_refresh_s``. A ledger error is logged (once
    until the ledger answers again) and tried again at the next turn."""
    next_purge = 0.0
    failing = False
    while True:
        now = time.time()
        try:
            if now >= next_purge:
                next_purge = now + config.purge_every_s
                purged = await ledger.purge(now)
                if purged.jobs or purged.usage:
                    log.info(
                        "job ledger retention: %d job(s) older than %g days, %d usage row(s) deleted",
                        purged.jobs,
                        config.retention_days,
                        purged.usage,
                    )
            on_usage(await ledger.usage())
            if failing:
                log.info("job ledger %s answers again", config.where())
            failing = False
        except LedgerError as exc:
            if not failing:
                log.warning("job ledger upkeep: %s", exc)
            failing = True
        await asyncio.sleep(min(config.usage_refresh_s, max(0.0, next_purge - time.time())))


async def keep_heartbeat(ledger: JobLedger, config: LedgerConfig, worker: str, started_at: float) -> None:
    """Run until cancelled: write ``worker``'s heartbeat every ``heartbeat_s``, so that the claims it
    holds are not taken over while it lives (a task of its own on the event loop: solving runs in
    threads and processes, so a long solve does not stop it). A ledger error is logged (once until the
    ledger answers again) and the next beat tried on time."""
    failing = False
    beat = time.monotonic()
    while True:
        try:
            await ledger.heartbeat(worker, started_at, time.time())
            if failing:
                log.info("job ledger %s: heartbeat written again", config.where())
            failing = False
        except LedgerError as exc:
            if not failing:
                log.warning(
                    "job ledger heartbeat: %s (other workers take this worker's claims over after %g s)",
                    exc,
                    config.holder_timeout_s,
                )
            failing = True
        beat += config.heartbeat_s
        now = time.monotonic()
        if beat < now:  # the write took longer than a period: the next one at once, then on the beat
            beat = now
        await asyncio.sleep(beat - now)
