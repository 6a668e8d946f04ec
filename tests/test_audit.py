"""Where the audit log's work runs: a row on the loop while rows are quick and nothing is queued,
through the log's thread otherwise (in order); checkpoints in the thread keep the WAL bounded; a row
that cannot be written is an error for the caller."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.audit import CHECKPOINT_ROWS, AuditLog, query


def watch_inserts(audit: AuditLog) -> list[tuple[str | None, int]]:
    """(asset, thread id) of every row the log inserts, in insert order."""
    seen: list[tuple[str | None, int]] = []
    insert = audit._insert

    def recorded(row: tuple[Any, ...]) -> None:
        insert(row)
        seen.append((row[3], threading.get_ident()))

    audit._insert = recorded  # type: ignore[method-assign]
    return seen


async def test_quick_rows_are_written_on_the_loop_and_rows_behind_queued_work_wait_in_order(
    tmp_path: Path,
) -> None:
    loop_thread = threading.get_ident()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        seen = watch_inserts(audit)
        audit._inline.limit_s = 10.0  # any row counts as quick: the test does not race the clock
        await audit.write("proposal", "accepted", asset="a")  # not timed yet: through the thread
        assert seen[-1][1] != loop_thread
        done = audit.record("proposal", "accepted", asset="b")
        assert done.done() and seen[-1] == ("b", loop_thread), "a quick row is on disk when record returns"

        release = threading.Event()
        prune = audit._prune

        def slow_prune() -> None:
            release.wait(30)
            prune()

        audit._prune = slow_prune  # type: ignore[method-assign]
        audit._pruned_at = 0.0  # the next row queues the hourly prune behind it
        audit.record("proposal", "accepted", asset="c")
        waiting = audit.record("proposal", "accepted", asset="d")
        assert not waiting.done(), "a row must not overtake the prune queued before it"
        release.set()
        await asyncio.wrap_future(waiting)
        assert seen[-1][0] == "d" and seen[-1][1] != loop_thread

        audit._inline.last_s = 20.0  # the last row took long (a stalling disk): the next goes to the thread
        await audit.write("proposal", "accepted", asset="e")
        assert seen[-1] == ("e", seen[0][1])
        await audit.write("proposal", "accepted", asset="f")  # timed quick in the thread: back on the loop
        assert seen[-1] == ("f", loop_thread)
    assert [r["asset"] for r in query(tmp_path / "audit.sqlite")] == list("abcdef")


async def test_checkpoints_in_the_thread_keep_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    wal = Path(f"{path}-wal")
    sizes = []
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        loop = asyncio.get_running_loop()
        for _ in range(6):
            for i in range(CHECKPOINT_ROWS):
                audit.record("readback", "confirmed", asset=f"line1/a{i}", value=float(i))
            # read in the log's thread: after the checkpoint queued meanwhile
            sizes.append(await loop.run_in_executor(audit._pool, lambda: wal.stat().st_size))
    # without checkpoints (wal_autocheckpoint is off) the WAL would grow by the first size every round
    assert max(sizes) <= 2 * sizes[0], sizes
    assert len(query(path)) == 6 * CHECKPOINT_ROWS


@pytest.mark.parametrize("inline", [True, False])
async def test_a_row_that_cannot_be_written_fails_its_writer(tmp_path: Path, inline: bool) -> None:
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        audit._inline.limit_s = 10.0 if inline else 0.0

        def full(row: tuple[Any, ...]) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        audit._insert = full  # type: ignore[method-assign]
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await audit.write("proposal", "accepted", asset="a")
