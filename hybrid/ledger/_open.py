"""Opening the ledger a config names, importing only the driver it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from qxedge.hybrid.ledger.config import LedgerConfig
from qxedge.hybrid.ledger.protocol import JobLedger


@asynccontextmanager
async def open_ledger(config: LedgerConfig, *, create: bool = True) -> AsyncIterator[JobLedger]:
    """``async with open_ledger(config) as ledger``: SQLite or PostgreSQL by ``config.kind``; a
    LedgerError when it cannot be opened. ``create=False`` (readers such as ``qxedge jobs``) neither
    creates a SQLite file nor any table."""
    if config.kind == "postgres":
        from qxedge.hybrid.ledger.postgres import PostgresLedger

        async with PostgresLedger(config, create=create) as pg:
            yield pg
    else:
        from qxedge.hybrid.ledger.sqlite import SqliteLedger

        async with SqliteLedger(config, create=create) as lite:
            yield lite
