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
- is idempotent by ``(site, job_id)``: a duplicate delivery gets the cached result again, or waits for
  the solve in progress; it never solves twice. The cache is per worker (a redelivery after a worker
  died goes to another one) and bounded in results and in bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.ops_server import OpsConfig, OpsServer, OpsStats
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
    DecodeRate,
    Job,
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
    duplicates: int  # duplicate deliveries, answered from the cache or by the solve in progress
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


class FairShareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice_ms: int = Field(
        500, ge=10, description="a job runs this long before another site's waiting job may cut it"
    )
    half_life_s: float = Field(60.0, gt=0, description="how fast a site's past solver-seconds are forgiven")


class DataCenterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker_id: str | None = Field(None, description="default: <hostname>-<random>")
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
    cache_size: int = Field(10_000, ge=1, description="results kept for duplicate deliveries")
    cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="and their bytes at most")
    fair_share: FairShareConfig = Field(default_factory=FairShareConfig)


async def answer(portfolio: Portfolio, job: Job, worker: str, cut: JobCut | None = None) -> ResultEnvelope:
    """Solve ``job`` by its deadline (or by a ``cut``, the worker's fair share) and build its result."""
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
    best, candidates = await portfolio.solve(job.bqm, env.solver, job.deadline_at, cut)
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
    return ResultEnvelope(
        job_id=env.job_id,
        status="late" if late else "ok",
        reason="the answer is ready after the deadline" if late else cut.reason if cut else None,
        sample=best.sample,
        energy=best.energy,
        raw_energy=best.raw_best_energy,
        solver=best.solver,
        candidates=candidates,
        timings=timings,
        worker=worker,
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
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._inflight: set[tuple[str, str]] = set()  # queued or solving
        self._load: Counter[str] = Counter()  # jobs queued or solving, per site
        self._queues: dict[str, deque[tuple[tuple[str, str], Job, Delivery]]] = {}
        self._turn: deque[str] = deque()  # sites with queued jobs, least recent solver-seconds first
        self._queued = asyncio.Event()
        self._cache_bytes = 0
        self._usage = SiteUsage(config.fair_share.half_life_s)
        self._running: dict[tuple[str, str], _Running] = {}  # jobs being solved
        self._decode_rate = DecodeRate()  # how long large payloads take to parse here

    async def run(self, stop: asyncio.Event | None = None) -> None:
        await asyncio.to_thread(self.portfolio.warm_up)
        try:
            async with contextlib.AsyncExitStack() as stack:
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
                    loops = [tasks.create_task(self._consume(transport), name="solver-jobs")]
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
        )

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
                    (site, job_id) not in self._inflight and (site, job_id) not in self._cache
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
            return
        cached = self._cache.get(key)
        if cached is not None or key in self._inflight:
            self.counts["duplicates"] += 1
            if cached is not None:
                await transport.publish(job.envelope.reply_to, cached, key[1])
            await delivery.ack()
            return  # in flight: its result goes to the same reply_to when ready
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
        self, transport: JobTransport, key: tuple[str, str], job: Job, delivery: Delivery
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
            self._usage.add(key[0], sum(c.seconds for c in result.candidates))
            sent, payload = await self._publish(transport, job.envelope.reply_to, result, key[0])
            await delivery.ack()  # answered: the transport may forget the job
            if sent.status == "ok" and sent.solver:  # a result too large to send won nothing
                self.wins[sent.solver] += 1
                self.metrics.solve_seconds.labels(self.worker_id, sent.solver).observe(
                    sent.timings.get("solve_ms", 0) / 1000
                )
            self._remember(key, payload)
            log.info("job %s/%s: %s by %s, energy %s", *key, sent.status, sent.solver, sent.energy)
        finally:
            if run.timer is not None:
                run.timer.cancel()
            del self._running[key]
            self._inflight.discard(key)
            self._load[key[0]] -= 1

    def _remember(self, key: tuple[str, str], payload: bytes) -> None:
        """Cache a result for duplicate deliveries, within ``cache_size`` results and ``cache_bytes``."""
        self._cache[key] = payload
        self._cache_bytes += len(payload)
        while self._cache and (
            len(self._cache) > self.config.cache_size or self._cache_bytes > self.config.cache_bytes
        ):
            self._cache_bytes -= len(self._cache.popitem(last=False)[1])


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
