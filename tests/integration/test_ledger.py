"""The job ledger itself, on SQLite and on a PostgreSQL cluster of our own: claims on the unique key,
records, take-over of expired claims and of claims whose worker stopped heartbeating, usage and
retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qxedge.hybrid.ledger import JobLedger, LedgerConfig, LedgerError, Outcome, open_ledger
from qxedge.hybrid.ledger.protocol import DAY_S
from qxedge.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_config(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerConfig:
    if request.param == "sqlite":
        return LedgerConfig(kind="sqlite", path=tmp_path / "ledger.sqlite3", claim_grace_s=5)
    config: LedgerConfig = request.getfixturevalue("pg_ledger")
    return config.model_copy(update={"claim_grace_s": 5})


@pytest.fixture
async def ledger(ledger_config: LedgerConfig) -> AsyncIterator[JobLedger]:
    async with open_ledger(ledger_config) as opened:
        yield opened


def answered(site: str, job_id: str | None, worker: str, at: float, **changes: object) -> Outcome:
    fields: dict[str, object] = {
        "status": "ok",
        "solver": "tabu",
        "solver_seconds": 0.5,
        "deadline_at": at + 1,
        "result": f'{{"job_id": "{job_id}"}}'.encode(),
    }
    fields.update(changes)
    return Outcome(site, job_id, worker, answered_at=at, **fields)  # type: ignore[arg-type]


async def test_the_first_claim_solves_and_a_duplicate_gets_the_record(ledger: JobLedger) -> None:
    now = time.time()
    first = await ledger.claim("gumi", "j1", "w0", now + 2, now)
    assert first.state == "claimed" and first.took_over is None
    pending = await ledger.claim("gumi", "j1", "w1", now + 2, now)
    assert (pending.state, pending.worker, pending.expires_at) == ("pending", "w0", now + 2 + 5)
    assert await ledger.record(answered("gumi", "j1", "w0", now + 0.1))
    again = await ledger.claim("gumi", "j1", "w1", now + 2, now + 0.2)
    assert again.state == "recorded" and again.result == b'{"job_id": "j1"}'
    looked = await ledger.lookup("gumi", "j1")
    assert looked is not None and looked.result == again.result
    assert await ledger.lookup("gumi", "other") is None
    assert await ledger.lookup("ulsan", "j1") is None  # the key is (site, job_id)


async def test_concurrent_claims_on_one_job_claim_it_once(ledger_config: LedgerConfig) -> None:
    """Eight workers, each with its own connection (or, for SQLite, its own handle on the file)."""
    now = time.time()
    async with several(ledger_config, 8) as ledgers:
        claims = await asyncio.gather(
            *(lg.claim("gumi", "race", f"w{i}", now + 5, now) for i, lg in enumerate(ledgers))
        )
    assert sorted(c.state for c in claims) == ["claimed"] + ["pending"] * 7
    winner = next(c.worker for c in claims if c.state == "claimed")
    assert {c.worker for c in claims} == {winner}


async def test_an_expired_claim_is_taken_over_once(ledger: JobLedger) -> None:
    now = time.time()
    assert (await ledger.claim("gumi", "j", "dead", now + 1, now)).state == "claimed"
    before = await ledger.claim("gumi", "j", "w1", now + 1, now + 5.9)  # deadline + grace not yet gone
    assert before.state == "pending" and before.worker == "dead"
    taken = await ledger.claim("gumi", "j", "w1", now + 1, now + 6.1)
    assert taken.state == "claimed" and taken.took_over == "dead"
    # the new claim holds for its own grace: a third worker does not take it at once
    third = await ledger.claim("gumi", "j", "w2", now + 1, now + 6.2)
    assert third.state == "pending" and third.worker == "w1"
    assert await ledger.record(answered("gumi", "j", "w1", now + 6.3, status="late", solver=None))
    # the dead worker coming back late records nothing, and counts nothing twice
    assert not await ledger.record(answered("gumi", "j", "dead", now + 6.4))
    (row,) = await ledger.jobs()
    assert (row.worker, row.status, row.takeovers) == ("w1", "late", 1)
    (usage,) = await ledger.usage()
    assert usage.jobs == 1 and usage.statuses == {"late": 1}


async def test_a_claim_whose_holder_is_gone_is_taken_over_at_once(ledger: JobLedger) -> None:
    """A work queue (NATS, RabbitMQ) delivers a job again when the worker holding it died: the claim is
    taken over then, in time to answer it, not once the deadline and the grace have passed."""
    now = time.time()
    assert (await ledger.claim("gumi", "j", "dead", now + 8, now)).state == "claimed"
    taken = await ledger.claim("gumi", "j", "w1", now + 8, now + 0.5, holder_gone=True)
    assert taken.state == "claimed" and taken.took_over == "dead"
    assert await ledger.record(answered("gumi", "j", "w1", now + 1.0))
    again = await ledger.claim("gumi", "j", "w2", now + 8, now + 1.5, holder_gone=True)
    assert again.state == "recorded" and again.worker == "w1"  # an answered job is never taken over


async def test_a_claim_whose_worker_stopped_heartbeating_is_taken_over_at_once(ledger: JobLedger) -> None:
    """The holder wrote its heartbeat, then went silent (killed): once it has been silent for
    ``holder_timeout_s`` (1 s) its claim is taken over, long before the deadline plus the grace."""
    now = time.time()
    await ledger.heartbeat("dead", now - 60, now)
    assert (await ledger.claim("gumi", "j", "dead", now + 8, now)).state == "claimed"
    early = await ledger.claim("gumi", "j", "w1", now + 8, now + 0.9)  # silent 0.9 s: not yet
    assert (early.state, early.worker) == ("pending", "dead")
    taken = await ledger.claim("gumi", "j", "w1", now + 8, now + 1.2)
    assert taken.state == "claimed" and taken.took_over == "dead"
    assert taken.gone == "its worker stopped heartbeating 1.2 s ago"
    # w1 has written no heartbeat: a worker never seen is not presumed gone (its claim expires as before)
    third = await ledger.claim("gumi", "j", "w2", now + 8, now + 5)
    assert (third.state, third.worker) == ("pending", "w1")
    assert await ledger.record(answered("gumi", "j", "w1", now + 1.5))
    (row,) = await ledger.jobs()
    assert (row.worker, row.takeovers) == ("w1", 1)


async def test_a_live_slow_holder_keeps_its_claim(ledger: JobLedger) -> None:
    now = time.time()
    await ledger.heartbeat("slow", now - 60, now)
    assert (await ledger.claim("gumi", "j", "slow", now + 8, now)).state == "claimed"
    for beat in (0.5, 1.0, 1.5, 2.0):  # its heartbeat goes on while it solves
        await ledger.heartbeat("slow", now - 60, now + beat)
        other = await ledger.claim("gumi", "j", "w1", now + 8, now + beat + 0.4)
        assert (other.state, other.worker) == ("pending", "slow")


async def test_a_claim_of_a_worker_that_restarted_since_is_taken_over(ledger: JobLedger) -> None:
    """A worker with a fixed id restarted: its heartbeat is fresh, but its process started after it
    claimed the job, which the process that died held."""
    now = time.time()
    await ledger.heartbeat("w0", now - 60, now)
    assert (await ledger.claim("gumi", "j", "w0", now + 8, now)).state == "claimed"
    await ledger.heartbeat("w0", now + 0.5, now + 0.6)  # started again
    taken = await ledger.claim("gumi", "j", "w1", now + 8, now + 0.7)
    assert taken.state == "claimed" and taken.took_over == "w0"
    assert taken.gone is not None and "restarted" in taken.gone


async def test_lookup_says_when_the_holder_is_gone(ledger: JobLedger) -> None:
    now = time.time()
    await ledger.heartbeat("dead", now - 60, now - 5)  # silent for 5 s
    await ledger.heartbeat("alive", now - 60, now)
    await ledger.claim("gumi", "a", "dead", now + 8, now - 5)
    await ledger.claim("gumi", "b", "alive", now + 8, now)
    await ledger.claim("gumi", "c", "unknown", now + 8, now)
    dead, alive, unknown = [await ledger.lookup("gumi", j) for j in "abc"]
    assert dead is not None and dead.state == "pending" and dead.gone is not None
    assert "stopped heartbeating" in dead.gone
    assert alive is not None and alive.gone is None
    assert unknown is not None and unknown.gone is None


async def test_concurrent_claims_on_a_silent_holder_take_it_over_once(ledger_config: LedgerConfig) -> None:
    now = time.time()
    async with several(ledger_config, 6) as ledgers:
        await ledgers[0].heartbeat("dead", now - 60, now - 5)
        assert (await ledgers[0].claim("gumi", "j", "dead", now + 8, now - 5)).state == "claimed"
        claims = await asyncio.gather(
            *(lg.claim("gumi", "j", f"w{i}", now + 8, now) for i, lg in enumerate(ledgers))
        )
    taken = [c for c in claims if c.state == "claimed"]
    assert len(taken) == 1 and taken[0].took_over == "dead"
    assert {c.worker for c in claims} == {taken[0].worker}


async def test_usage_counts_statuses_solver_seconds_and_wins_by_site(ledger: JobLedger) -> None:
    now = time.time()
    for i, (site, status, solver) in enumerate(
        [
            ("a", "ok", "tabu"),
            ("a", "ok", "tabu"),
            ("a", "ok", "exact"),
            ("a", "late", None),
            ("b", "ok", "sa"),
        ]
    ):
        await ledger.claim(site, f"j{i}", "w0", now + 1, now)
        assert await ledger.record(answered(site, f"j{i}", "w0", now, status=status, solver=solver))
    assert await ledger.record(Outcome("a", None, "w0", "rejected", now))  # usage only, no job row
    usage = {u.site: u for u in await ledger.usage()}
    a = usage["a"]
    assert a.jobs == 5 and a.statuses == {"ok": 3, "late": 1, "rejected": 1}
    assert a.wins == {"tabu": 2, "exact": 1} and a.solver_seconds == pytest.approx(2.0)
    assert a.on_time == pytest.approx(3 / 5)
    assert usage["b"].wins == {"sa": 1}
    assert [u.site for u in await ledger.usage(site="b")] == ["b"]
    assert [j.job_id for j in await ledger.jobs(site="a")] == ["j0", "j1", "j2", "j3"]
    assert len(await ledger.jobs(limit=2)) == 2


async def test_retention_deletes_old_jobs_and_old_usage(
    ledger: JobLedger, ledger_config: LedgerConfig
) -> None:
    now = time.time()
    old = now - (ledger_config.retention_days + 1) * DAY_S
    ancient = now - (ledger_config.usage_retention_days + 2) * DAY_S
    for job_id, at in (("ancient", ancient), ("old", old), ("new", now)):
        await ledger.claim("gumi", job_id, "w0", at + 1, at)
        await ledger.record(answered("gumi", job_id, "w0", at))
    await ledger.claim("gumi", "stuck", "dead", old, old)  # a claim never answered, long expired
    assert len(await ledger.jobs()) == 4
    purged = await ledger.purge(now)
    assert purged.jobs == 3 and purged.usage == 1  # the ancient day's usage row
    assert [j.job_id for j in await ledger.jobs()] == ["new"]
    (daily,) = await ledger.usage(since=ancient)  # by day: what retention kept
    assert daily.jobs == 2
    (total,) = await ledger.usage()  # the totals are never purged
    assert total.jobs == 3
    again = await ledger.purge(now)
    assert (again.jobs, again.usage) == (0, 0)


async def test_a_worker_opening_a_new_sqlite_file_while_another_writes_it_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Switching a file to WAL needs it to itself, and SQLite refuses at once (no busy wait) while
    another connection writes: a second worker opening a shared new file then failed to start."""
    path = tmp_path / "ledger.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker, creating the tables
    other.execute("CREATE TABLE creating (x)")
    caplog.set_level(logging.INFO, "qxedge.hybrid.ledger")
    opening = asyncio.create_task(_open_and_close(LedgerConfig(kind="sqlite", path=path)))
    try:
        assert await wait_until(lambda: "waiting to switch it to WAL" in caplog.text or opening.done())
        assert not opening.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await opening == "wal"


async def _open_and_close(config: LedgerConfig) -> str:
    async with open_ledger(config):
        pass
    with contextlib.closing(sqlite3.connect(config.sqlite_path())) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


async def test_a_reader_opens_no_ledger_that_does_not_exist(tmp_path: Path) -> None:
    config = LedgerConfig(path=tmp_path / "none.sqlite3")
    with pytest.raises(LedgerError, match="no job ledger at"):
        async with open_ledger(config, create=False):
            pass
    assert not config.sqlite_path().exists()


async def test_a_wrong_password_is_a_ledger_error_that_names_the_ledger(
    pg_ledger: LedgerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QXEDGE_LEDGER_PASSWORD", "wrong")
    with pytest.raises(LedgerError, match="password authentication failed") as caught:
        async with open_ledger(pg_ledger):
            pass
    assert pg_ledger.where() in str(caught.value) and "wrong" not in str(caught.value)


@contextlib.asynccontextmanager
async def several(config: LedgerConfig, count: int) -> AsyncIterator[list[JobLedger]]:
    """``count`` ledgers opened on one config (a connection pool each, or a handle each on the file)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_ledger(config)) for _ in range(count)]
