"""How a row reaches the audit log: appended to a segment file (on disk when ``write`` returns), moved
into SQLite by the log's thread, recovered at the next open after a crash, kept when SQLite refuses it;
one process at a time."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.audit import COLUMNS, CONTENT, AuditLog, _read_segment, query
from qxedge.agent.auditchain import GENESIS, digest, read_key
from qxedge.agent.cli import main
from qxedge.agent.gate import SetpointGate
from qxedge.agent.pipeline import Agent
from qxedge.agent.safety import Envelope, Proposal, Safety, SafetyConfig
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.core.errors import AuditError
from qxedge.testing import Watcher, edge_config, wait_until

from .test_gate import plant_reports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = "demo"


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


# ------------------------------------------------------------------ the hash chain and `qxedge audit verify`
def audit_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    """``qxedge audit ...`` in this process: (exit status, stdout as JSON when it is, stderr)."""
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def verified(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, report, err = audit_cli(capsys, "verify", "--log", str(path), "--json", *args)
    assert isinstance(report, dict), (report, err)
    return code, report


async def written(path: Path, rows: int, key: bytes | None = None, **options: Any) -> None:
    async with AuditLog(path, "t", "cfg", retention_days=1, key=key, **options) as audit:
        for i in range(rows):
            await audit.write("proposal", "accepted", asset=f"a{i}", value=i / 10, provenance={"i": i})


def tamper(path: Path, *statements: str, args: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for sql in statements:
            db.execute(sql, args if "?" in sql else ())
    finally:
        db.close()


def rechain(path: Path, key: bytes | None = None) -> None:
    """What someone with the file and the code (not the key) can do: every hash computed again."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TRIGGER audit_append_only")
        last = GENESIS
        for content in db.execute(f"SELECT {', '.join(CONTENT)} FROM audit ORDER BY id").fetchall():
            row_hash = digest(key, last, content)
            db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (last, row_hash, content[0]))
            last = row_hash
    finally:
        db.close()


async def test_an_intact_log_verifies_and_every_row_is_chained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.sqlite"
    await written(path, 5)
    code, report = verified(capsys, path)
    assert code == 0 and report["ok"] and report["rows"] == 5 and report["chain"] == "sha256", report
    rows = query(path)
    assert rows[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]
    code, text, _ = audit_cli(capsys, "verify", "--log", str(path))
    assert code == 0 and "intact: rows 1..5 (5 rows, sha256)" in text


async def test_verify_finds_a_deleted_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.sqlite"
    await written(path, 5)
    tamper(path, "DELETE FROM audit WHERE id = 3")
    code, report = verified(capsys, path)
    assert code == 1 and report["first_broken"]["id"] == 4, report
    assert "rows 3..3 are missing (deleted)" in report["first_broken"]["problem"]


async def test_verify_finds_a_row_updated_after_its_trigger_was_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.sqlite"
    await written(path, 5)
    tamper(path, "DROP TRIGGER audit_append_only", "UPDATE audit SET verdict = 'refused' WHERE id = 2")
    code, report = verified(capsys, path)
    assert code == 1 and report["first_broken"]["id"] == 2, report
    assert "does not match its hash" in report["first_broken"]["problem"]


async def test_verify_finds_forged_inserts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.sqlite"
    await written(path, 3)
    last = query(path)[-1]
    forged = (4, 1.0, "t", "proposal", "a9", None, None, "accepted", 0.9, None, None, 0, "{}", "cfg", 1)
    # made up: no valid hash
    tamper(
        path,
        f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        args=(*forged, last["hash"], "f" * 64),
    )
    code, report = verified(capsys, path)
    assert code == 1 and report["first_broken"]["id"] == 4, report
    assert "does not match its hash" in report["first_broken"]["problem"]


async def test_a_forged_insert_with_a_valid_hash_breaks_the_chain_of_the_agent_s_next_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone with the file and the code computes a valid SHA-256 row while the agent runs: the row the
    agent appends with that id is not inserted (same id) and its next row chains from its own."""
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        await audit.write("proposal", "accepted", asset="a0")
        await audit.flush()
        last = query(path)[-1]
        content = (
            2,
            1.0,
            "t",
            "proposal",
            "forged",
            None,
            None,
            "accepted",
            1.0,
            None,
            None,
            0,
            "{}",
            "cfg",
            1,
        )
        tamper(
            path,
            f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            args=(*content, last["hash"], digest(None, last["hash"], content)),
        )
        for asset in ("a1", "a2"):
            await audit.write("proposal", "accepted", asset=asset)
    assert [r["asset"] for r in query(path)] == ["a0", "forged", "a2"]
    code, report = verified(capsys, path)
    assert code == 1 and report["first_broken"]["id"] == 3, report
    assert "prev_hash is not the hash of row 2" in report["first_broken"]["problem"]


async def test_with_a_key_a_row_forged_without_it_does_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, key_file = tmp_path / "audit.sqlite", tmp_path / "audit.key"
    key_file.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    key = read_key(key_file)
    await written(path, 3, key=key)
    code, report = verified(capsys, path, "--key-file", str(key_file))
    assert code == 0 and report["chain"].startswith("hmac-sha256:"), report
    code, _, err = audit_cli(capsys, "verify", "--log", str(path))
    assert code == 2 and "needs its key" in err
    last = query(path)[-1]
    content = (4, 1.0, "t", "proposal", "forged", None, None, "accepted", 1.0, None, None, 0, "{}", "cfg", 1)
    tamper(
        path,
        f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        args=(*content, last["hash"], digest(None, last["hash"], content)),
    )
    code, report = verified(capsys, path, "--key-file", str(key_file))
    assert code == 1 and report["first_broken"]["id"] == 4, report
    rechain(path)  # re-chained with plain SHA-256, and the log said to be so
    tamper(path, "UPDATE audit_meta SET value = 'sha256' WHERE name = 'chain'")
    code, report = verified(capsys, path, "--key-file", str(key_file))
    assert code == 1 and "re-chained without it" in report["first_broken"]["problem"], report


async def test_a_truncated_tail_shows_against_a_checkpoint_from_upstream_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, upstream = tmp_path / "audit.sqlite", tmp_path / "checkpoints.jsonl"
    sent: list[Mapping[str, Any]] = []
    async with AuditLog(path, "t", "cfg", retention_days=1, checkpoint_rows=2) as audit:
        audit.anchor = lambda checkpoint: sent.append(checkpoint) is None
        for i in range(6):
            await audit.write("proposal", "accepted", asset=f"a{i}")
            await audit.flush()
    assert [c["id"] for c in sent] == [2, 4, 6] and audit.checkpoints == 3
    upstream.write_text("".join(json.dumps({"audit_checkpoint": c}) + "\n" for c in sent))
    code, report = verified(capsys, path, "--checkpoints", str(upstream))
    assert code == 0 and report["checkpoints_checked"] == 6, report  # 3 local, 3 from upstream

    tamper(path, "DELETE FROM audit WHERE id > 4")  # the last rows cut, their local checkpoint with them
    tamper(path, "DELETE FROM audit_checkpoints WHERE row_id > 4")
    code, report = verified(capsys, path)
    assert code == 0, "without the upstream copy a cut tail is a shorter intact log"
    code, report = verified(capsys, path, "--checkpoints", str(upstream))
    assert code == 1 and report["first_broken"]["id"] == 6, report
    assert "the log ends at row 4" in report["first_broken"]["problem"]

    tamper(path, "DELETE FROM audit WHERE id = 2")
    rechain(path)  # a deleted row hidden by hashing every later row again
    tamper(path, "DELETE FROM audit_checkpoints")
    assert verified(capsys, path)[0] == 0, "re-chained: intact locally"
    code, report = verified(capsys, path, "--checkpoints", str(upstream))
    problems = {p["id"]: p["problem"] for p in report["problems"]}
    assert code == 1 and sorted(problems) == [2, 4, 6], report
    assert "row named by a checkpoint (" in problems[2] and "log rewritten" in problems[4]


async def test_retention_keeps_the_chain_verifiable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.sqlite"
    old = time.time() - 3 * 86400
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        for i in range(3):
            await audit.write("proposal", "refused", asset=f"old{i}", ts=old)
        await audit.write("proposal", "accepted", asset="new")
        await audit.write("proposal", "accepted", asset="old but after a new one", ts=old)
    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:  # the open prunes
        pass
    rows = query(path)
    assert [r["asset"] for r in rows] == ["new", "old but after a new one", None], "a prefix is deleted"
    assert rows[-1]["kind"] == "retention" and rows[-1]["provenance"]["upto_id"] == 3
    code, report = verified(capsys, path)
    assert code == 0 and report["retention_anchor"]["upto_id"] == 3 and report["first_id"] == 4, report
    tamper(path, "DELETE FROM audit WHERE id = 4")  # the oldest row kept
    code, report = verified(capsys, path)
    assert code == 1 and "rows 4..4 are missing" in report["first_broken"]["problem"], report


OLD_SCHEMA = """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, site TEXT NOT NULL, kind TEXT NOT NULL,
    asset TEXT, source TEXT, proposed REAL, verdict TEXT NOT NULL, value REAL, reason TEXT, limit_name TEXT,
    dry_run INTEGER NOT NULL DEFAULT 0, provenance TEXT NOT NULL DEFAULT '{}', config_hash TEXT NOT NULL
);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


async def test_a_log_from_before_the_chain_is_chained_at_open_and_keeps_working(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(OLD_SCHEMA)
    now = time.time()
    for i in (1, 2):
        db.execute(
            "INSERT INTO audit VALUES (?, ?, 't', 'proposal', ?, NULL, NULL, 'accepted', 0.5, NULL, NULL, 0,"
            " '{}', 'old')",
            (i, now, f"old{i}"),
        )
    db.close()
    # and a row an older agent left in a segment when it crashed
    old_row = [3, now, "t", "proposal", "old3", None, None, "accepted", 0.5, None, None, 0, "{}", "old"]
    path.with_name(f"{path.name}.rows-00000001").write_bytes(b"\n" + json.dumps(old_row).encode())
    assert [r["asset"] for r in query(path)] == ["old1", "old2", "old3"], "readable before the upgrade"
    code, report = verified(capsys, path)
    assert code == 1 and "no hash chain yet" in report["first_broken"]["problem"]

    async with AuditLog(path, "t", "cfg", retention_days=1) as audit:
        await audit.write("proposal", "accepted", asset="new")
    rows = query(path)
    assert [(r["asset"], r["kind"]) for r in rows] == [
        ("old1", "proposal"),
        ("old2", "proposal"),
        ("old3", "proposal"),
        (None, "audit"),
        ("new", "proposal"),
    ]
    assert rows[3]["verdict"] == "migrated" and rows[0]["prev_hash"] == GENESIS
    code, report = verified(capsys, path)
    assert code == 0 and report["rows"] == 5, report
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        tamper(path, "UPDATE audit SET verdict = 'refused'")  # the trigger is back


async def test_a_missing_log_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "audit.sqlite"
    for args in (
        ("--log", str(missing)),
        ("verify", "--log", str(missing)),
        ("--log", str(missing), "--json"),
    ):
        code, out, err = audit_cli(capsys, *args)
        assert (code, out) == (2, "") and err == f"qxedge: error: no audit log at {missing}\n", args
    assert not missing.parent.exists(), "reading creates nothing"
    code, _, err = audit_cli(capsys, "verify", "--log", str(missing), "--asset", "a", "--limit", "3")
    assert code == 2 and "audit verify checks every row: --asset, --limit is for listing" in err


# ------------------------------------------------------------------ repeats, and the agent's own path
async def test_repeats_get_one_row_for_the_first_and_one_with_the_count_of_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1, summary_s=3600) as audit:
        firsts = [
            audit.tally("proposal", "refused", asset="a", limit="expiry", reason=f"input data is {i}.5 s old")
            for i in range(10_000)
        ]
        audit.tally("proposal", "refused", asset="a", limit="lock", reason="locked by operator (x)")
        audit.tally("proposal", "refused", asset="b", limit="expiry", reason="input data is 9 s old")
    assert firsts.count(True) == 1
    rows = [(r["asset"], r["limit_name"], r["count"], r["reason"]) for r in query(path)]
    assert rows == [
        ("a", "expiry", 1, "input data is 0.5 s old"),
        ("a", "lock", 1, "locked by operator (x)"),
        ("b", "expiry", 1, "input data is 9 s old"),
        ("a", "expiry", 9_999, rows[3][3]),  # the rest, summed when the log closed
    ]
    assert rows[3][3].startswith("9999 more in ") and rows[3][3].endswith(
        "the last: input data is 9999.5 s old"
    )


@pytest.mark.integration
async def test_20000_proposals_of_the_value_in_force_are_written_once_and_counted_in_a_few_rows(
    broker: EmbeddedBroker,
    watch: Callable[..., Watcher],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = edge_config(
        broker.url,
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="100",
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__readback__timeout_s="600",
    )
    asset = "line1/pump2"
    watcher = watch(f"qx/v1/{SITE}/setpoints/#")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        gate = agent.gate
        assert gate is not None
        assert await wait_until(lambda: gate.locks_unknown() is None), "the plant broker's locks never came"
        await plant_reports(watcher, agent, "pump2")  # the value in force: known before the first write
        statuses = []
        for _ in range(20_000):
            now = time.time()
            statuses.append((await gate.propose(Proposal(asset, 0.7, "topic:mes", now, now), now)).status)
        for _ in range(5_000):  # and refusals: stale data
            now = time.time()
            await gate.propose(Proposal(asset, 0.6, "topic:mes", now - 600, now), now)
        stop.set()
    assert set(statuses) == {"accepted"}, "a no-op is a success for its caller"
    assert gate.verdicts["written"] == 1 and gate.verdicts["unchanged"] == 19_999, gate.verdicts
    assert watcher.wait_for(lambda ms: len(ms) >= 1, 10)
    assert [json.loads(m.payload)["value"] for m in watcher.on(f"qx/v1/{SITE}/setpoints/{asset}")] == [0.7]

    path = cfg.safety.audit.resolved(cfg.site)
    rows = [r for r in query(path, asset=asset) if r["kind"] == "proposal"]
    assert len(rows) <= 5, [(r["verdict"], r["count"], r["reason"]) for r in rows]
    counted = {v: sum(r["count"] for r in rows if r["verdict"] == v) for v in {r["verdict"] for r in rows}}
    assert counted == {"accepted": 1, "unchanged": 19_999, "refused": 5_000}, counted
    assert verified(capsys, path)[0] == 0
    refusals = [r for r in caplog.records if r.getMessage().startswith(f"refused {asset} = ")]
    assert len(refusals) == 1, "a refusal is logged once per kind and interval"


@pytest.mark.integration
async def test_checkpoints_go_upstream_in_the_telemetry_stream_and_catch_a_cut_tail(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = edge_config(
        broker.url,
        safety__audit__checkpoint_rows="1",
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="100",
        safety__envelopes__0__interlocks="[]",
    )
    watcher = watch(f"qx/v1/{SITE}/telemetry")

    def anchored(messages: list[Any]) -> list[dict[str, Any]]:
        docs = [json.loads(m.payload) for m in messages]
        return [d for d in docs if "audit_checkpoint" in d]

    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        gate = agent.gate
        assert gate is not None
        assert await wait_until(lambda: gate.locks_unknown() is None)
        for value in (0.5, 0.6, 0.7):
            now = time.time()
            await gate.propose(Proposal("line1/pump2", value, "topic:mes", now, now), now)
        await gate.audit.flush()
        last = gate.audit._next_id - 1
        assert await asyncio.to_thread(
            watcher.wait_for, lambda ms: any(d["audit_checkpoint"]["id"] >= last for d in anchored(ms)), 30
        ), "no checkpoint of the newest row came upstream"
        stop.set()
    records = anchored(watcher.messages)
    assert all(r["site"] == SITE and isinstance(r["seq"], int) for r in records)
    upstream = tmp_path / "telemetry.jsonl"
    upstream.write_text("".join(m.payload.decode() + "\n" for m in watcher.messages))  # the whole stream
    path = cfg.safety.audit.resolved(cfg.site)
    code, report = verified(capsys, path, "--checkpoints", str(upstream))
    assert code == 0 and report["checkpoints_checked"] >= 2 * len(records), report

    cut = max(r["audit_checkpoint"]["id"] for r in records)  # the newest row upstream knows, and after
    tamper(
        path, f"DELETE FROM audit WHERE id >= {cut}", f"DELETE FROM audit_checkpoints WHERE row_id >= {cut}"
    )
    assert verified(capsys, path)[0] == 0, "locally: a shorter intact log"
    code, report = verified(capsys, path, "--checkpoints", str(upstream))
    assert code == 1 and report["first_broken"]["id"] == cut, report
    assert "rows cut from the end" in report["first_broken"]["problem"]


async def test_many_kinds_of_repeats_are_counted_together_past_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qxedge.agent.audit.MAX_TALLIES", 3)
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "t", "cfg", retention_days=1, summary_s=3600) as audit:
        for i in range(1_000):  # a flood of proposals for made-up assets
            audit.tally("proposal", "refused", asset=f"x{i}", reason="no safety envelope for this asset")
    rows = query(path)
    assert [(r["asset"], r["count"]) for r in rows] == [
        ("x0", 1),
        ("x1", 1),
        ("x2", 1),
        ("x3", 1),  # the first of the rest, in full
        (None, 996),  # the others, counted together
    ]


class Published:
    """The gate's MQTT client as far as a logic test needs it: what it publishes."""

    def __init__(self) -> None:
        self.setpoints: list[float] = []

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, **mqtt5: object
    ) -> bool:
        if "/setpoints/" in topic:
            self.setpoints.append(json.loads(payload)["value"])
        return True


async def test_a_value_not_in_force_after_a_readback_alarm_is_written_again(tmp_path: Path) -> None:
    env = Envelope(
        assets=["*"], min=0, max=1, readback={"signal": "load_cap", "timeout_s": 1, "tolerance": 0.01}
    )
    safety = Safety(SafetyConfig(envelopes=[env]), started_at=0.0)
    plant = Published()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(safety, audit, plant, "t")  # type: ignore[arg-type]

        async def propose(value: float, now: float) -> str:
            return (await gate.propose(Proposal("a", value, "t", now, now), now)).status

        assert [await propose(v, 10.0) for v in (0.5, 0.5, 0.505, 0.6)] == ["accepted"] * 4
        assert plant.setpoints == [0.5, 0.6], "0.5 and 0.505 (within the tolerance) were in force"
        await gate.tick({("a", "load_cap"): (10.0, 0.2)}, 12.0)  # the plant holds 0.2: an alarm
        assert await propose(0.6, 12.0) == "accepted" and plant.setpoints == [0.5, 0.6, 0.6]
    assert gate.verdicts["unchanged"] == 2 and gate.verdicts["written"] == 3


async def test_a_bad_checkpoint_or_key_file_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, bad, short = tmp_path / "audit.sqlite", tmp_path / "bad.jsonl", tmp_path / "short.key"
    await written(path, 1)
    bad.write_text('{"audit_checkpoint": {"id": 1, "hash": "ab"}}\n{"audit_checkpoint": {"id": "1"}}\n')
    short.write_bytes(b"secret")
    for args, error in (
        (("--checkpoints", str(bad)), f"{bad}: entry 2: expected an id (integer) and a hash (text)"),
        (("--checkpoints", str(tmp_path / "none")), f"checkpoints {tmp_path / 'none'}: No such file"),
        (("--key-file", str(short)), f"audit key file {short}: 6 bytes, at least 16 needed"),
    ):
        code, out, err = audit_cli(capsys, "verify", "--log", str(path), *args)
        assert code == 2 and out == "" and err.startswith(f"qxedge: error: {error}"), (args, err)


async def test_audit_reads_the_log_in_the_configs_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service and an operator's shell have different XDG_STATE_HOME (systemd's /var/lib against
    ~/.local/state); with `state_dir` in the config, `qxedge audit --config` reads what the service wrote."""
    service_state = tmp_path / "var-lib-qxedge"
    config = tmp_path / "edge.yaml"
    config.write_text("site: gumi\nstate_dir: var-lib-qxedge\n")  # relative: to the config file
    await written(service_state / "audit-gumi.sqlite", 2)
    code, rows, err = audit_cli(capsys, "--config", str(config), "--json")
    assert code == 0, err
    assert [r["asset"] for r in rows] == ["a0", "a1"]
