"""The solver portfolio: one solver, or ``auto`` = every eligible solver in parallel, best by the deadline.

Solvers run in a process pool (``workers`` processes forked from a forkserver that preloaded dimod and
the dwave-samplers; :meth:`Portfolio.warm_up` also imports PennyLane, or compiles the ``qxedge.gpu``
kernels, in every process, so a job never pays an import or a compilation). ``auto`` submits the eligible
solvers in the order of ``auto`` and collects candidates until the deadline minus ``margin_ms``
(kept to send the answer); a proven optimum (``exact``) ends the wait at once. Up to
``exact_first_max`` variables, ``exact`` runs alone first and the others only if it cannot prove the
optimum: a solver already started in a process cannot be called back, so starting them for nothing
would cost the next jobs their time. Solvers still running
at the deadline are listed as ``timeout``; each solver also watches the deadline itself, so none
holds a process for long after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated

import dimod
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import Deadline, backend_names, build, known_backend
from qxedge.hybrid.qaoa import QaoaConfig
from qxedge.hybrid.solvers import ExactConfig, SaConfig, TabuConfig
from qxedge.hybrid.wire import Candidate

log = logging.getLogger(__name__)
BackendName = Annotated[str, AfterValidator(known_backend)]  # a registered backend (hybrid.backends)


class SolversConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exact: ExactConfig = Field(default_factory=ExactConfig)
    sa: SaConfig = Field(default_factory=SaConfig)
    tabu: TabuConfig = Field(default_factory=TabuConfig)
    qaoa: QaoaConfig = Field(default_factory=QaoaConfig)
    auto: list[BackendName] = Field(
        ["exact", "tabu", "qaoa", "sa"], min_length=1, description="order of submission"
    )
    workers: int = Field(2, ge=0, le=256, description="solver processes; 0 runs solvers in threads")
    exact_first_max: int = Field(
        18, ge=0, le=24, description="auto: up to this many variables, enumerate alone first (milliseconds)"
    )
    margin_ms: int = Field(40, ge=0, description="kept before the deadline to send the answer")

    def eligible(self, name: str, n: int) -> str | None:
        """Why ``name`` cannot take a model of ``n`` variables, or None."""
        return build(name, self).refuses(n)


def run_solver(
    name: str, cfg: SolversConfig, bqm: dimod.BinaryQuadraticModel, deadline: Deadline | float
) -> Candidate:
    """Run one solver (in a pool process); errors become an ``error`` candidate, never an exception."""
    started = time.monotonic()
    if not isinstance(deadline, Deadline):
        deadline = Deadline(deadline)
    try:
        return build(name, cfg).solve(bqm, deadline)
    except Exception as exc:  # a solver bug or a device failure must not take the worker down
        return Candidate(
            solver=name,
            status="error",
            reason=f"{type(exc).__name__}: {exc}"[:300],
            seconds=round(time.monotonic() - started, 6),
        )


def _warm(cfg: SolversConfig) -> None:
    for name in backend_names():
        build(name, cfg).warm_up()


class Portfolio:
    """Owns the solver processes; ``await solve(bqm, "auto", deadline_at)`` → (best or None, candidates)."""

    def __init__(self, config: SolversConfig) -> None:
        self.config = config
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.Executor | None:
        if self.config.workers == 0:
            return None  # the loop's default thread pool
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dimod", "dwave.samplers", "qxedge.hybrid.portfolio"])
        return concurrent.futures.ProcessPoolExecutor(self.config.workers, mp_context=ctx)

    def _submit(
        self, name: str, bqm: dimod.BinaryQuadraticModel, deadline_at: float
    ) -> asyncio.Future[Candidate]:
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self._pool, run_solver, name, self.config, bqm, deadline_at)
        except BrokenProcessPool:  # a solver process died (killed, out of memory): start afresh
            log.warning("a solver process died; starting a new pool")
            self.close(kill=True)
            self._pool = self._new_pool()
            return loop.run_in_executor(self._pool, run_solver, name, self.config, bqm, deadline_at)

    def warm_up(self) -> None:
        """Start every solver process now rather than on the first job."""
        if isinstance(self._pool, concurrent.futures.ProcessPoolExecutor):
            for f in [self._pool.submit(_warm, self.config) for _ in range(self.config.workers)]:
                f.result()

    def close(self, *, kill: bool = False) -> None:
        """Stop the pool; ``kill`` also ends solvers still running (they would stop at their deadline)."""
        if isinstance(self._pool, concurrent.futures.ProcessPoolExecutor) and kill:
            for process in list(getattr(self._pool, "_processes", {}).values()):  # no public API for this
                process.terminate()
        if self._pool is not None:
            self._pool.shutdown(wait=not kill, cancel_futures=True)

    def plan(self, solver: str, n: int) -> tuple[list[str], list[Candidate]]:
        """The solvers to run for ``solver`` on ``n`` variables, and the refused ones as candidates."""
        names = list(dict.fromkeys(self.config.auto)) if solver == "auto" else [solver]
        run, refused = [], []
        for name in names:
            why = self.config.eligible(name, n)
            if why is None:
                run.append(name)
            else:
                refused.append(Candidate(solver=name, status="refused", reason=why))
        return run, refused

    async def solve(
        self, bqm: dimod.BinaryQuadraticModel, solver: str, deadline_at: float
    ) -> tuple[Candidate | None, list[Candidate]]:
        names, candidates = self.plan(solver, bqm.num_variables)
        collect_by = deadline_at - self.config.margin_ms / 1000.0
        if len(names) > 1 and "exact" in names and bqm.num_variables <= self.config.exact_first_max:
            # A small model is settled by enumeration in milliseconds: run it alone first, so the others
            # are not started (a started solver cannot be called back from its process) for nothing.
            names.remove("exact")
            first = await self._submit("exact", bqm, collect_by)
            candidates.append(first)
            if first.status == "ok" and first.details.get("optimal"):
                candidates += [
                    Candidate(solver=name, status="skipped", reason="exact optimum found first")
                    for name in names
                ]
                return first, candidates
        pending = {self._submit(name, bqm, collect_by): name for name in names}
        while pending:
            done, _ = await asyncio.wait(
                pending, timeout=max(0.0, collect_by - time.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for future in done:
                name = pending.pop(future)
                try:
                    candidate = future.result()
                except BrokenProcessPool:
                    candidate = Candidate(solver=name, status="error", reason="the solver process died")
                candidates.append(candidate)
                if candidate.status == "ok" and candidate.details.get("optimal"):
                    pending_names = list(pending.values())
                    for f in pending:
                        f.cancel()
                    candidates.extend(
                        Candidate(solver=name, status="skipped", reason="exact optimum found first")
                        for name in pending_names
                    )
                    pending = {}
                    break
        for future, name in pending.items():
            future.cancel()
            candidates.append(
                Candidate(solver=name, status="timeout", reason="still running at the deadline")
            )
        ok = [c for c in candidates if c.status == "ok" and c.energy is not None]
        best = min(ok, key=lambda c: c.energy if c.energy is not None else float("inf"), default=None)
        return best, candidates
