"""The solver processes: warm before any job, a floor answer for every job, overruns recycled, cuts."""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Iterator

import pytest

from qxedge.hybrid import backends
from qxedge.hybrid.pool import pickled
from qxedge.hybrid.portfolio import JobCut, Portfolio, SolversConfig
from qxedge.testing import random_bqm, sample_energy, wait_until
from qxedge.testing.solver_doubles import freed, heap, patient, stubborn


@pytest.fixture
def doubles() -> Iterator[None]:
    backends.register("stubborn", stubborn)
    backends.register("patient", patient)
    backends.register("heap", heap)
    backends.register("freed", freed)
    yield
    backends.unregister("stubborn")
    backends.unregister("patient")
    backends.unregister("heap")
    backends.unregister("freed")


@pytest.fixture
def portfolio(doubles: None) -> Iterator[Portfolio]:
    portfolio = Portfolio(SolversConfig(workers=1, overrun_grace_ms=20))
    portfolio.warm_up()  # before any clock, as the worker and `qxedge solve` do
    yield portfolio
    portfolio.close()


async def test_an_overrunning_solver_is_recycled_and_the_next_job_runs(portfolio: Portfolio) -> None:
    """A solver that ignores its deadline costs its process, not the job (the floor answers in time)
    nor the next job (a fresh process takes it)."""
    assert portfolio.pool is not None
    bqm = random_bqm(30, 0.3, seed=1)
    deadline = time.time() + 0.3
    best, candidates = await portfolio.solve(bqm, "stubborn", deadline)
    assert time.time() < deadline
    assert best is not None and best.solver == "greedy" and best.sample is not None
    assert best.energy == pytest.approx(sample_energy(bqm, best.sample))
    assert [(c.solver, c.status) for c in candidates] == [("greedy", "ok"), ("stubborn", "timeout")]
    await wait_until(
        lambda: portfolio.recycled == 1 and portfolio.pool is not None and portfolio.pool.idle == 1
    )
    _, after = await portfolio.solve(bqm, "patient", time.time() + 0.3)
    assert [(c.solver, c.status, c.details.get("ran_in")) for c in after][-1] == (
        "patient",
        "ok",
        "solver process",
    )


async def test_a_solver_process_has_frozen_its_start_up_heap(portfolio: Portfolio) -> None:
    """Its modules and warm backends are out of the collector's full passes (qxedge.core.heap): a full
    pass over them took ~0.1 s, enough to take an SA answer past its deadline."""
    _, candidates = await portfolio.solve(random_bqm(10, 0.5, seed=3), "heap", time.time() + 5)
    ran = next(c for c in candidates if c.solver == "heap")
    assert ran.details["ran_in"] == "solver process"
    assert ran.details["frozen"] > 10_000


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="glibc's mallopt")
@pytest.mark.parametrize(("keep_bytes", "kept"), [(512 << 20, True), (0, False)])
async def test_a_solver_process_keeps_freed_memory_as_configured(
    doubles: None, keep_bytes: int, kept: bool
) -> None:
    """``solvers.keep_freed_bytes``: a search call's set-up then reuses its pages (qxedge.core.heap)."""
    portfolio = Portfolio(SolversConfig(workers=1, keep_freed_bytes=keep_bytes))
    portfolio.warm_up(["freed"])
    try:
        _, candidates = await portfolio.solve(random_bqm(10, 0.5, seed=3), "freed", time.time() + 30)
    finally:
        portfolio.close()
    ran = next(c for c in candidates if c.solver == "freed")
    assert (ran.details["given_back"] < 8 << 20) is kept


async def test_a_task_is_with_its_process_when_submit_returns(portfolio: Portfolio) -> None:
    """The solver starts at once, whatever holds the event loop next: a thread holding the GIL
    (dimod building a complete n = 2000 model) started tabu's process 0.12 s late when the send was
    left to the task's first step."""
    pool = portfolio.pool
    assert pool is not None
    [process] = pool.take(1)
    submitted = time.time()
    task = pool.submit(process, "heap", submitted + 30, pickled(random_bqm(10, 0.5, seed=3)))
    time.sleep(0.5)  # noqa: ASYNC251 - holds the event loop on purpose, not a wait
    candidate = await asyncio.wait_for(task, 30)
    assert candidate.status == "ok"
    assert candidate.details["began_at"] - submitted < 0.25


async def test_a_cut_ends_a_job_early_with_the_solvers_best_so_far(portfolio: Portfolio) -> None:
    cut = JobCut()
    job = asyncio.create_task(portfolio.solve(random_bqm(20, 0.5, seed=2), "patient", time.time() + 60, cut))
    await asyncio.sleep(0)
    cut.cut("the fair share")
    best, candidates = await asyncio.wait_for(job, 30)
    assert best is not None
    assert [(c.solver, c.status, c.reason) for c in candidates] == [
        ("greedy", "ok", None),
        ("patient", "timeout", "stopped: the fair share"),
    ]
    pool = portfolio.pool
    assert pool is not None
    await wait_until(lambda: pool.idle == 1)
    assert portfolio.recycled == 0  # it stopped at the cut: back within the grace


async def test_without_warm_processes_a_job_is_answered_in_process(doubles: None) -> None:
    """No process starts inside a deadline: a portfolio never warmed answers from the floor."""
    portfolio = Portfolio(SolversConfig(workers=1))
    try:
        best, candidates = await portfolio.solve(random_bqm(40, 0.2, seed=3), "auto", time.time() + 0.05)
        assert best is not None and best.solver == "greedy"
        assert {c.solver: c.status for c in candidates}["tabu"] == "skipped"
        assert portfolio.pool is not None and not portfolio.pool.started
    finally:
        portfolio.close()


@pytest.mark.parametrize("n", [1, 50, 400])
async def test_every_valid_job_gets_a_real_answer_at_50_ms(portfolio: Portfolio, n: int) -> None:
    bqm = random_bqm(n, 0.1, seed=n)
    best, _ = await portfolio.solve(bqm, "auto", time.time() + 0.05)
    assert best is not None and best.sample is not None and len(best.sample) == n
    assert best.energy == pytest.approx(sample_energy(bqm, best.sample))


async def test_a_backend_that_cannot_answer_in_time_is_not_started(portfolio: Portfolio) -> None:
    """SA's set-up on a complete n = 600 model does not fit in 60 ms: the model is not shipped to a
    solver process (it would only compete with the floor for the cores); the floor answers."""
    pool = portfolio.pool
    assert pool is not None
    bqm = random_bqm(600, 1.0, seed=4)
    deadline = time.time() + 0.06
    best, candidates = await portfolio.solve(bqm, "sa", deadline)
    assert best is not None and best.solver == "greedy"
    sa = next(c for c in candidates if c.solver == "sa")
    assert sa.status == "timeout" and sa.reason is not None and sa.reason.startswith("not started")
    assert pool.idle == 1  # never taken


async def test_closing_the_pool_while_a_solver_runs_is_quiet(
    doubles: None, caplog: pytest.LogCaptureFixture
) -> None:
    """``qxedge solve`` closes its pool while a stopped solver may still be running: its task ends
    cancelled when the loop shuts down, not with OSError('handle is closed'), and nothing is recycled."""
    portfolio = Portfolio(SolversConfig(workers=1, overrun_grace_ms=60_000))
    portfolio.warm_up()
    await portfolio.solve(random_bqm(30, 0.3, seed=1), "stubborn", time.time() + 0.2)
    running = [t for t in asyncio.all_tasks() if t.get_name().startswith("solver-stubborn")]
    assert running and not any(t.done() for t in running)
    portfolio.close()
    for task in running:  # what asyncio.run does to the tasks left at its end
        task.cancel()
    ended = await asyncio.gather(*running, return_exceptions=True)
    assert all(isinstance(e, asyncio.CancelledError) for e in ended), ended
    assert "recycling" not in caplog.text
