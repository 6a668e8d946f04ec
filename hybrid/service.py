"""``qxedge solver``: a data-center worker answering offloaded jobs.

N workers take jobs from one transport (:mod:`qxedge.hybrid.transports`): the shared subscription
``$share/qx-solvers/qx/v1/+/jobs`` (mosquitto, EMQX, HiveMQ, VerneMQ), a NATS JetStream work queue or a
RabbitMQ quorum queue; each job goes to one of them, so adding workers adds capacity with no
coordinator. At start a worker proves with a probe job that jobs reach it (:class:`Probe`), else it
stops with the missing broker feature named. A worker

- validates every job (:func:`hybrid.wire.decode_job`) and answers a bad one with a ``rejected``
  result carrying the reason; a job whose ``site`` does not match its topic is rejected too, and so is a
  large payload that could not even be parsed before its deadline (predicted from the parse times
  measured here);
- answers ``late`` at once when the deadline has passed before solving starts;
- solves with the portfolio and publishes the result on the job's ``reply_to`` (QoS 1), then acknowledges
  the job to its transport (a job is received in ``_accept``, answered and acked in ``_solve``;
  rejections and duplicates are answered and acked in ``_accept``); a result over
  ``limits.max_result_bytes`` is replaced by an ``error`` result saying so (it would not pass the broker);
- shares its solving time between sites (``fair_share``): a queue per site, and each free solving slot
  takes the next job of the site that used the fewest solver-seconds lately (decaying with
  ``half_life_s``), so one site flooding jobs cannot starve the others; a running job that has had
  ``slice_ms`` while another site's job waits for a slot is cut there (its solvers hand back their
  best-so-far, and its result says so), so one site's long job cannot make another's short jobs late;
  a job is refused when its site already has ``limits.max_jobs_in_flight_per_site`` jobs queued or
  solving;
- is idempotent by ``(site, job_id)`` across every worker sharing its job ledger
  (:mod:`qxedge.hybrid.ledger`: SQLite for one worker, PostgreSQL for a pool): it claims a job before
  solving it and records the result after answering; a duplicate delivery is answered with the
  recorded result, or, while another worker solves it, when that result lands (or solved here if
  that worker is gone: its claim expired, or it stopped writing its heartbeat, which every worker does
  every ``ledger.heartbeat_s`` from a task of its own, for ``ledger.holder_timeout_s``); it is never
  solved twice by live workers. A ledger that fails costs no answer: the job is solved unclaimed
  (``ledger_errors`` counts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.config import resolve_path
from qxedge.core.heap import freeze_start_up
from qxedge.core.ops_server import OpsConfig, OpsServer, OpsStats, check_listen
from qxedge.hybrid.ledger import (
    Claim,
    JobLedger,
    LedgerConfig,
    LedgerError,
    Outcome,
    UsageRow,
    keep_heartbeat,
    keep_ledger,
    open_ledger,
)
from qxedge.hybrid.metrics import SolverMetrics
from qxedge.hybrid.portfolio import JobCut, Portfolio, SolversConfig
from qxedge.hybrid.transports import (
    Delivery,
    JobTransport,
    Probe,
    ProbeConfig,
    TransportConfig,
    make_transport,
)
from qxedge.hybrid.transports.mqtt import MqttTransport
from qxedge.hybrid.wire import (
    BIG_PAYLOAD_BYTES,
    AnyJob,
    CqmJob,
    DecodeRate,
    JobLimits,
    JobRejected,
    ResultEnvelope,
    decode_job,
    peek_job_id,
    results_topic,
    site_of_topic,
    sized_payload,
)

log = logging.getLogger(__name__)

SHARED_JOBS = "$share/qx-solvers/qx/v1/+/jobs"


@dataclass(frozen=True, slots=True)
class SolverStats:
    """What a worker has done and holds, as of one moment (:meth:`SolverService.stats`)."""

    worker: str
    received: int  # messages on the jobs subscription
    duplicates: int  # duplicate deliveries, answered from the ledger or by the solve in progress
    unroutable: int  # messages on a topic that names no site
    results: Mapping[str, int]  # results published, by status (ok, late, rejected, error)
    by_site: Mapping[tuple[str, str], int]  # (site, status) -> results published
    wins: Mapping[str, int]  # solver -> jobs whose best answer it found
    queue_depth: int  # jobs accepted and not answered yet
    cut: int  # jobs cut to their site's fair share
    recycled: int  # solver processes stopped because their work overran
    solver_seconds: Mapping[str, float]  # site -> solver-seconds used
    broker_connected: bool
    ops: OpsStats | None  # the /metrics endpoint's connections (None while it does not listen)
    ledger_errors: int = 0  # ledger calls that failed (a job then solved unclaimed, or not recorded)
    took_over: int = 0  # claims taken over from a worker presumed gone (expired, redelivered, silent)
    pool: tuple[UsageRow, ...] = ()  # the usage of every worker sharing the ledger, per site (all kept)


class FairShareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice_ms: int = Field(
        500, ge=10, description="a job runs this long before another site's waiting job may cut it"
    )
    half_life_s: float = Field(60.0, gt=0, description="how fast a site's past solver-seconds are forgiven")


class DataCenterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker_id: str | None = Field(None, description="default: <hostname>-<random>")
    state_dir: Path | None = Field(
        None,
        description="what the worker keeps on disk (relative: to this file); default: $XDG_STATE_HOME/qxedge",
    )

    @field_validator("state_dir")
    @classmethod
    def _state_relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    broker: BrokerConfig = Field(
        default_factory=BrokerConfig, description="the MQTT broker the agents use (probes go through it)"
    )
    transport: TransportConfig = Field(default_factory=TransportConfig, description="where jobs come from")
    subscription: str = Field(SHARED_JOBS, description="transport kind mqtt: the jobs' (shared) subscription")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="the start-up proof that jobs arrive")
    limits: JobLimits = Field(default_factory=JobLimits)
    solvers: SolversConfig = Field(default_factory=SolversConfig)
    max_concurrent_jobs: int = Field(1, ge=1, le=1024, description="jobs solved at once by this worker")
    ops: OpsConfig | None = Field(None, description="/metrics, /healthz, /readyz over HTTP")
    fair_share: FairShareConfig = Field(default_factory=FairShareConfig)
    ledger: LedgerConfig = Field(
        default_factory=LedgerConfig, description="claims, results and per-site usage (docs/operations.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_cache(cls, data: object) -> object:
        if isinstance(data, dict) and (old := sorted({"cache_size", "cache_bytes"} & data.keys())):
            raise ValueError(
                f"{', '.join(old)}: the result cache is replaced by the job ledger (ledger:, "
                "docs/operations.md): remove these keys"
            )
        return data


async def answer(portfolio: Portfolio, job: AnyJob, worker: str, cut: JobCut | None = None) -> ResultEnvelope:
    """Solve ``job`` by its deadline (or by a ``cut``, the worker's fair share) and build its result; a
    ``cqm`` job's result also says whether its sample is ``feasible`` and its ``objective``."""
    env = job.envelope
    started = time.time()
    timings = {"queued_ms": round((started - job.received_at) * 1000, 3)}
    if started >= job.deadline_at:
        return ResultEnvelope(
            job_id=env.job_id,
            status="late",
            reason="the deadline passed before solving started",
            timings=timings,
            worker=worker,
        )
    if isinstance(job, CqmJob):
        best, candidates = await portfolio.solve_cqm(job.cqm, env.solver, job.deadline_at, cut)
    else:
        best, candidates = await portfolio.solve(job.model, env.solver, job.deadline_at, cut)
    timings["solve_ms"] = round((time.time() - started) * 1000, 3)
    if best is None:
        why = "; ".join(f"{c.solver}: {c.status} ({c.reason})" for c in candidates)
        return ResultEnvelope(
            job_id=env.job_id,
            status="error",
            reason=f"no solver produced an answer: {why}",
            candidates=candidates,
            timings=timings,
            worker=worker,
        )
    late = time.time() > job.deadline_at
    reason = "the answer is ready after the deadline" if late else cut.reason if cut else None
    if best.feasible is False:
        reason = "; ".join(filter(None, ["no feasible sample found by the deadline", reason]))
    return ResultEnvelope(
        job_id=env.job_id,
        status="late" if late else "ok",
        reason=reason,
        sample=best.sample,
        energy=best.energy,
        raw_energy=best.raw_best_energy,
        solver=best.solver,
        candidates=candidates,
        timings=timings,
        worker=worker,
        feasible=best.feasible,
        objective=best.objective,
    )


class SolverService:
    """One worker; ``await service.run(stop)`` until ``stop`` is set or the task is cancelled."""

    def __init__(self, config: DataCenterConfig, portfolio: Portfolio | None = None) -> None:
        self.config = config
        self.worker_id = config.worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.portfolio = portfolio or Portfolio(config.solvers)
        self.counts: Counter[str] = Counter()  # received, duplicates, unroutable, and results by status
        self.by_site: Counter[tuple[str, str]] = Counter()  # (site, status) -> results published
        self.wins: Counter[str] = Counter()
        self.transport: JobTransport | None = None
        self.probe = Probe(config.probe, self.worker_id)
        self.ops: OpsServer | None = None
        self.metrics = SolverMetrics(self.stats)
        self.ready = asyncio.Event()
        self.ledger: JobLedger | None = None  # open while run() runs
        self._pool: tuple[UsageRow, ...] = ()  # the ledger's usage, as last read
        self._tasks: asyncio.TaskGroup | None = None
        self._inflight: set[tuple[str, str]] = set()  # queued or solving
        self._waiting: set[tuple[str, str]] = set()  # duplicates waiting for another worker's record
        self._load: Counter[str] = Counter()  # jobs queued or solving, per site
        self._queues: dict[str, deque[tuple[tuple[str, str], AnyJob, Delivery]]] = {}
        self._turn: deque[str] = deque()  # sites with queued jobs, least recent solver-seconds first
        self._queued = asyncio.Event()
        self._usage = SiteUsage(config.fair_share.half_life_s)
        self._running: dict[tuple[str, str], _Running] = {}  # jobs being solved
        self._decode_rate = DecodeRate()  # how long large payloads take to parse here

    async def run(self, stop: asyncio.Event | None = None) -> None:
        check_listen(self.config.ops)  # a taken ops.port: said at once, not after the warm-up
        started_at = time.time()  # before any claim: a claim older than this is an earlier process's
        await asyncio.to_thread(self.portfolio.warm_up)
        freeze_start_up()  # what the start allocated, out of the collector's full passes
        try:
            async with contextlib.AsyncExitStack() as stack:
                ledger = self.ledger = await stack.enter_async_context(open_ledger(self.config.ledger))
                cfg = self.config
                made = make_transport(
                    cfg.transport, cfg.broker, cfg.subscription, self.worker_id, cfg.max_concurrent_jobs + 1
                )
                transport = self.transport = await stack.enter_async_context(made)
                if self.config.ops is not None:
                    self.ops = await stack.enter_async_context(
                        OpsServer(self.config.ops, self.metrics.registry, self._not_ready)
                    )
                async with asyncio.TaskGroup() as tasks:
                    self._tasks = tasks
                    loops = [tasks.create_task(self._consume(transport), name="solver-jobs")]
                    loops.append(
                        tasks.create_task(
                            keep_ledger(ledger, self.config.ledger, self._pool_usage), name="solver-ledger"
                        )
                    )
                    loops.append(
                        tasks.create_task(
                            keep_heartbeat(ledger, self.config.ledger, self.worker_id, started_at),
                            name="solver-heartbeat",
                        )
                    )
                    loops += [
                        tasks.create_task(self._work(transport), name=f"solver-slot-{i}")
                        for i in range(self.config.max_concurrent_jobs)
                    ]
                    if cfg.probe.enabled:
                        mqtt = transport.mqtt if isinstance(transport, MqttTransport) else None
                        took = await self.probe.run(transport, cfg.broker, mqtt)
                        log.info("solver %s: a probe job came through in %.3f s", self.worker_id, took)
                    self.ready.set()
                    log.info("solver %s: waiting for jobs through %s", self.worker_id, transport.name)
                    if stop is not None:
                        await stop.wait()
                        for task in loops:
                            task.cancel()
        finally:
            self._tasks = None
            self.portfolio.close()

    @property
    def queue_depth(self) -> int:
        return len(self._inflight)

    def stats(self) -> SolverStats:
        counts = self.counts
        return SolverStats(
            worker=self.worker_id,
            received=counts["received"],
            duplicates=counts["duplicates"],
            unroutable=counts["unroutable"],
            results={status: counts[status] for status in ("ok", "late", "rejected", "error")},
            by_site=dict(self.by_site),
            wins=dict(self.wins),
            queue_depth=self.queue_depth,
            cut=counts["cut"],
            recycled=self.portfolio.recycled,
            solver_seconds=dict(self._usage.total),
            broker_connected=self.transport is not None and self.transport.connected,
            ops=self.ops.stats() if self.ops is not None else None,
            ledger_errors=counts["ledger_errors"],
            took_over=counts["took_over"],
            pool=self._pool,
        )

    def _pool_usage(self, usage: list[UsageRow]) -> None:
        self._pool = tuple(usage)

    def _not_ready(self) -> str | None:
        if self.transport is None or not self.transport.connected:
            return f"not connected: {self.transport.name if self.transport else self.config.transport.kind}"
        return None if self.ready.is_set() else "starting"

    async def _consume(self, transport: JobTransport) -> None:
        async for batch in transport.deliveries():
            for delivery in batch:
                await self._accept(transport, delivery)

    async def _work(self, transport: JobTransport) -> None:
        """One solving slot: take the next job of the site that used the fewest solver-seconds lately."""
        while True:
            while not self._turn:
                self._queued.clear()
                await self._queued.wait()
            site = min(self._turn, key=self._usage.recent)  # the first of equals: round robin
            self._turn.remove(site)
            queue = self._queues[site]
            key, job, delivery = queue.popleft()
            if queue:
                self._turn.append(site)
            await self._solve(transport, key, job, delivery)

    async def _publish(
        self, transport: JobTransport, topic: str, result: ResultEnvelope, site: str
    ) -> tuple[ResultEnvelope, bytes]:
        sent, payload = sized_payload(result, self.config.limits.max_result_bytes)
        if sent is not result:
            log.warning("job %s/%s: %s", site, sent.job_id, sent.reason)
        await transport.publish(topic, payload, sent.job_id)
        self.counts[sent.status] += 1
        self.by_site[(site, sent.status)] += 1
        return sent, payload

    async def _accept(self, transport: JobTransport, delivery: Delivery) -> None:
        """A job received: rejected, a duplicate or a probe answered (and acked) here, else queued."""
        topic, payload = delivery.topic, delivery.payload
        site = site_of_topic(topic)
        if site is not None and self.probe.is_probe(site):
            if (answer := self.probe.answer(payload)) is not None:
                await transport.publish(*answer)
            await delivery.ack()
            return
        self.counts["received"] += 1
        if delivery.redelivered:
            log.info("job on %s: delivered again (a worker died or could not acknowledge it)", topic)
        if site is None:
            self.counts["unroutable"] += 1
            log.warning("ignored a message on %s: not a qx/v1/{site}/jobs topic", topic)
            await delivery.ack()
            return
        limit = self.config.limits.max_jobs_in_flight_per_site
        try:
            if self._load[site] >= limit:  # before decoding: a flood costs no parsing
                job_id = peek_job_id(payload)
                if job_id is None or (
                    (site, job_id) not in self._inflight and not await self._known(site, job_id)
                ):
                    raise JobRejected(
                        f"site {site!r} has {limit} jobs in flight (the limit): retry later", job_id
                    )
            try:
                limits, rate = self.config.limits, self._decode_rate
                if len(payload) > BIG_PAYLOAD_BYTES:  # parse a big model off the loop (keep-alive, sites)
                    job = await asyncio.to_thread(decode_job, payload, limits, topic_site=site, rate=rate)
                else:
                    job = decode_job(payload, limits, topic_site=site)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # what the checks missed
                if isinstance(exc, JobRejected):
                    raise
                raise JobRejected(f"invalid job ({type(exc).__name__}: {str(exc)[:160]})") from exc
            key = (site, job.envelope.job_id)
        except JobRejected as exc:
            log.info("rejected a job from %s: %s", site, exc)
            result = ResultEnvelope(
                job_id=exc.job_id, status="rejected", reason=str(exc), worker=self.worker_id
            )
            await self._publish(transport, results_topic(site, exc.job_id or "invalid"), result, site)
            await delivery.ack()
            await self._record(Outcome(site, None, self.worker_id, "rejected", time.time()))
            return
        if key in self._inflight or key in self._waiting:
            self.counts["duplicates"] += 1
            await delivery.ack()
            return  # in flight: its result goes to the same reply_to when ready
        # a work queue delivers a job again when the worker holding it is gone (NATS, RabbitMQ): take
        # its claim over now, not after the deadline
        claim = await self._claim(key, job, holder_gone=delivery.redelivered)
        if claim.state == "claimed":
            self._enqueue(key, job, delivery)
        else:
            self.counts["duplicates"] += 1
            await self._duplicate(transport, key, job, claim)
            await delivery.ack()

    def _enqueue(self, key: tuple[str, str], job: AnyJob, delivery: Delivery) -> None:
        site = key[0]
        self._inflight.add(key)
        self._load[site] += 1
        if site not in self._queues or not self._queues[site]:
            self._queues.setdefault(site, deque())
            self._turn.append(site)
        self._queues[site].append((key, job, delivery))
        log.debug("job %s/%s: queued", *key)
        self._queued.set()
        asyncio.get_running_loop().call_soon(self._share)  # after a free slot has taken it

    def _share(self) -> None:
        """Cut each running job that has had its slice while another site's job waits for a slot; for
        one that has not had it yet, look again when it will have."""
        waiting = set(self._turn)
        if not waiting:
            return
        now, loop = time.time(), asyncio.get_running_loop()
        for run in self._running.values():
            others = waiting - {run.site}
            if run.cut.reason is not None or not others:
                continue
            ran = now - run.started
            if ran >= self._slice_s:
                self.counts["cut"] += 1
                run.cut.cut(
                    f"cut to site {run.site!r}'s fair share after {ran:.2f} s "
                    f"(jobs of {len(others)} other site(s) waiting)"
                )
            elif run.timer is None:
                run.timer = loop.call_later(self._slice_s - ran, self._share)

    @property
    def _slice_s(self) -> float:
        return self.config.fair_share.slice_ms / 1000

    async def _solve(
        self, transport: JobTransport, key: tuple[str, str], job: AnyJob, delivery: Delivery
    ) -> None:
        run = self._running[key] = _Running(key[0], time.time(), JobCut())
        try:
            try:
                result = await answer(self.portfolio, job, self.worker_id, run.cut)
            except Exception as exc:  # a bug must cost one job, not the worker
                log.exception("job %s/%s failed", *key)
                result = ResultEnvelope(
                    job_id=key[1],
                    status="error",
                    worker=self.worker_id,
                    reason=f"internal error: {type(exc).__name__}: {exc}"[:300],
                )
            seconds = sum(c.seconds for c in result.candidates)
            self._usage.add(key[0], seconds)
            sent, payload = await self._publish(transport, job.envelope.reply_to, result, key[0])
            await delivery.ack()  # answered: the transport may forget the job
            win = sent.solver if sent.status == "ok" else None  # a result too large to send won nothing
            if win:
                self.wins[win] += 1
                self.metrics.solve_seconds.labels(self.worker_id, win).observe(
                    sent.timings.get("solve_ms", 0) / 1000
                )
            await self._record(
                Outcome(
                    *key,
                    self.worker_id,
                    sent.status,
                    time.time(),
                    solver=win,
                    solver_seconds=seconds,
                    received_at=job.received_at,
                    deadline_at=job.deadline_at,
                    result=payload,
                )
            )
            log.info("job %s/%s: %s by %s, energy %s", *key, sent.status, sent.solver, sent.energy)
        finally:
            if run.timer is not None:
                run.timer.cancel()
            del self._running[key]
            self._inflight.discard(key)
            self._load[key[0]] -= 1

    # the job ledger: a claim before solving, a record after answering, duplicates answered from it

    def _ledger(self) -> JobLedger:
        if self.ledger is None:
            raise LedgerError("the job ledger is not open (SolverService.run opens it)")
        return self.ledger

    def _ledger_failed(self, exc: LedgerError) -> None:
        self.counts["ledger_errors"] += 1
        log.warning("%s", exc)

    async def _claim(self, key: tuple[str, str], job: AnyJob, *, holder_gone: bool = False) -> Claim:
        """The ledger's claim; where the ledger fails, a claim of our own: the job is answered (a
        second worker may solve it too: wasted work, never a lost answer)."""
        try:
            claim = await self._ledger().claim(
                *key, self.worker_id, job.deadline_at, time.time(), holder_gone=holder_gone
            )
        except LedgerError as exc:
            self._ledger_failed(exc)
            return Claim("claimed", self.worker_id, job.deadline_at)
        if claim.took_over is not None:
            self.counts["took_over"] += 1
            why = claim.gone or (
                "redelivered: its holder is gone" if holder_gone else "its deadline and grace are over"
            )
            log.warning("job %s/%s: took over the claim of worker %s (%s)", *key, claim.took_over, why)
        return claim

    async def _record(self, outcome: Outcome) -> None:
        try:
            await self._ledger().record(outcome)
        except LedgerError as exc:
            self._ledger_failed(exc)

    async def _known(self, site: str, job_id: str) -> bool:
        """Whether the ledger holds the job (answered, or being solved): a duplicate, not a new job."""
        try:
            return await self._ledger().lookup(site, job_id) is not None
        except LedgerError as exc:
            self._ledger_failed(exc)
            return False

    async def _duplicate(
        self, transport: JobTransport, key: tuple[str, str], job: AnyJob, claim: Claim
    ) -> None:
        """Answer a duplicate from the ledger's record, or wait for the record of the worker solving it."""
        if claim.result is not None:
            await transport.publish(job.envelope.reply_to, claim.result, key[1])
        elif self._tasks is not None:
            self._waiting.add(key)
            self._tasks.create_task(self._await_record(transport, key, job), name=f"solver-await-{key[1]}")

    async def _await_record(self, transport: JobTransport, key: tuple[str, str], job: AnyJob) -> None:
        """Another worker is solving ``job``: answer with its result when recorded; when its claim
        expires unanswered or its worker is gone (silent for ``holder_timeout_s``: it died), claim the
        job and solve it here."""
        pause = 0.005
        try:
            while True:
                await asyncio.sleep(pause)
                pause = min(2 * pause, 0.25)
                expired = time.time() >= job.deadline_at + self.config.ledger.claim_grace_s
                try:
                    claim = await self._ledger().lookup(*key)
                except LedgerError as exc:
                    self._ledger_failed(exc)
                    if not expired:
                        continue  # the claim's holder answers meanwhile
                    claim = None  # then a claim of our own (see _claim): the job is answered
                if claim is None or (
                    claim.state == "pending" and (claim.gone is not None or claim.expires_at <= time.time())
                ):
                    claim = await self._claim(key, job)
                if claim.state == "recorded":
                    await self._duplicate(transport, key, job, claim)
                    return
                if claim.state == "claimed":
                    self._waiting.discard(key)  # before it is queued: a duplicate now finds it there
                    if key not in self._inflight:
                        self._enqueue(key, job, Delivery(f"qx/v1/{key[0]}/jobs", b"", acked=True))
                    return
        finally:
            self._waiting.discard(key)


@dataclass(slots=True)
class _Running:
    site: str
    started: float  # epoch s
    cut: JobCut
    timer: asyncio.TimerHandle | None = None


class SiteUsage:
    """Solver-seconds per site: in all, and recent ones decaying with a half-life (the fair share)."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.total: dict[str, float] = {}
        self._recent: dict[str, tuple[float, float]] = {}  # site -> (solver-seconds, as of monotonic s)

    def recent(self, site: str) -> float:
        value, stamp = self._recent.get(site, (0.0, 0.0))
        return value * math.exp2(-(time.monotonic() - stamp) / self.half_life_s)

    def add(self, site: str, seconds: float) -> None:
        self.total[site] = self.total.get(site, 0.0) + seconds
        self._recent[site] = (self.recent(site) + seconds, time.monotonic())
