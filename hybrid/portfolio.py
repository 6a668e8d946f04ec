"""The solver portfolio: one solver, or ``auto`` = every eligible solver in parallel, best by the deadline.

Every job, whatever it names, first gets a floor answer in the worker's own process: the ``greedy``
backend (a steepest descent, milliseconds), so a valid job always has a real sample by its deadline.
Up to ``exact_first_max`` variables ``exact`` enumerates in-process too and a proven optimum ends the job.
The other solvers run in warm solver processes (:mod:`hybrid.pool`), as many as are idle when the job
starts, in the order of ``auto``; each gets its own deadline, ``handback_ms`` before the collection
deadline (the job's deadline less ``margin_ms``, kept to send the answer), so an anytime solver that
uses its whole budget is back in time. A proven optimum, the collection deadline or a cut
(:class:`JobCut`, the worker's fair share) ends the collection: the solvers still running are told to
stop, and a process not back within ``overrun_grace_ms`` is recycled. ``workers: 0`` runs the solvers in
threads instead (no recycling; they stop cooperatively).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

import dimod
import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import Deadline, backend_names, build, known_backend
from qxedge.hybrid.config import MilpConfig
from qxedge.hybrid.constrained import ConstrainedJob, best_constrained, constrained_job, solve_constrained
from qxedge.hybrid.decoded_bqm import DecodedBqm, built
from qxedge.hybrid.floor import is_dense
from qxedge.hybrid.pool import NEVER, SolverPool, pickled, ship_seconds
from qxedge.hybrid.qaoa import QaoaConfig
from qxedge.hybrid.shared_matrix import SharedQubo, room_for, share_seconds
from qxedge.hybrid.solvers import ExactConfig, SaConfig, TabuConfig
from qxedge.hybrid.wire import Candidate

log = logging.getLogger(__name__)
BackendName = Annotated[str, AfterValidator(known_backend)]  # a registered backend (hybrid.backends)
FLOOR = "greedy"  # the backend every job's floor answer comes from
BIG_MODEL_INTERACTIONS = 100_000  # pickled for the solver processes off the event loop
SHARED_MIN_INTERACTIONS = 10_000  # a dense model at least this large goes to solver processes as a
# shared matrix (hybrid.shared_matrix), to the backends that take one


class SolversConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exact: ExactConfig = Field(default_factory=ExactConfig)
    sa: SaConfig = Field(default_factory=SaConfig)
    tabu: TabuConfig = Field(default_factory=TabuConfig)
    qaoa: QaoaConfig = Field(default_factory=QaoaConfig)
    milp: MilpConfig = Field(default_factory=MilpConfig)
    auto: list[BackendName] = Field(
        ["exact", "tabu", "qaoa", "sa"], min_length=1, description="order of submission"
    )
    cqm_auto: list[BackendName] = Field(
        ["milp", "exact", "tabu", "sa", "qaoa"],
        min_length=1,
        description="cqm jobs: order of submission (milp on the CQM, the others by the penalty route)",
    )
    penalty_max_interactions: int = Field(
        2_000_000, ge=0, description="cqm jobs: a larger penalty BQM is not built (the route is refused)"
    )
    workers: int = Field(2, ge=0, le=256, description="solver processes; 0 runs solvers in threads")
    keep_freed_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        le=2**31 - 1,
        description="freed memory each solver process keeps for its next job (glibc), so that a search "
        "call's set-up reuses its pages: tabu's took 42 ms instead of 74 ms at n = 2000; a process's "
        "resident memory stays near its largest job's; 0: give it back after each job",
    )
    exact_first_max: int = Field(
        14, ge=0, le=20, description="up to this many variables, exact enumerates in-process first (ms)"
    )
    margin_ms: int = Field(40, ge=0, description="kept before the deadline to send the answer")
    handback_ms: int = Field(15, ge=0, description="each solver stops this long before the collection ends")
    overrun_grace_ms: int = Field(
        50, ge=0, description="a solver process not back this long after it was stopped is recycled"
    )

    def eligible(self, name: str, n: int) -> str | None:
        """Why ``name`` cannot take a model of ``n`` variables, or None."""
        return build(name, self).refuses(n)


def run_solver(
    name: str,
    cfg: SolversConfig,
    bqm: dimod.BinaryQuadraticModel | ConstrainedJob | SharedQubo,
    deadline: Deadline | float,
) -> Candidate:
    """Run one solver (in a pool process) on a BQM, a ``cqm`` job (:mod:`hybrid.constrained`) or a dense
    model's shared matrix (:mod:`hybrid.shared_matrix`); errors become an ``error`` candidate, never an
    exception."""
    started = time.monotonic()
    if not isinstance(deadline, Deadline):
        deadline = Deadline(deadline)
    try:
        if isinstance(bqm, ConstrainedJob):
            return solve_constrained(name, cfg, bqm, deadline)
        if isinstance(bqm, SharedQubo):
            solve_shared = _shared_fn(name, cfg)
            if solve_shared is None:
                raise TypeError(f"{name} takes no shared matrix")
            return solve_shared(bqm, deadline)
        return build(name, cfg).solve(bqm, deadline)
    except Exception as exc:  # a solver bug or a device failure must not take the worker down
        return Candidate(
            solver=name,
            status="error",
            reason=f"{type(exc).__name__}: {exc}"[:300],
            seconds=round(time.monotonic() - started, 6),
        )


def _shared_fn(name: str, cfg: SolversConfig) -> Callable[[SharedQubo, Deadline], Candidate] | None:
    """The backend's way to solve a shared matrix, when it has one."""
    fn: Callable[[SharedQubo, Deadline], Candidate] | None = getattr(build(name, cfg), "shared_fn", None)
    return fn


def warm_backends(cfg: SolversConfig, names: Iterable[str] | None = None) -> None:
    """Import (or compile) what the backends ``names`` (default: all) need: once in each solver process,
    before any job."""
    for name in backend_names() if names is None else names:
        build(name, cfg).warm_up()


class _SharedCut:
    """A thread-mode solver's cut time (what a RawValue is for a solver process)."""

    def __init__(self) -> None:
        self.value = NEVER

    def now(self) -> None:
        self.value = time.time()


@dataclass
class JobCut:
    """Ends a running job's collection early (the worker's fair share); its solvers hand back what
    they have. ``reason`` says why, for the result."""

    reason: str | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def cut(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class _Running:
    name: str
    future: asyncio.Future[Candidate]
    stop: Callable[[], None]
    where: str  # what the candidate's details say it ran in


class Portfolio:
    """Owns the solver processes; ``await solve(bqm, "auto", deadline_at)`` → (best or None, candidates)."""

    def __init__(self, config: SolversConfig) -> None:
        self.config = config
        self.pool = SolverPool(config, grace_s=config.overrun_grace_ms / 1000) if config.workers else None
        self.warmup_s: float | None = None  # how long warm_up took (before any clock started)

    def warm_up(self, only: Iterable[str] | None = None) -> float:
        """Start every solver process now (blocking), not inside a job's deadline, and warm the backends
        ``only`` names in them (default: all of them); measure here what this process predicts their
        start-up from (:meth:`~qxedge.hybrid.backends.Backend.calibrate_fn`, e.g. tabu's call set-up);
        seconds it took."""
        if self.warmup_s is None:
            began = time.monotonic()
            names = tuple(backend_names() if only is None else only)
            if self.pool is not None:
                self.pool.start(names)
            for name in names:
                calibrate = getattr(build(name, self.config), "calibrate_fn", None)
                if calibrate is not None:
                    calibrate()
            self.warmup_s = time.monotonic() - began
        return self.warmup_s

    def in_processes(self, solver: str, n: int) -> list[str]:
        """The backends a job naming ``solver`` on ``n`` variables would run in solver processes (none
        when it is settled in-process): what a one-job run (``qxedge solve``) needs warm."""
        names, _ = self.plan(solver, n)
        if self._enumerated_here(names, n):
            return []  # enumerated in-process: the optimum ends the job
        return [name for name in names if name != FLOOR]

    def _enumerated_here(self, names: list[str], n: int) -> bool:
        """Whether ``exact`` runs in the worker's process (small models) rather than in a solver process."""
        return "exact" in names and n <= self.config.exact_first_max

    def close(self) -> None:
        """Stop the solver processes (a solver still running is abandoned: its job has its answer)."""
        if self.pool is not None:
            self.pool.close()

    @property
    def recycled(self) -> int:
        """Solver processes recycled because their work overran."""
        return self.pool.recycled if self.pool is not None else 0

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
        self,
        model: dimod.BinaryQuadraticModel | DecodedBqm,
        solver: str,
        deadline_at: float,
        cut: JobCut | None = None,
    ) -> tuple[Candidate | None, list[Candidate]]:
        """The best answer by ``deadline_at`` (or the ``cut``) and every candidate. A decoded job's dimod
        model is built once the solver processes have their work: a dense model's search starts from
        its shared matrix, written straight from the job's arrays, while that model is built."""
        n, m = model.num_variables, model.num_interactions
        names, candidates = self.plan(solver, n)
        left = max(0.0, deadline_at - time.time())  # a short deadline keeps less back: a tenth, a 20th
        collect_by = deadline_at - min(self.config.margin_ms / 1000, left / 10)
        due = Deadline(collect_by - min(self.config.handback_ms / 1000, left / 20))
        small = self._enumerated_here(names, n)
        if small:
            names.remove("exact")
        names, hopeless = self._in_time(names, n, m, due.due)
        candidates += hopeless
        shared: list[SharedQubo] = []  # a dense model's matrix, unlinked once the collection ends
        running: list[_Running] = []
        try:
            # the solver processes start first: the floor's descent (tens of milliseconds on thousands
            # of variables) runs while they solve, not before
            running, skipped = ([], []) if small else await self._start(names, model, due.due, shared)
            bqm = await _built(model)
            floor = await asyncio.to_thread(run_solver, FLOOR, self.config, bqm, due)
            candidates.append(_where(floor, "in-process"))
            if small:
                first = await asyncio.to_thread(run_solver, "exact", self.config, bqm, due)
                candidates.append(_where(first, "in-process"))
                if _optimal(first):
                    candidates += [_skipped(name, "exact optimum found in-process") for name in names]
                    return _best(candidates), candidates
                running, skipped = await self._start(names, bqm, due.due, shared)
            candidates += skipped
            collecting, running = running, []
            candidates += await self._collect(collecting, collect_by, cut)
        finally:
            for r in running:  # not collected (an error on the way): their work ends now
                r.stop()
            for block in shared:
                block.release()
        for candidate in candidates:
            if candidate.details.get("model") == "shared matrix":
                _rescore(candidate, bqm)
        return _best(candidates), candidates

    def _shares(self, n: int, m: int) -> bool:
        """Whether solver processes get a model's matrix in shared memory (the backends that take one)."""
        if self.pool is None:
            return False
        return m >= SHARED_MIN_INTERACTIONS and is_dense(n, m) and room_for(n)

    def _in_time(self, names: list[str], n: int, m: int, due: float) -> tuple[list[str], list[Candidate]]:
        """The backends that can have an answer by ``due``, and a ``timeout`` for each of the others,
        which are never started: the model is not shipped to them, and the floor keeps the cores. Beside
        a search on a dense model's shared matrix, a backend that needs the model pickled starts only
        when its shipping and set-up would take at most half the time left: on a complete n = 2000
        model, sa's 32 MB of pickle and 0.6 s of set-up took the cores tabu's search needed and came
        back with nothing at 2 s (ad hoc)."""
        shares = self._shares(n, m)
        beside_shared = shares and any(_shared_fn(name, self.config) is not None for name in names)
        kept, hopeless = [], []
        for name in names:
            takes_shared = shares and _shared_fn(name, self.config) is not None
            if self.pool is None:
                ship = 0.0
            elif takes_shared:
                ship = share_seconds(n)
            else:
                ship = ship_seconds(n, m)
            share = 0.5 if beside_shared and not takes_shared else 1.0
            left = share * (due - time.time()) - ship
            need = build(name, self.config).startup_seconds(n, m)
            if need <= left:
                kept.append(name)
                continue
            of = "" if share == 1.0 else " (half the time left: a search on the shared matrix runs beside it)"
            why = (
                f"not started: its set-up and hand-back are predicted at {need:.3f} s for {n} variables "
                f"and {m} interactions, more than the {max(0.0, left):.3f} s left{of}"
            )
            hopeless.append(Candidate(solver=name, status="timeout", reason=why, seconds=0.0))
        return kept, hopeless

    def plan_cqm(self, solver: str, job: ConstrainedJob) -> tuple[list[str], list[Candidate]]:
        """The solvers to run for ``solver`` on a ``cqm`` job, and the refused ones as candidates:
        ``milp`` when the model is linearisable, the others when the penalty BQM suits them."""
        names = list(dict.fromkeys(self.config.cqm_auto)) if solver == "auto" else [solver]
        run, refused = [], []
        for name in names:
            if name == "milp":
                from qxedge.hybrid.milp import refuses as milp_refuses  # registers milp (BUILTIN order)

                why = milp_refuses(job.cqm, self.config.milp)
            elif job.penalty is None:
                why = job.why_no_penalty
            else:
                why = self.config.eligible(name, job.penalty.bqm.num_variables)
                why = None if why is None else f"penalty BQM: {why}"
            if why is None:
                run.append(name)
            else:
                refused.append(Candidate(solver=name, status="refused", reason=why))
        return run, refused

    def cqm_in_processes(self, solver: str) -> list[str]:
        """The backends a ``cqm`` job naming ``solver`` may run in solver processes (to warm)."""
        names = self.config.cqm_auto if solver == "auto" else [solver]
        return [name for name in dict.fromkeys(names) if name != FLOOR]

    async def solve_cqm(
        self,
        cqm: dimod.ConstrainedQuadraticModel,
        solver: str,
        deadline_at: float,
        cut: JobCut | None = None,
    ) -> tuple[Candidate | None, list[Candidate]]:
        """A ``cqm`` job: ``milp`` and the penalty route's backends in the solver processes, the floor
        (the penalty route's greedy, repaired) in-process; the best feasible answer by the deadline
        (:func:`~qxedge.hybrid.constrained.best_constrained`); a proven optimum ends it."""
        left = max(0.0, deadline_at - time.time())
        collect_by = deadline_at - min(self.config.margin_ms / 1000, left / 10)
        due = Deadline(collect_by - min(self.config.handback_ms / 1000, left / 20))
        job = await asyncio.to_thread(constrained_job, cqm, self.config.penalty_max_interactions)
        names, candidates = self.plan_cqm(solver, job)
        running, skipped = await self._start(names, job, due.due)
        floor = await asyncio.to_thread(run_solver, FLOOR, self.config, job, due)
        candidates.append(_where(floor, "in-process"))
        candidates += skipped
        candidates += await self._collect(running, collect_by, cut)
        return best_constrained(candidates), candidates

    async def _start(
        self,
        names: list[str],
        model: dimod.BinaryQuadraticModel | DecodedBqm | ConstrainedJob,
        due: float,
        blocks: list[SharedQubo] | None = None,
    ) -> tuple[list[_Running], list[Candidate]]:
        """Start ``names`` on idle solver processes (or threads); a dense model's matrix, when it goes
        to them in shared memory, is appended to ``blocks`` for the caller to release."""
        if not names:
            return [], []
        loop = asyncio.get_running_loop()
        if self.pool is None:  # threads: they stop at their cut, cooperatively
            work = model if isinstance(model, ConstrainedJob) else await _built(model)
            running = []
            for name in names:
                shared = _SharedCut()
                deadline = Deadline(due, shared)
                future = loop.run_in_executor(None, run_solver, name, self.config, work, deadline)
                running.append(_Running(name, future, shared.now, "thread"))
            return running, []
        if not self.pool.started:
            why = "the solver processes are not started (Portfolio.warm_up)"
            return [], [_skipped(name, why) for name in names]
        processes = self.pool.take(len(names))
        taking = names[: len(processes)]
        m = model.num_interactions
        dense = not isinstance(model, ConstrainedJob) and self._shares(model.num_variables, m)
        share = [name for name in taking if dense and _shared_fn(name, self.config) is not None]
        matrix = b""
        if share and not isinstance(model, ConstrainedJob):
            block = await asyncio.to_thread(SharedQubo.create, model)
            if blocks is not None:
                blocks.append(block)
            matrix = pickled(block)
        data = b""
        if len(share) < len(taking):
            work = model if isinstance(model, ConstrainedJob) else await _built(model)
            if m > BIG_MODEL_INTERACTIONS:  # 60 ms at 2M: not on the event loop
                data = await asyncio.to_thread(pickled, work)
            else:
                data = pickled(work)
        running = []
        for name, process in zip(names, processes, strict=False):
            task = self.pool.submit(process, name, due, matrix if name in share else data)
            running.append(_Running(name, task, partial(self.pool.stop, process, task), "solver process"))
        busy = f"no idle solver process ({self.pool.size} in all)"
        return running, [_skipped(name, busy) for name in names[len(processes) :]]

    async def _collect(
        self, running: list[_Running], collect_by: float, cut: JobCut | None
    ) -> list[Candidate]:
        started = time.time()
        candidates: list[Candidate] = []
        pending: dict[asyncio.Future[Any], _Running] = {r.future: r for r in running}
        cut_wait = asyncio.ensure_future(cut.wait()) if cut is not None else None
        ended = "still running at the deadline"
        try:
            while pending and not any(_optimal(c) for c in candidates):
                done, _ = await asyncio.wait(
                    {*pending, *([cut_wait] if cut_wait else [])},
                    timeout=max(0.0, collect_by - time.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    break
                if cut is not None and cut_wait in done:
                    ended = f"stopped: {cut.reason}"
                    break
                candidates += [_outcome(pending.pop(future)) for future in done]
        finally:
            if cut_wait is not None:
                cut_wait.cancel()
        if any(_optimal(c) for c in candidates):
            ended = "stopped: exact optimum found"
        for r in pending.values():
            r.stop()
            seconds = round(time.time() - started, 6)
            candidates.append(Candidate(solver=r.name, status="timeout", reason=ended, seconds=seconds))
        return candidates


async def _built(model: dimod.BinaryQuadraticModel | DecodedBqm) -> dimod.BinaryQuadraticModel:
    """dimod's model; a large decoded one is built off the event loop (0.12 s at 2M interactions)."""
    if isinstance(model, DecodedBqm) and model.num_interactions > BIG_MODEL_INTERACTIONS:
        return await asyncio.to_thread(model.bqm)
    return built(model)


def _outcome(r: _Running) -> Candidate:
    try:
        return _where(r.future.result(), r.where)
    except (EOFError, OSError) as exc:
        return Candidate(
            solver=r.name, status="error", reason=f"the solver process died ({type(exc).__name__})"
        )


def _rescore(candidate: Candidate, bqm: dimod.BinaryQuadraticModel) -> None:
    """A candidate from a shared matrix scored again by dimod on the job's model (its sample lists the
    variables in the model's order), so its energy is dimod's, as every other candidate's."""
    if candidate.sample is None or candidate.status != "ok":
        return
    values = np.fromiter(candidate.sample.values(), dtype=np.int64, count=len(candidate.sample))
    candidate.energy = float(bqm.energy((values, list(bqm.variables))))


def _where(candidate: Candidate, where: str) -> Candidate:
    candidate.details.setdefault("ran_in", where)
    return candidate


def _optimal(candidate: Candidate) -> bool:
    return candidate.status == "ok" and bool(candidate.details.get("optimal"))


def _skipped(name: str, why: str) -> Candidate:
    return Candidate(solver=name, status="skipped", reason=why)


def _best(candidates: list[Candidate]) -> Candidate | None:
    """The lowest energy; on a tie a solver the job ran beats the floor answer."""
    ok = [c for c in candidates if c.status == "ok" and c.energy is not None]
    return min(ok, key=lambda c: (c.energy, c.solver == FLOOR), default=None)
