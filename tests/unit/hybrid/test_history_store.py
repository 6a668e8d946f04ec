"""The historian's Parquet store: Hive layout that Polars and DuckDB read, exactly once by
(site, stream, seq), and recovery from a crash on either side of the ledger's commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import polars as pl

from qxedge.connectors.history_wire import frame
from qxedge.hybrid.history_store import Batch, ParquetStore

MIDNIGHT = 1764115200.0  # 2025-11-26T00:00:00Z


def batch(site: str, seq: int, start: float, n: int = 4) -> Batch:
    df = frame(
        [f"l1/p{i % 2}" for i in range(n)],
        ["temp"] * n,
        [start + i for i in range(n)],
        [float(i) for i in range(n)],
    )
    return Batch(site, "history", seq, df)


def test_layout_dedup_and_readers(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path, "h1").open()
    try:
        written = store.write([batch("a", 0, MIDNIGHT - 2), batch("b", 0, MIDNIGHT), batch("a", 0, 0)])
        assert [b.seq for b in written.new] == [0, 0] and len(written.duplicates) == 1  # twice in one call
        again = store.write([batch("a", 0, MIDNIGHT - 2), batch("a", 1, MIDNIGHT + 10)])
        assert [b.seq for b in again.new] == [1] and [b.seq for b in again.duplicates] == [0]
        assert store.rows() == 12 and store.rows("a") == 8 and store.missing("a", "history") == 0
        store.write([batch("a", 5, MIDNIGHT + 20)])
        assert store.missing("a", "history") == 3  # 2, 3 and 4 not written (yet)
    finally:
        store.close()
    folders = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("site=*/date=*"))
    assert folders == ["site=a/date=2025-11-25", "site=a/date=2025-11-26", "site=b/date=2025-11-26"]
    df = pl.scan_parquet(tmp_path / "**" / "*.parquet", hive_partitioning=True).collect()
    assert df.height == 16
    assert set(df.columns) >= {"asset", "signal", "ts", "value", "seq", "stream", "site", "date"}
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    a = df.filter(pl.col("site") == "a").sort("ts")
    assert a.get_column("ts").dt.epoch("us").to_list()[:2] == [
        int((MIDNIGHT - 2) * 1e6),
        int((MIDNIGHT - 1) * 1e6),
    ]
    rows = duckdb.sql(
        f"SELECT site, CAST(date AS VARCHAR), count(*) FROM read_parquet('{tmp_path}/**/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [("a", "2025-11-25", 2), ("a", "2025-11-26", 10), ("b", "2025-11-26", 4)]


def test_recovery_keeps_committed_files_and_drops_the_rest(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path, "h1").open()
    store.write([batch("a", 0, MIDNIGHT)])
    store.close()
    final = next(tmp_path.glob("site=a/date=*/part-*.parquet"))
    folder = final.parent
    # a crash after the commit, before the rename: the ledger names the file, it is still hidden
    committed = folder / "part-2-h1-0.parquet"
    (folder / f".{committed.name}.tmp").write_bytes(final.read_bytes())
    with sqlite3.connect(tmp_path / "_historian" / "ledger.sqlite") as db:
        db.execute("INSERT INTO pending (name) VALUES (?)", (str(committed.relative_to(tmp_path)),))
    # a crash before the commit: a hidden file nothing names
    orphan = folder / ".part-3-h1-0.parquet.tmp"
    orphan.write_bytes(b"half a file")
    store = ParquetStore(tmp_path, "h2").open()
    store.close()
    assert committed.exists() and not orphan.exists()
    assert not list(tmp_path.glob("site=*/date=*/.*.tmp"))


def test_deadletter_keeps_payload_and_reason(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path, "h1").open()
    try:
        note = store.deadletter("qx/v1/a/history", b"\x00bad", "no header line")
    finally:
        store.close()
    assert note.with_suffix(".bin").read_bytes() == b"\x00bad"
    assert '"reason": "no header line"' in note.read_text()
    assert not list(tmp_path.glob("**/*.parquet"))  # readers never see it
