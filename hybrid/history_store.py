"""The historian's files: Parquet partitioned by site and date (Hive layout) and a ledger of batches.

Layout under ``root`` (docs/history.md is the reference others build on)::

    {root}/site={site}/date={YYYY-MM-DD}/part-{unix_ns}-{writer}-{n}.parquet
    {root}/_historian/ledger.sqlite        batches written: (site, stream, seq) -> rows, file
    {root}/_deadletter/{unix_ns}-{n}.bin   rejected messages, each with a .json beside it (the reason)

A Parquet file holds the columns ``asset`` (string), ``signal`` (string), ``ts`` (timestamp µs UTC),
``value`` (float64), ``seq`` (int64, the batch's sequence number) and ``stream`` (string), sorted by
asset, signal, ts; ``site`` and ``date`` (the UTC date of ``ts``) are the partition keys, in the path.
Readers glob ``*.parquet``: the ledger, dead letters and unfinished files (``.part-*.parquet.tmp``) never
match.

Exactly once, across crashes and several historians on one root: :meth:`ParquetStore.write` takes
the ledger's write lock (``BEGIN IMMEDIATE``), leaves out every batch the ledger already holds, writes
the rest to hidden temporary files (fsync), records batches and files in the ledger (``COMMIT``,
``synchronous=FULL``), then renames each file into place (atomic) and fsyncs its folder. A crash before
the commit leaves temporary files no ledger row names: deleted at the next start (the batches were
never confirmed, the agent sends them again). A crash after it leaves temporary files the ledger names
as pending: renamed into place at the next start. The ledger is the commit point; a batch is confirmed
upstream only once it is committed. Several historians may share a root on one host (SQLite's locks;
not on a network file system).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from qxedge.core.errors import QxError

log = logging.getLogger(__name__)

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    site TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    rows INTEGER NOT NULL, written REAL NOT NULL,
    PRIMARY KEY (site, stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (name TEXT PRIMARY KEY);   -- relative path of a file not yet renamed
"""
COLUMNS = ("asset", "signal", "ts", "value", "seq", "stream")


class StoreError(QxError):
    """The historian's root cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated batch, ready to be written."""

    site: str
    stream: str
    seq: int
    readings: pl.DataFrame  # asset, signal, ts, value


@dataclass(slots=True)
class Written:
    """What one :meth:`ParquetStore.write` did."""

    new: list[Batch] = field(default_factory=list)  # written now
    duplicates: list[Batch] = field(default_factory=list)  # already in the ledger (or twice in the call)
    rows: int = 0
    files: list[Path] = field(default_factory=list)


def partition(root: Path, site: str, day: date) -> Path:
    """The folder of one site's readings of one UTC date."""
    return root / f"site={site}" / f"date={day.isoformat()}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetStore:
    """Parquet under ``root`` and its ledger; blocking: call from one worker thread."""

    def __init__(self, root: Path, writer: str) -> None:
        self.root = root
        self.writer = "".join(c if c.isalnum() or c in "-_" else "_" for c in writer)[:64] or "historian"
        self._db: sqlite3.Connection | None = None
        self._renamed: list[str] = []  # pending rows to forget at the next write
        self._files = itertools.count()
        self._deadletters = itertools.count()

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> ParquetStore:
        try:
            (self.root / "_historian").mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.root / "_historian" / "ledger.sqlite", isolation_level=None, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(LEDGER_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the historian's root {self.root}: {exc}") from exc
        self._db = db
        self.recover()
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def recover(self) -> tuple[int, int]:
        """After a crash: files the ledger committed are renamed into place, the others deleted →
        (renamed, deleted)."""
        db = self._need()
        renamed = deleted = 0
        db.execute("BEGIN IMMEDIATE")  # no writer is between its temporary files and its commit now
        try:
            pending = {name for (name,) in db.execute("SELECT name FROM pending")}
            for name in pending:
                final = self.root / name
                tmp = final.with_name(f".{final.name}.tmp")
                if tmp.exists():
                    tmp.rename(final)
                    _fsync_dir(final.parent)
                    renamed += 1
            db.execute("DELETE FROM pending")
            for tmp in self.root.glob("site=*/date=*/.part-*.parquet.tmp"):
                tmp.unlink(missing_ok=True)
                deleted += 1
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        if renamed or deleted:
            log.warning(
                "historian %s: recovered from a crash: %d committed files renamed into place, %d "
                "unfinished ones deleted (their batches come again)",
                self.root,
                renamed,
                deleted,
            )
        return renamed, deleted

    def _need(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # ----------------------------------------------------------------- writing
    def write(self, batches: list[Batch]) -> Written:
        """Write what the ledger does not hold yet, durably; see the module's docstring."""
        db = self._need()
        out = Written()
        db.execute("BEGIN IMMEDIATE")
        tmps: list[tuple[Path, Path]] = []
        try:
            if self._renamed:
                db.executemany("DELETE FROM pending WHERE name = ?", ((n,) for n in self._renamed))
            seen: set[tuple[str, str, int]] = set()
            for b in batches:
                key = (b.site, b.stream, b.seq)
                held = db.execute(
                    "SELECT 1 FROM batches WHERE site = ? AND stream = ? AND seq = ?", key
                ).fetchone()
                if held is not None or key in seen:
                    out.duplicates.append(b)
                else:
                    seen.add(key)
                    out.new.append(b)
            by_site: dict[str, list[Batch]] = {}
            for b in out.new:
                by_site.setdefault(b.site, []).append(b)
            for site, mine in by_site.items():
                tmps.extend(self._write_site(site, mine))
            now = time.time()
            db.executemany(
                "INSERT INTO batches (site, stream, seq, rows, written) VALUES (?, ?, ?, ?, ?)",
                ((b.site, b.stream, b.seq, b.readings.height, now) for b in out.new),
            )
            names = [str(final.relative_to(self.root)) for _, final in tmps]
            db.executemany("INSERT INTO pending (name) VALUES (?)", ((n,) for n in names))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for tmp, _ in tmps:
                tmp.unlink(missing_ok=True)
            raise
        self._renamed = names
        folders = set()
        for tmp, final in tmps:
            try:
                tmp.rename(final)
            except FileNotFoundError:  # another historian's recovery renamed it (it was committed)
                if not final.exists():
                    raise
            folders.add(final.parent)
        for folder in folders:
            _fsync_dir(folder)
        out.rows = sum(b.readings.height for b in out.new)
        out.files = [final for _, final in tmps]
        return out

    def _write_site(self, site: str, batches: list[Batch]) -> list[tuple[Path, Path]]:
        """One file per date of the site's new batches, written to a temporary name and fsynced."""
        df = pl.concat(
            [
                b.readings.with_columns(seq=pl.lit(b.seq, pl.Int64), stream=pl.lit(b.stream, pl.String))
                for b in batches
            ]
        )
        df = df.with_columns(date=pl.col("ts").dt.date())
        out = []
        for (day,), part in df.partition_by("date", as_dict=True, include_key=False).items():
            assert isinstance(day, date)
            folder = partition(self.root, site, day)
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            if created:
                _fsync_dir(folder.parent)
                _fsync_dir(folder.parent.parent)
            name = f"part-{time.time_ns()}-{self.writer}-{next(self._files)}.parquet"
            final = folder / name
            tmp = folder / f".{name}.tmp"
            with tmp.open("wb") as f:
                part.select(COLUMNS).sort("asset", "signal", "ts").write_parquet(
                    f, compression="zstd", statistics=True
                )
                f.flush()
                os.fsync(f.fileno())
            out.append((tmp, final))
        return out

    # ----------------------------------------------------------------- the rest
    def deadletter(self, topic: str, payload: bytes, reason: str) -> Path:
        """Keep a rejected message and its reason under ``_deadletter/`` (fsynced) → the reason's file."""
        folder = self.root / "_deadletter"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.time_ns()}-{self.writer}-{next(self._deadletters)}"
        data = folder / f"{stem}.bin"
        note = folder / f"{stem}.json"
        for path, content in (
            (data, payload),
            (note, json.dumps({"topic": topic, "reason": reason, "bytes": len(payload), "ts": time.time()})),
        ):
            with path.open("wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode())
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(folder)
        return note

    def missing(self, site: str, stream: str) -> int:
        """Sequence numbers below the highest one written that the ledger lacks (gaps, so far)."""
        row = (
            self._need()
            .execute("SELECT COUNT(*), MAX(seq) FROM batches WHERE site = ? AND stream = ?", (site, stream))
            .fetchone()
        )
        count, top = int(row[0]), row[1]
        return 0 if top is None else int(top) + 1 - count

    def rows(self, site: str | None = None) -> int:
        """Readings the ledger says were written (of one site, or all)."""
        db = self._need()
        if site is None:
            row = db.execute("SELECT COALESCE(SUM(rows), 0) FROM batches").fetchone()
        else:
            row = db.execute("SELECT COALESCE(SUM(rows), 0) FROM batches WHERE site = ?", (site,)).fetchone()
        return int(row[0])
