"""A worker that dies holding a job (issue 23): the agent sends the job again, the job ledger knows the
holder stopped heartbeating, and another worker takes the job over in time; a live worker that is
merely slow keeps its job.

On mosquitto's shared subscription a job delivered to a worker that is then killed is never delivered
to another member: without the re-send and the heartbeat it is lost (the agent falls back locally).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import dimod
import numpy as np
import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid import backends
from qxedge.hybrid.backends import Backend, Deadline
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.ledger import JobLedger, JobRow, LedgerConfig, open_ledger
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.service import SolverService
from qxedge.hybrid.solvers import finish
from qxedge.hybrid.wire import Candidate
from qxedge.testing import Watcher, random_bqm, wait_until
from qxedge.testing.solver_doubles import patient
from tests.integration.test_offload import datacenter, envelope, wait_for

pytestmark = pytest.mark.integration

PLAIN = "qx/v1/+/jobs"  # every worker receives every job (the first send): only the ledger decides

_first_call = threading.Lock()  # taken by the first solve of a test: that one blocks


def _first_blocks(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    """The first call waits out its deadline (the worker holding it is killed meanwhile); any later
    call, the take-over, answers at once."""
    started = time.monotonic()
    if _first_call.acquire(blocking=False):
        while deadline.left() > 0:
            time.sleep(min(0.01, max(0.0, deadline.left())))
    return finish(bqm, "first_blocks", np.zeros(bqm.num_variables), started)


def first_blocks(config: SolversConfig) -> Backend:
    return Backend("first_blocks", _first_blocks)


@pytest.fixture
def first_blocks_solver() -> Iterator[None]:
    if _first_call.locked():
        _first_call.release()
    backends.register("first_blocks", first_blocks)
    try:
        yield None
    finally:
        backends.unregister("first_blocks")


class Pool:
    """Named workers, each run in a task of its own, so that one can be killed (its task cancelled:
    its claim stays unanswered, its heartbeat stops, its broker connection goes)."""

    def __init__(self, url: str, ledger: LedgerConfig, subscription: str | None = None) -> None:
        self.url, self.ledger, self.subscription = url, ledger, subscription
        self.services: dict[str, SolverService] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stop = asyncio.Event()

    async def start(self, *names: str) -> None:
        extra = {} if self.subscription is None else {"subscription": self.subscription}
        for name in names:
            service = self.services[name] = SolverService(
                datacenter(
                    self.url, worker_id=name, ledger=self.ledger, solvers=SolversConfig(workers=0), **extra
                )
            )
            self.tasks[name] = asyncio.create_task(service.run(self.stop), name=f"worker-{name}")
        for name in names:
            await asyncio.wait_for(self.services[name].ready.wait(), 30)

    async def kill(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks.values():
            await task


@pytest.fixture
async def reader(pg_ledger: LedgerConfig) -> AsyncIterator[JobLedger]:
    async with open_ledger(pg_ledger) as opened:
        yield opened


async def _recorded(reader: JobLedger) -> JobRow:
    """The one job's row once its answer is recorded (published first, recorded after)."""
    rows: list[JobRow] = []

    async def recorded() -> bool:
        rows[:] = await reader.jobs()
        return len(rows) == 1 and rows[0].status is not None

    assert await wait_until(recorded)
    return rows[0]


async def _holder(reader: JobLedger) -> JobRow:
    """The one job's row once a worker has claimed it."""
    rows: list[JobRow] = []

    async def claimed() -> bool:
        rows[:] = await reader.jobs()
        return len(rows) == 1

    assert await wait_until(claimed)
    return rows[0]


async def test_a_job_whose_worker_is_killed_is_answered_by_another_after_the_agent_resends_it(
    broker: EmbeddedBroker,
    pg_ledger: LedgerConfig,
    reader: JobLedger,
    first_blocks_solver: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers on mosquitto's ``$share``: the one that takes the job blocks on it and is killed.
    mosquitto does not deliver the job to the other; the agent's re-send (at 0.4 of its wait) reaches
    it, the ledger says the holder stopped heartbeating, and the other worker takes the job over and
    answers it in time. The job is solved once."""
    caplog.set_level(logging.INFO)
    ledger = pg_ledger.model_copy(update={"heartbeat_s": 0.05, "holder_timeout_s": 0.5})
    pool = Pool(broker.url, ledger)
    bqm = random_bqm(8, 0.5, seed=5)
    config = OffloadConfig(deadline_ms=6000, fallback_ms=500, solver="first_blocks")
    try:
        await pool.start("a", "b")
        async with (
            MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
            OffloadClient(mqtt, "gumi", config) as offload,
        ):
            solving = asyncio.create_task(offload.solve(bqm), name="offload")
            held = await _holder(reader)
            other = "b" if held.worker == "a" else "a"
            await pool.kill(held.worker)  # killed while it solves: no answer, no record, no heartbeat
            decision = await solving
        row = await _recorded(reader)
    finally:
        await pool.close()
    assert decision.source == "datacenter", decision.reason
    assert decision.result is not None and decision.result.worker == other
    assert offload.stats["resends"] == 1 and offload.stats["fallbacks"] == 0
    survivor = pool.services[other].stats()
    assert survivor.took_over == 1 and survivor.results["ok"] == 1
    assert (row.worker, row.status, row.takeovers) == (other, "ok", 1)
    assert f"took over the claim of worker {held.worker} (its worker stopped heartbeating" in caplog.text


async def test_without_resends_the_killed_workers_job_falls_back(
    broker: EmbeddedBroker, pg_ledger: LedgerConfig, reader: JobLedger, first_blocks_solver: None
) -> None:
    """The same kill with ``max_resends: 0``: the job is lost on ``$share`` and the agent falls back
    locally (what the re-send is for)."""
    pool = Pool(broker.url, pg_ledger.model_copy(update={"heartbeat_s": 0.05, "holder_timeout_s": 0.5}))
    config = OffloadConfig(deadline_ms=2500, fallback_ms=500, solver="first_blocks", max_resends=0)
    try:
        await pool.start("a", "b")
        async with (
            MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
            OffloadClient(mqtt, "gumi", config) as offload,
        ):
            solving = asyncio.create_task(offload.solve(random_bqm(8, 0.5, seed=5)), name="offload")
            await pool.kill((await _holder(reader)).worker)
            decision = await solving
    finally:
        await pool.close()
    assert decision.source == "fallback"
    assert offload.stats["resends"] == 0 and offload.stats["fallbacks"] == 1


async def test_a_waiting_duplicate_takes_over_once_the_holder_stops_heartbeating(
    broker: EmbeddedBroker,
    watch: Callable[..., Watcher],
    pg_ledger: LedgerConfig,
    reader: JobLedger,
    first_blocks_solver: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both workers receive the job: one claims it, the other finds the claim pending with a live
    holder and waits for its record. The holder is killed: once it has been silent for
    ``holder_timeout_s`` the waiting worker takes the job over and answers it by its deadline, not
    after the deadline plus ``claim_grace_s``."""
    caplog.set_level(logging.INFO)
    watcher = watch("qx/v1/gumi/results/+")  # not the workers' start-up probes
    ledger = pg_ledger.model_copy(update={"heartbeat_s": 0.05, "holder_timeout_s": 0.5})
    pool = Pool(broker.url, ledger, PLAIN)
    payload = envelope("gumi", random_bqm(8, 0.5, seed=6), "held", solver="first_blocks", deadline_ms=5000)
    try:
        await pool.start("a", "b")
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        held = await _holder(reader)
        other = "b" if held.worker == "a" else "a"
        assert await wait_until(lambda: pool.services[other].stats().duplicates == 1)  # it waits
        await pool.kill(held.worker)
        assert await wait_for(watcher, lambda ms: len(ms) >= 1)
        row = await _recorded(reader)
    finally:
        await pool.close()
    (answer,) = (json.loads(m.payload) for m in watcher.messages)
    assert answer["worker"] == other and answer["status"] == "ok"
    assert (row.worker, row.status, row.takeovers) == (other, "ok", 1)
    assert row.answered_at is not None and row.answered_at <= row.deadline_at  # not after the grace
    assert f"took over the claim of worker {held.worker} (its worker stopped heartbeating" in caplog.text


async def test_a_live_worker_solving_longer_than_the_holder_timeout_keeps_its_job(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], pg_ledger: LedgerConfig, reader: JobLedger
) -> None:
    """The holder solves for its whole deadline (3 s, ten times ``holder_timeout_s``) in its solver
    thread; its heartbeat goes on from a task of its own, so the waiting worker never takes it over: it
    answers with the holder's recorded result."""
    backends.register("patient", patient)
    watcher = watch("qx/v1/gumi/results/+")
    ledger = pg_ledger.model_copy(update={"heartbeat_s": 0.05, "holder_timeout_s": 0.3})
    pool = Pool(broker.url, ledger, PLAIN)
    payload = envelope("gumi", random_bqm(8, 0.5, seed=7), "slow", solver="patient", deadline_ms=3000)
    try:
        await pool.start("a", "b")
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        assert await wait_for(watcher, lambda ms: len(ms) >= 2)
        row = await _recorded(reader)
    finally:
        await pool.close()
        backends.unregister("patient")
    first, second = (m.payload for m in watcher.messages)
    assert first == second and json.loads(first)["status"] == "ok"
    assert sum(s.stats().took_over for s in pool.services.values()) == 0
    assert sorted(s.stats().results["ok"] for s in pool.services.values()) == [0, 1]
    assert row.takeovers == 0 and row.answered_at is not None
    assert row.answered_at - row.claimed_at > 5 * ledger.holder_timeout_s  # it was slow


async def test_an_agent_whose_jobs_all_go_unanswered_stops_re_sending_them(broker: EmbeddedBroker) -> None:
    """No worker at all (a slow data center looks the same): the first jobs are sent again, then the
    re-send budget is spent and the next ones are not (no storm of re-sends on a struggling data
    center); each still falls back by its deadline."""
    config = OffloadConfig(deadline_ms=300, fallback_ms=100)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
    ):
        decisions = [await offload.solve(random_bqm(6, 0.5, seed=i)) for i in range(8)]
    assert all(d.source == "fallback" for d in decisions)
    assert offload.stats["resends"] == 4 and offload.stats["resends_held"] == 4
