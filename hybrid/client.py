"""The agent's side of offloading: submit a job, wait for its result, fall back locally in time.

``async with OffloadClient(mqtt, site, config) as offload: decision = await offload.solve(bqm)``
publishes a job on ``qx/v1/{site}/jobs`` and waits on ``qx/v1/{site}/results/{job_id}`` until the
deadline minus ``fallback_ms`` (the job's ``deadline_ms`` says so to the data center: its solvers fill
that budget, not the whole deadline). If no valid ``ok`` result has come by then (data center down, slow,
overloaded, or the broker unreachable) it solves locally with a classical solver in the time kept for
that (or, when many fallbacks come at once, with an instant greedy descent), so a decision always
arrives by the deadline. A result is used only if it answers a job this client sent, on that job's
topic, with status ``ok`` and a sample of the job's variables whose energy on the job's own model is
the energy it claims. Anything else (malformed, another job's, a mismatched sample or energy, or a
``rejected`` / ``late`` / ``error`` answer, which anyone on the broker could forge) is counted, handed
to ``on_refused`` with its reason (the agent audits it) and ignored: the client keeps waiting for a
valid result of the same job until the wait ends, and only then falls back (its reason names the
last answer refused). Results arriving after the wait ended are counted as ``late``; a second result
for a job already answered, as ``duplicate_results``.

A job with no valid result after ``resend_after`` of the wait (0.4 by default) is published again,
the same envelope (same ``job_id``, same ``submitted_at``, so the same deadline at the worker), at most
``max_resends`` times (``resends`` counts them): a worker that took the job and died holding it is taken
over through the job ledger when the re-send reaches another worker (the worker's liveness, docs/
operations.md). Whichever send is answered first decides; the other answer counts as a duplicate.
Re-sends draw on a budget (:class:`hybrid.resend.ResendBudget`): when most jobs are answered after
their re-send time (an overloaded data center, anytime solvers filling the budget), re-sends mostly
stop (``resends_held`` counts those not sent), so a slow data center draws no storm of them.

Silence is never silent: after ``alarm_after`` fallbacks in a row the client logs "the data center is not
answering" (a warning) and calls ``on_silent`` once (the agent raises an alarm); ``silent`` holds until
the data center answers again (logged too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import dimod
from pydantic import ValidationError

from qxedge.connectors.mqtt import MqttClient, Subscription
from qxedge.hybrid.backends import Deadline, build
from qxedge.hybrid.config import OffloadConfig as OffloadConfig
from qxedge.hybrid.constrained import (
    ConstrainedJob,
    best_constrained,
    constrained_job,
    evaluate,
    in_bounds,
    solve_constrained,
    unlabel,
)
from qxedge.hybrid.cqm_wire import encode_cqm
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.resend import ResendBudget
from qxedge.hybrid.solvers import SaConfig
from qxedge.hybrid.wire import (
    Candidate,
    JobEnvelope,
    ResultEnvelope,
    SolverName,
    jobs_topic,
    results_topic,
    unlabel_sample,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the agent acts on: the best sample, who found it, and how it got here."""

    job_id: str
    sample: dict[Any, int]
    energy: float
    solver: str
    source: Literal["datacenter", "fallback"]
    seconds: float
    reason: str | None = None
    result: ResultEnvelope | None = None
    feasible: bool | None = None  # cqm jobs: whether the sample meets every constraint
    objective: float | None = None  # cqm jobs: the objective's value at the sample


MIN_JOB_DEADLINE_MS = 10  # the data center's min_deadline_ms by default
RESULTS_PER_JOB = 64  # results held for one job while it is being waited for; more are refused
RefusedHook = Callable[[str, "str | None", str, dict[str, Any]], None]  # topic, job id, reason, detail
SilentHook = Callable[[str], None]  # what the alarm says


class OffloadClient:
    def __init__(
        self,
        mqtt: MqttClient,
        site: str,
        config: OffloadConfig,
        on_refused: RefusedHook | None = None,
        on_silent: SilentHook | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.on_refused = on_refused
        self.on_silent = on_silent
        self.unanswered = 0  # offloads in a row that fell back locally
        self.silent = False  # alarm_after or more of them: the alarm is raised
        self.site = site
        self.config = config
        self.stats: Counter[str] = Counter()
        self.wins: Counter[str] = Counter()
        self._waiting: dict[str, asyncio.Queue[tuple[str, ResultEnvelope]]] = {}  # job id -> its results
        self._finished: OrderedDict[str, bool] = OrderedDict()  # job id -> answered (else fell back)
        self._sent: OrderedDict[str, float] = OrderedDict()  # job id -> deadline, the last 10,000 jobs
        self._resends = ResendBudget()  # no storm of re-sends when the data center is slow for all
        self._search_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qxedge-fallback")
        self._searching = False
        # the fallback's backends come from the solver registry; SA reads less than in the data center
        self._solvers = SolversConfig(sa=SaConfig(max_reads=50))
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> OffloadClient:
        results: Subscription = await self.mqtt.subscribe(results_topic(self.site, "+"), qos=1)
        self._results = results
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        tasks.create_task(self._route(results), name=f"offload-results[{self.site}]")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._results.close()
        await self._stack.aclose()
        self._search_thread.shutdown(wait=False, cancel_futures=True)

    async def _route(self, results: Subscription) -> None:
        async for batch in results:
            for topic, payload in batch:
                try:
                    result = ResultEnvelope.model_validate_json(payload)
                except ValidationError as exc:
                    self._refuse(
                        "invalid_results", topic, None, f"malformed result: {exc.errors()[0]['msg']}"
                    )
                    continue
                job_id = result.job_id or ""
                waiting = self._waiting.get(job_id)
                if topic != results_topic(self.site, job_id):
                    self._refuse(
                        "invalid_results", topic, job_id, "the result's job_id does not match its topic"
                    )
                elif waiting is not None:
                    try:
                        waiting.put_nowait((topic, result))
                    except asyncio.QueueFull:
                        self._refuse("invalid_results", topic, job_id, "too many results for one job")
                elif self._finished.get(job_id) is True:
                    self._refuse("duplicate_results", topic, job_id, "the job was answered already")
                elif job_id in self._finished:
                    self._refuse(
                        "late",
                        topic,
                        job_id,
                        "arrived after the wait for it ended (the fallback_ms before the job's deadline): "
                        "the local fallback decided",
                    )
                else:
                    self._refuse(
                        "unknown_results", topic, job_id, "no job with this id was sent by this agent"
                    )

    def _refuse(self, counter: str, topic: str, job_id: str | None, reason: str, **detail: Any) -> None:
        self.stats[counter] += 1
        log.warning("dropped a result on %s: %s", topic, reason)
        if self.on_refused is not None:
            self.on_refused(topic, job_id, reason, detail)

    async def solve(
        self,
        bqm: dimod.BinaryQuadraticModel,
        *,
        deadline_ms: int | None = None,
        solver: SolverName | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Decision:
        problem = bqm.to_serializable(use_bytes=False)
        job_id, deadline_at, started, decision, reason = await self._offload(
            "bqm", problem, deadline_ms, solver, meta, partial(self._accept, bqm)
        )
        if decision is not None:
            return decision
        return await self._fall_back(bqm, job_id, deadline_at, started, reason)

    async def solve_cqm(
        self,
        cqm: dimod.ConstrainedQuadraticModel,
        *,
        deadline_ms: int | None = None,
        solver: SolverName | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Decision:
        """:meth:`solve` for a constrained model (a ``cqm`` job): the decision also says whether its
        sample is ``feasible`` and its ``objective`` (``energy`` is the objective too). A result is used
        only if its sample fits the model's variables and bounds and its objective and feasibility are
        what the model says of it. The local fallback is HiGHS (:mod:`hybrid.milp`), which proves the
        plant problems in milliseconds; when the model is not linearisable or HiGHS finds nothing in the
        time kept, the penalty route's greedy descent, repaired against the constraints."""
        job_id, deadline_at, started, decision, reason = await self._offload(
            "cqm", encode_cqm(cqm), deadline_ms, solver, meta, partial(self._accept_cqm, cqm)
        )
        if decision is not None:
            return decision
        return await self._fall_back_cqm(cqm, job_id, deadline_at, started, reason)

    async def _offload(
        self,
        kind: Literal["bqm", "cqm"],
        problem: dict[str, Any],
        deadline_ms: int | None,
        solver: SolverName | None,
        meta: dict[str, Any] | None,
        accept: Callable[[str, ResultEnvelope, float], tuple[Decision | None, str]],
    ) -> tuple[str, float, float, Decision | None, str]:
        """Send a job and wait for a valid result until the fallback must start: (job id, deadline,
        monotonic start, the decision or None, why there is none)."""
        cfg = self.config
        started = time.monotonic()
        submitted = time.time()
        total_ms = deadline_ms or cfg.deadline_ms
        deadline_at = submitted + total_ms / 1000.0
        job_id = str(uuid.uuid4())
        envelope = JobEnvelope(
            v=1,
            job_id=job_id,
            site=self.site,
            kind=kind,
            problem=problem,
            # the data center's deadline is when this client stops waiting: an anytime solver that
            # fills its budget must not answer after the fallback has started
            deadline_ms=max(MIN_JOB_DEADLINE_MS, total_ms - cfg.fallback_ms),
            submitted_at=submitted,
            solver=solver or cfg.solver,
            reply_to=results_topic(self.site, job_id),
            meta=meta or {},
        )
        results: asyncio.Queue[tuple[str, ResultEnvelope]] = asyncio.Queue(RESULTS_PER_JOB)
        self._waiting[job_id] = results
        self._sent[job_id] = deadline_at
        if len(self._sent) > 10_000:
            self._sent.popitem(last=False)
        self.stats["jobs"] += 1
        payload = envelope.model_dump_json().encode()
        wait_end = deadline_at - cfg.fallback_ms / 1000  # the fallback starts then
        job_due = submitted + envelope.deadline_ms / 1000  # the deadline the data center reads
        self._send(job_id, payload, job_due)
        # re-sends: the same envelope, so the same job_id and submitted_at (the worker's deadline is
        # submitted_at + deadline_ms: a re-send never extends it); a worker that took the job and died
        # holding it is taken over through the job ledger when the re-send reaches another worker
        # the wait and the re-send times on the monotonic clock (a wall clock step changes neither)
        wait_s = max(0.0, wait_end - submitted)
        mono_start = time.monotonic()
        mono_end = mono_start + max(0.0, wait_end - time.time())
        resends = [mono_start + at for at in cfg.resend_times(wait_s)]
        prompt = bool(resends)  # answered before its first re-send time (earns re-send budget)
        refused = ""  # why the last result of this job was not used
        try:
            while True:  # the first result does not decide: a forged one must not end the wait
                now = time.monotonic()
                if now >= mono_end:
                    raise TimeoutError
                try:
                    async with asyncio.timeout(min([mono_end, *resends[:1]]) - now):
                        topic, result = await results.get()
                except TimeoutError:
                    if resends and time.monotonic() >= resends[0]:
                        resends.pop(0)
                        prompt = False
                        if self._resends.may_resend():
                            self.stats["resends"] += 1
                            log.debug("job %s: no result yet, sent again", job_id)
                            self._send(job_id, payload, job_due)
                        else:
                            self.stats["resends_held"] += 1
                    continue
                self.stats["results"] += 1
                decision, refused = accept(topic, result, started)
                if decision is not None:
                    if prompt:
                        self._resends.answered_in_time()
                    self._finish(job_id, answered=True)
                    self._answered()
                    return job_id, deadline_at, started, decision, ""
        except TimeoutError:
            self._finish(job_id, answered=False)
        finally:
            self._waiting.pop(job_id, None)
        if refused:
            reason = f"no valid result from the data center in time (refused: {refused})"
        else:
            reason = "no result from the data center in time" if self.mqtt.connected else "broker unreachable"
        return job_id, deadline_at, started, None, reason

    def _send(self, job_id: str, payload: bytes, due: float) -> None:
        """Publish a job (again); MQTT 5: the broker drops it at its deadline ``due`` (the expiry is the
        time left), and it carries the request/response fields."""
        self.mqtt.publish(
            jobs_topic(self.site),
            payload,
            qos=self.config.job_qos,
            expiry_s=max(0.001, due - time.time()),
            response_topic=results_topic(self.site, job_id),
            correlation=job_id.encode(),
        )

    def deadline_of(self, job_id: str) -> float | None:
        """The deadline of a job this client sent (among the last 10,000), else None."""
        return self._sent.get(job_id)

    def _finish(self, job_id: str, *, answered: bool) -> None:
        self._finished[job_id] = answered
        if len(self._finished) > 10_000:
            self._finished.popitem(last=False)

    def _accept(
        self, bqm: dimod.BinaryQuadraticModel, topic: str, result: ResultEnvelope, started: float
    ) -> tuple[Decision | None, str]:
        """The decision a result carries, or (None, why it is refused: counted and handed on)."""
        counter, reason = check_result(bqm, result)
        if reason:
            self._refuse(counter, topic, result.job_id, reason)
            return None, reason
        assert result.sample is not None and result.energy is not None  # checked
        sample = unlabel_sample(bqm, result.sample)
        energy = float(bqm.energy(sample))
        self.wins[result.solver or "?"] += 1
        return Decision(
            result.job_id or "",
            sample,
            energy,
            result.solver or "?",
            "datacenter",
            time.monotonic() - started,
            result=result,
        ), ""

    def _accept_cqm(
        self, cqm: dimod.ConstrainedQuadraticModel, topic: str, result: ResultEnvelope, started: float
    ) -> tuple[Decision | None, str]:
        """:meth:`_accept` for a ``cqm`` job (:func:`check_cqm_result`)."""
        counter, reason = check_cqm_result(cqm, result)
        if reason:
            self._refuse(counter, topic, result.job_id, reason)
            return None, reason
        assert result.sample is not None and result.objective is not None  # checked
        self.wins[result.solver or "?"] += 1
        return Decision(
            result.job_id or "",
            unlabel(cqm, result.sample),
            result.objective,
            result.solver or "?",
            "datacenter",
            time.monotonic() - started,
            result=result,
            feasible=result.feasible,
            objective=result.objective,
        ), ""

    async def _fall_back_cqm(
        self,
        cqm: dimod.ConstrainedQuadraticModel,
        job_id: str,
        deadline_at: float,
        started: float,
        reason: str,
    ) -> Decision:
        """HiGHS in the search thread (the greedy penalty route at once when it is busy)."""
        self.stats["fallbacks"] += 1
        self._unanswered(reason)
        budget_end = Deadline(min(deadline_at - 0.01, time.time() + 0.8 * self.config.fallback_ms / 1000))
        if self._searching:
            candidate = local_cqm(cqm, budget_end, self._solvers, milp=False)
            self.stats["greedy_fallbacks"] += 1
        else:
            self._searching = True
            try:
                loop = asyncio.get_running_loop()
                candidate = await loop.run_in_executor(
                    self._search_thread, local_cqm, cqm, budget_end, self._solvers
                )
            finally:
                self._searching = False
        log.info("job %s: local %s fallback (%s)", job_id, candidate.solver, reason)
        self.wins[f"local-{candidate.solver}"] += 1
        return Decision(
            job_id,
            unlabel(cqm, candidate.sample or {}),
            candidate.objective or 0.0,
            candidate.solver,
            "fallback",
            time.monotonic() - started,
            reason,
            feasible=candidate.feasible,
            objective=candidate.objective,
        )

    def _answered(self) -> None:
        if self.silent:
            log.warning("the data center answers again (after %d local fallbacks in a row)", self.unanswered)
        self.unanswered, self.silent = 0, False

    def _unanswered(self, reason: str) -> None:
        self.unanswered += 1
        if self.unanswered >= self.config.alarm_after and not self.silent:
            self.silent = True
            self.stats["silence_alarms"] += 1
            alarm = (
                f"the data center is not answering: {self.unanswered} offloads in a row fell back to the "
                f"local solver (last: {reason})"
            )
            log.warning("%s", alarm)
            if self.on_silent is not None:
                self.on_silent(alarm)

    async def _fall_back(
        self, bqm: dimod.BinaryQuadraticModel, job_id: str, deadline_at: float, started: float, reason: str
    ) -> Decision:
        self.stats["fallbacks"] += 1
        self._unanswered(reason)
        # The search gets at most 80 % of fallback_ms, in the client's one search thread. When that
        # thread is busy (many fallbacks at once: the data center is down under load), a greedy
        # steepest descent answers at once instead: a decision in time beats a better one too late.
        budget_end = Deadline(min(deadline_at - 0.01, time.time() + 0.8 * self.config.fallback_ms / 1000))
        if self._searching:
            candidate = build("greedy", self._solvers).solve(bqm, budget_end)
            self.stats["greedy_fallbacks"] += 1
        else:
            self._searching = True
            try:
                search = build(self.config.fallback, self._solvers)
                loop = asyncio.get_running_loop()
                candidate = await loop.run_in_executor(self._search_thread, search.solve, bqm, budget_end)
            finally:
                self._searching = False
        sample = unlabel_sample(bqm, candidate.sample or {})
        log.info("job %s: local %s fallback (%s)", job_id, candidate.solver, reason)
        self.wins[f"local-{candidate.solver}"] += 1
        return Decision(
            job_id,
            sample,
            candidate.energy or 0.0,
            candidate.solver,
            "fallback",
            time.monotonic() - started,
            reason,
        )


def check_result(bqm: dimod.BinaryQuadraticModel, result: ResultEnvelope) -> tuple[str, str]:
    """Whether ``result`` is a usable answer to the job of ``bqm``: ``("", "")`` when it is, else the
    counter it goes to and the reason. Never raises for any envelope."""
    if result.status != "ok" or result.sample is None or result.energy is None:
        return f"result_{result.status}", f"data center answered {result.status}: {result.reason}"
    values = (0, 1) if bqm.vartype is dimod.BINARY else (-1, 1)
    if set(result.sample) != {str(v) for v in bqm.variables} or any(
        x not in values for x in result.sample.values()
    ):
        return "invalid_results", "the result's sample does not fit the job's variables"
    energy = float(bqm.energy(unlabel_sample(bqm, result.sample)))
    if not math.isfinite(result.energy) or abs(energy - result.energy) > 1e-6 * max(1.0, abs(energy)):
        return "invalid_results", f"the result's energy {result.energy} does not match its sample ({energy})"
    return "", ""


def check_cqm_result(cqm: dimod.ConstrainedQuadraticModel, result: ResultEnvelope) -> tuple[str, str]:
    """:func:`check_result` for a ``cqm`` job: the sample fits the model's variables and bounds, and its
    ``objective`` (and ``energy``) and ``feasible`` are what the model says of it. Never raises."""
    if result.status != "ok" or result.sample is None or result.objective is None or result.feasible is None:
        return f"result_{result.status}", f"data center answered {result.status}: {result.reason}"
    if set(result.sample) != {str(v) for v in cqm.variables}:
        return "invalid_results", "the result's sample does not fit the job's variables"
    sample = unlabel(cqm, result.sample)
    if not in_bounds(cqm, sample):
        return "invalid_results", "the result's sample is outside the job's variable bounds"
    feasible, objective = evaluate(cqm, sample)
    claimed = [result.objective] + ([] if result.energy is None else [result.energy])
    if any(not math.isfinite(c) or abs(objective - c) > 1e-6 * max(1.0, abs(objective)) for c in claimed):
        return (
            "invalid_results",
            f"the result's objective {result.objective} does not match its sample ({objective})",
        )
    if feasible != result.feasible:
        return (
            "invalid_results",
            f"the result says feasible={result.feasible}, its sample is feasible={feasible}",
        )
    return "", ""


def local_cqm(
    cqm: dimod.ConstrainedQuadraticModel, deadline: Deadline, solvers: SolversConfig, *, milp: bool = True
) -> Candidate:
    """The agent's own answer to a ``cqm`` job: HiGHS first (``milp``), else or then the penalty
    route's greedy descent, repaired; the better of what they found."""
    found = []
    if milp:
        found.append(solve_constrained("milp", solvers, ConstrainedJob(cqm, None), deadline))
        if found[-1].details.get("optimal"):
            return found[-1]
    job = constrained_job(cqm, solvers.penalty_max_interactions)
    found.append(solve_constrained("greedy", solvers, job, deadline))
    best = best_constrained(found)
    return best if best is not None else found[-1]
