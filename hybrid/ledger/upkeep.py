"""A worker's background work on its ledger: retention (``purge_every_s``) and the pool's usage read
for /metrics (``usage_refresh_s``). Every worker of a pool does both: deleting what another worker
deleted already costs nothing."""

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
