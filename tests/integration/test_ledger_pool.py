"""Solver workers sharing one job ledger: a job delivered to two workers is solved once and both
deliveries are answered with the same result; a job whose worker died after claiming it is taken over
after its deadline plus the grace (or sooner, by its heartbeat: test_resend.py); every worker reports
the pool's usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.hybrid import backends
from qxedge.hybrid.ledger import JobLedger, LedgerConfig, open_ledger
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import SolverService
from qxedge.testing import Watcher, random_bqm, wait_until
from qxedge.testing.solver_doubles import patient
from tests.integration.test_offload import datacenter, envelope, wait_for, workers

pytestmark = pytest.mark.integration

PLAIN = "qx/v1/+/jobs"  # every worker receives every job: only the ledger keeps them from solving twice


async def test_two_workers_receiving_every_job_solve_each_once(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], pg_ledger: LedgerConfig
) -> None:
    watcher = watch("qx/v1/gumi/results/+")  # not the workers' start-up probes
    ledger = pg_ledger.model_copy(update={"usage_refresh_s": 0.05})
    jobs = [envelope("gumi", random_bqm(10, 0.5, seed=i), f"job-{i}") for i in range(6)]
    async with workers(broker.url, 2, subscription=PLAIN, ledger=ledger) as services:
        for payload in jobs:
            await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        assert await wait_for(watcher, lambda ms: len(ms) >= 2 * len(jobs))

        def pool_sees_all() -> bool:
            return all(sum(u.statuses.get("ok", 0) for u in s.stats().pool) == len(jobs) for s in services)

        assert await wait_until(pool_sees_all)  # each worker reports the pool's figures
    solved = sum(s.stats().results["ok"] for s in services)
    assert solved == len(jobs), f"solved {solved} times for {len(jobs)} jobs"
    assert sum(s.stats().duplicates for s in services) == len(jobs)
    by_job: dict[str, list[bytes]] = {}
    for m in watcher.messages:
        by_job.setdefault(json.loads(m.payload)["job_id"], []).append(m.payload)
    assert len(by_job) == len(jobs)
    for job_id, answers in by_job.items():
        assert len(answers) == 2 and answers[0] == answers[1], job_id  # the recorded result, as sent
        assert json.loads(answers[0])["status"] == "ok"
    async with open_ledger(ledger, create=False) as reader:
        rows = await reader.jobs()
    assert sorted(r.job_id for r in rows) == sorted(f"job-{i}" for i in range(len(jobs)))
    assert all(r.status == "ok" and r.takeovers == 0 for r in rows)


async def test_a_duplicate_arriving_while_another_worker_solves_waits_for_its_record(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], pg_ledger: LedgerConfig
) -> None:
    """The job takes its whole deadline (the patient solver): the second worker's delivery finds the
    claim pending and is answered when the first worker's result lands, with that result."""
    backends.register("patient", patient)
    watcher = watch("qx/v1/gumi/results/+")  # not the workers' start-up probes
    try:
        async with workers(
            broker.url, 2, subscription=PLAIN, ledger=pg_ledger, solvers=SolversConfig(workers=0)
        ) as services:
            payload = envelope("gumi", random_bqm(8, 0.5, seed=3), "slow", solver="patient", deadline_ms=1500)
            await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
            assert await wait_for(watcher, lambda ms: len(ms) >= 2)
    finally:
        backends.unregister("patient")
    first, second = (m.payload for m in watcher.messages)
    assert first == second and json.loads(first)["status"] == "ok"
    assert sorted(s.stats().results["ok"] for s in services) == [0, 1]
    assert sorted(s.stats().duplicates for s in services) == [0, 1]


async def test_a_job_whose_worker_died_after_claiming_it_is_taken_over(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], pg_ledger: LedgerConfig
) -> None:
    """Worker A claims a job and is killed while solving it (its task cancelled: no record). The
    broker redelivers the job to worker B: B finds the claim pending, takes it over once the job's
    deadline plus ``claim_grace_s`` has passed, and answers it (``late``: its deadline is gone). (A's
    silent heartbeat would let B take over sooner: ``holder_timeout_s`` is long here, so that the
    expiry is what is tested; tests/integration/test_resend.py tests the heartbeat.)"""
    backends.register("patient", patient)
    watcher = watch("qx/v1/gumi/results/+")  # not the workers' start-up probes
    ledger = pg_ledger.model_copy(update={"claim_grace_s": 0.5, "holder_timeout_s": 600})
    payload = envelope("gumi", random_bqm(8, 0.5, seed=4), "orphan", solver="patient", deadline_ms=1000)
    try:
        a = SolverService(
            datacenter(broker.url, worker_id="a", ledger=ledger, solvers=SolversConfig(workers=0))
        )
        run_a = asyncio.create_task(a.run(asyncio.Event()), name="worker-a")
        await asyncio.wait_for(a.ready.wait(), 30)
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        async with open_ledger(ledger, create=False) as reader:
            assert await wait_until(lambda: _claimed_by(reader, "a"))
            assert a.queue_depth == 1
            run_a.cancel()  # killed while solving: the claim stays, unanswered
            with pytest.raises(asyncio.CancelledError):
                await run_a
            b = SolverService(datacenter(broker.url, worker_id="b", ledger=ledger))
            stop_b = asyncio.Event()
            run_b = asyncio.create_task(b.run(stop_b), name="worker-b")
            await asyncio.wait_for(b.ready.wait(), 30)
            await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)  # redelivered
            assert await wait_for(watcher, lambda ms: len(ms) >= 1)
            assert await wait_until(_recorded(reader))
            stop_b.set()
            await run_b
            (row,) = await reader.jobs()
    finally:
        backends.unregister("patient")
    (answer,) = (json.loads(m.payload) for m in watcher.messages)
    assert answer["job_id"] == "orphan" and answer["worker"] == "b" and answer["status"] == "late"
    assert b.stats().took_over == 1 and b.stats().duplicates == 1
    assert (row.worker, row.status, row.takeovers) == ("b", "late", 1)
    assert row.answered_at is not None and row.answered_at >= row.deadline_at + 0.5


async def _claimed_by(reader: JobLedger, worker: str) -> bool:
    claim = await reader.lookup("gumi", "orphan")
    return claim is not None and claim.state == "pending" and claim.worker == worker


def _recorded(reader: JobLedger) -> Callable[[], Awaitable[bool]]:
    async def recorded() -> bool:
        claim = await reader.lookup("gumi", "orphan")
        return claim is not None and claim.state == "recorded"

    return recorded
