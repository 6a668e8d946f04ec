"""The outbox's journal (``connectors/outbox/_journal.py``) on a real SQLite file, without a broker:
items on disk at the next flush, gone in the transaction that commits the records made of them, back
after a restart; and the history recorder's readings through it."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from qxedge.agent.history import HistoryConfig, HistoryRecorder, decode_journal, encode_journal
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.connectors.outbox import Outbox, OutboxConfig
from qxedge.connectors.readings import ReadingBatch
from qxedge.testing import wait_until


def outbox(path: Path) -> Outbox:
    return Outbox(path, OutboxConfig(), MqttClient(BrokerConfig(url="mqtt://h:1")))  # never connects


def on_disk(path: Path) -> tuple[list[tuple[str, int]], int]:
    """(the journal's (stream, upto) rows, the outbox's record count)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT stream, upto FROM journal ORDER BY upto").fetchall()
        records = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()
    return rows, int(records)


def readings(n: int, start: float = 0.0) -> ReadingBatch:
    return ReadingBatch(
        [f"l1/pump{i % 3}" for i in range(n)],
        ["temp"] * n,
        [1.7e9 + start + i / 10 for i in range(n)],
        [math.pi * i for i in range(n)],
    )


def test_journal_rows_round_trip_exactly() -> None:
    batches = [readings(3), readings(0), ReadingBatch(["a/é"], ["s"], [1.5], [-0.0])]
    back = decode_journal(encode_journal(batches))
    assert back.assets == [a for b in batches for a in b.assets]
    assert back.ts == [t for b in batches for t in b.ts] and back.values == [
        v for b in batches for v in b.values
    ]
    assert len(decode_journal(encode_journal([]))) == 0


async def test_items_are_journaled_then_go_with_the_record_made_of_them(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    async with outbox(path) as box:
        journal = box.journal("history", encode_journal)
        journal.add(readings(4))
        journal.add(readings(2))
        await box._flush()
        assert on_disk(path) == ([("history", 2)], 0)  # one row for both items
        mark = journal.mark()
        journal.add(readings(5))  # after the mark: stays journaled
        box.put("history", "qx/v1/t/history", lambda seq: b"batch %d" % seq)
        journal.done(mark)
        await box._flush()
        assert on_disk(path) == ([("history", 3)], 1)  # the record in, its items' row gone: one transaction
        assert journal.items_written == 3 and journal.pending == 0
        mark = journal.mark()
        journal.add(readings(1))
        journal.done(mark)  # refused, say: not written, never will be
        await box._flush()
        assert on_disk(path) == ([("history", 4)], 1)


async def test_a_restart_gives_back_what_no_record_took(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    config = HistoryConfig(every_s=3600)
    async with outbox(path) as box:
        recorder = HistoryRecorder("t", config, box)
        recorder.add(readings(4))
        recorder.add(readings(3, start=1))
        await box._flush()  # on disk; then a kill -9 (the recorder never cuts)
    async with outbox(path) as box:
        recorder = HistoryRecorder("t", config, box)
        assert recorder.held == 7 and recorder.stats["restored"] == 7
        recorder.add(readings(2, start=2))
        assert await recorder.cut() == 1  # the restored readings and the new ones, in one batch
        assert recorder.stats["readings"] == 9
        await box._flush()
        assert on_disk(path) == ([], 1)
    async with outbox(path) as box:
        assert HistoryRecorder("t", config, box).held == 0


async def test_an_item_its_encoder_refuses_costs_its_journaling_not_the_flushs_records(
    tmp_path: Path,
) -> None:
    """The encoder is the caller's code, run in the flush: an exception from it was outside the SQLite
    errors the flush handles, and lost the flush's records and stopped the flushing for good."""
    path = tmp_path / "o.sqlite"

    def encode(items: list[ReadingBatch]) -> bytes:
        if any("bad" in a for b in items for a in b.assets):
            raise ValueError("cannot encode")
        return encode_journal(items)

    async with outbox(path) as box:
        journal = box.journal("history", encode)
        journal.add(ReadingBatch(["bad"], ["s"], [1.0], [2.0]))
        box.put("telemetry", "qx/v1/t/telemetry", lambda seq: b"%d" % seq)
        await box._flush()
        assert on_disk(path) == ([], 1)  # the record is on disk; the group that failed is not journaled
        journal.add(readings(2))
        box.put("telemetry", "qx/v1/t/telemetry", lambda seq: b"%d" % seq)
        await box._flush()
        assert on_disk(path) == ([("history", 2)], 2)  # and the next flush goes on


async def test_when_durable_is_called_once_the_journal_row_is_committed(tmp_path: Path) -> None:
    """The agent acknowledges plant readings to their broker with it: the journal row holding them is on
    disk when the callback runs, and the flush starts at once (no flush_ms wait: the broker's in-flight
    window waits for it)."""
    path = tmp_path / "o.sqlite"
    config = OutboxConfig(flush_ms=10_000)  # longer than the wait below: only someone waiting flushes
    async with Outbox(path, config, MqttClient(BrokerConfig(url="mqtt://h:1"))) as box:
        journal = box.journal("history", encode_journal)
        seen: list[tuple[list[tuple[str, int]], int]] = []
        journal.add(readings(3))
        box.when_durable(lambda: seen.append(on_disk(path)))
        assert not seen  # not on disk yet
        assert await wait_until(lambda: bool(seen), 5)
        assert seen == [([("history", 1)], 0)]
        box.when_durable(lambda: seen.append(on_disk(path)))  # nothing new: at the next flush, at once
        assert await wait_until(lambda: len(seen) == 2, 5)


async def test_when_durable_does_not_hold_readings_up_on_a_failed_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that refuses writes must not stop the plant's readings (the control loop needs them): the
    callbacks run, counted as undurable; the outbox's alarm says why."""
    path = tmp_path / "o.sqlite"
    async with Outbox(path, OutboxConfig(), MqttClient(BrokerConfig(url="mqtt://h:1"))) as box:
        journal = box.journal("history", encode_journal)

        def refuse(*_args: object) -> tuple[int, int]:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(box, "_insert", refuse)
        called: list[int] = []
        journal.add(readings(2))
        box.when_durable(lambda: called.append(1))
        assert await wait_until(lambda: called == [1], 10)
        assert box.error is not None and box.stats["undurable"] == 1
        box.when_durable(lambda: called.append(2))  # while the disk refuses writes: at once
        assert called == [1, 2] and box.stats["undurable"] == 2


async def test_durable_keys_go_to_disk_with_what_they_wait_for(tmp_path: Path) -> None:
    """The keys of the callbacks a flush runs are committed in its transaction, replacing the last
    flush's: after a crash they say which acknowledgements may not have gone out."""
    path = tmp_path / "o.sqlite"
    async with outbox(path) as box:
        journal = box.journal("history", encode_journal)
        assert box.durable_keys == []
        done: list[int] = []
        journal.add(readings(2))
        box.when_durable(lambda: done.append(1), [(7, 1234), (8, 99)])
        await box._flush()
        journal.add(readings(1))
        box.when_durable(lambda: done.append(2), [(9, 5)])
        await box._flush()
        assert done == [1, 2]
    async with outbox(path) as box:
        assert box.durable_keys == [(9, 5)]
