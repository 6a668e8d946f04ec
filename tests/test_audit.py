"""How a row reaches the audit log: appended to a segment file (on disk when ``write`` returns), moved
into SQLite by the log's thread, recovered at the next open after a crash, kept when SQLite refuses it;
one process at a time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.audit import AuditLog, _read_segment, query
from qxedge.core.errors import AuditError

from .conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def segments(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.rows-*"))


def in_sqlite(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [i for (i,) in db.execute("SELECT id FROM audit ORDER BY id")]
    finally:
        db.close()


def lines(path: Path) -> list[bytes]:
    return [line for segment in segments(path) for line in segment.read_bytes().split(b"\n") if line]


async def test_a_row_is_on_disk_when_write_returns_and_in_sqlite_after_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        await audit.write("proposal", "accepted", asset="line1/pump1", value=0.5, provenance={"rule": "r"})
        assert len(lines(path)) == 1 and b'"line1/pump1"' in lines(path)[0]
        await audit.flush()
        assert [(r["id"], r["asset"], r["provenance"]) for r in query(path)] == [
            (1, "line1/pump1", {"rule": "r"})
        ]
        assert lines(path) == [], "a segment whose rows are in SQLite is deleted"
        audit.record("readback", "confirmed", asset="line1/pump1", value=0.5)
        assert await wait_until(lambda: len(in_sqlite(path)) == 2), "the log flushes by itself"
        await audit.write("proposal", "refused", asset="line1/pump1", reason="stop")
    assert [r["kind"] for r in query(path)] == ["proposal", "readback", "proposal"]
    assert segments(path) == [], "a stop moves every row into SQLite and leaves no segment"


CRASH = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from qxedge.agent.audit import AuditLog

    async def main() -> None:
        async with AuditLog(Path(sys.argv[1]), "t", "cfg", retention_days=1) as audit:
            for i in range(3):
                await audit.write("proposal", "accepted", asset=f"a{i}")
            await audit.flush()
            for i in range(3, 5):
                await audit.write("proposal", "accepted", asset=f"a{i}")
            os._exit(9)  # no flush, no close: the last two rows are only in their segment

    asyncio.run(main())
""")


async def test_rows_a_crash_left_in_segments_are_in_the_log_after_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    crashed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASH, str(path)], cwd=ROOT, timeout=60, capture_output=True
    )
    assert crashed.returncode == 9, crashed.stderr
    assert [r["asset"] for r in query(path)] == ["a0", "a1", "a2", "a3", "a4"], "segments are read too"
    assert [r["asset"] for r in query(path, limit=2)] == ["a3", "a4"]
    with segments(path)[-1].open("ab") as last:
        last.write(b'\n[6, 1.0, "t", "proposal", "a5"')  # a line the crash cut short
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        assert segments(path) != [] and lines(path) == [], "the open moved the rows into SQLite"
        await audit.write("proposal", "accepted", asset="after")
    rows = query(path)
    assert [(r["id"], r["asset"]) for r in rows] == [
        (1, "a0"),
        (2, "a1"),
        (3, "a2"),
        (4, "a3"),
        (5, "a4"),
        (6, "after"),
    ]


async def test_rows_sqlite_refuses_stay_in_their_segment_and_go_in_at_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        await audit.write("proposal", "accepted", asset="a")
        insert = audit._insert

        def locked(rows: list[Any]) -> None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(audit, "_insert", locked)
        await audit.flush()
        await audit.write("proposal", "accepted", asset="b")
        assert in_sqlite(path) == [] and len(lines(path)) == 2, "both rows wait on disk"
        assert [r["asset"] for r in query(path)] == ["a", "b"], "queries read them from the segments"
        monkeypatch.setattr(audit, "_insert", insert)
        await audit.flush()
        assert [r["asset"] for r in query(path)] == ["a", "b"] and lines(path) == []


async def test_a_row_that_cannot_be_written_fails_its_writer_and_a_torn_line_spoils_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        fd, segment = audit._segment
        audit._segment = (os.open(segment, os.O_RDONLY), segment)  # the disk refuses the write
        with pytest.raises(OSError, match="Bad file descriptor"):
            await audit.write("proposal", "accepted", asset="a")
        audit.record("readback", "confirmed", asset="a")  # logged, not raised
        assert "audit write failed" in caplog.text
        with pytest.raises(ValueError, match="not a finite time"):
            await audit.write("proposal", "accepted", asset="a", ts=float("nan"))
        os.close(audit._segment[0])
        audit._segment = (fd, segment)
        os.write(fd, b'\n[9,1.0,"t","proposal","torn"')  # what a write cut short by a full disk leaves
        await audit.write("proposal", "accepted", asset="b", value=2**63)
        assert [r[4] for r in _read_segment(segment)] == ["b"], "the row after a torn line is intact"
    rows = query(path)
    assert [(r["id"], r["asset"], r["value"]) for r in rows] == [(3, "b", 2.0**63)], (
        "failed rows' ids not reused"
    )


async def test_one_process_at_a_time_holds_a_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1):
        with pytest.raises(AuditError, match="in use by another process"):
            async with AuditLog(path, "t", "cfg", retention_days=1):
                pass
    async with AuditLog(path, "t", "cfg", retention_days=1):  # free again once closed
        pass
