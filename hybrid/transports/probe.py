"""The start-up probe: proof that jobs reach this worker through its transport, and results the agents.

The worker publishes a probe job over MQTT, as an agent does (``qx/v1/{probe.site}/jobs``, QoS 1), and
waits on ``qx/v1/{probe.site}/results/+`` over MQTT. Every worker answers a probe it receives at once,
without solving (:meth:`Probe.answer`): a probe another worker took is answered by it, and this worker
sends the next one, until one reaches itself and its answer comes back. Otherwise, after ``timeout_s``,
:class:`~qxedge.core.errors.TransportError` says what is missing: the broker's MQTT, the broker feature
that should carry jobs to the worker (``JobTransport.missing``), or the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import dimod
from pydantic import ValidationError

from qxedge.connectors.mqtt import BrokerConfig, MqttClient, Subscription
from qxedge.core.errors import BrokerUnavailable, ConnectorError, TransportError
from qxedge.hybrid.transports.base import JobTransport
from qxedge.hybrid.transports.config import ProbeConfig
from qxedge.hybrid.wire import JobEnvelope, ResultEnvelope, jobs_topic, peek_job_id, results_topic

log = logging.getLogger(__name__)


class Probe:
    """One worker's probes: what it sent, whether one reached it, and the answers to anyone's probes."""

    def __init__(self, config: ProbeConfig, worker_id: str) -> None:
        self.config = config
        self.worker_id = worker_id
        self.sent: set[str] = set()
        self.reached = 0  # probes of this worker that came back to it through the transport
        self.answered = 0  # probes (anyone's) this worker answered

    def is_probe(self, site: str) -> bool:
        return site == self.config.site

    def job(self) -> tuple[str, bytes]:
        job_id = f"probe-{self.worker_id}-{uuid.uuid4().hex[:8]}"
        self.sent.add(job_id)
        site = self.config.site
        envelope = JobEnvelope(
            v=1,
            job_id=job_id,
            site=site,
            problem=dimod.BinaryQuadraticModel({"x": 0.0}, {}, 0.0, "BINARY").to_serializable(
                use_bytes=False
            ),
            deadline_ms=max(50, round(self.config.timeout_s * 1000)),
            submitted_at=time.time(),
            solver="exact",
            reply_to=results_topic(site, job_id),
            meta={"probe": self.worker_id},
        )
        return job_id, envelope.model_dump_json().encode()

    def answer(self, payload: bytes) -> tuple[str, bytes, str] | None:
        """The answer to a probe job (topic, payload, job id), None when it names no job."""
        job_id = peek_job_id(payload)
        if job_id is None:
            return None
        if job_id in self.sent:
            self.reached += 1
        self.answered += 1
        result = ResultEnvelope(
            job_id=job_id,
            status="rejected",
            reason="a start-up probe: answered, not solved",
            worker=self.worker_id,
        )
        return results_topic(self.config.site, job_id), result.payload(), job_id

    async def run(
        self, transport: JobTransport, broker: BrokerConfig, mqtt: MqttClient | None = None
    ) -> float:
        """Probe until one of this worker's probes has come back to it and its answer over MQTT; the
        seconds it took. TransportError naming what is missing otherwise."""
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            if mqtt is None:
                try:
                    mqtt = await stack.enter_async_context(
                        MqttClient(
                            broker.model_copy(update={"persistent_session": False}), role="solver-probe"
                        )
                    )
                except BrokerUnavailable as exc:
                    raise TransportError(f"{transport.missing('mqtt')} ({exc})") from exc
            try:
                results = await mqtt.subscribe(results_topic(self.config.site, "+"), qos=1)
            except ConnectorError as exc:
                raise TransportError(
                    f"the start-up probe cannot subscribe to its results ({exc}): let the workers' user "
                    f"read qx/v1/{self.config.site}/results/# and write qx/v1/{self.config.site}/jobs"
                ) from exc
            others = 0
            deadline = started + self.config.timeout_s
            while time.monotonic() < deadline:
                job_id, payload = self.job()
                mqtt.publish(jobs_topic(self.config.site), payload, qos=1)
                answered_by = await self._await_answer(results, job_id, deadline)
                if answered_by == self.worker_id:
                    return time.monotonic() - started
                if answered_by is not None:
                    others += 1
        if self.reached:
            why = (
                f"probes reached this worker through {transport.name}, but their answers never came back "
                f"over MQTT at {broker.url} on {results_topic(self.config.site, '+')}"
            )
        elif others:
            why = (
                f"{others} probe(s) were answered by other workers, none reached this one through "
                f"{transport.name}"
            )
        else:
            why = transport.missing("jobs")
        raise TransportError(
            f"no job reaches this worker (start-up probe, {self.config.timeout_s:g} s): {why}"
        )

    async def _await_answer(self, results: Subscription, job_id: str, deadline: float) -> str | None:
        """The worker that answered ``job_id``, None when no answer came by the deadline."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while True:
                    for _topic, payload in await results.next_batch():
                        with contextlib.suppress(ValidationError):
                            result = ResultEnvelope.model_validate_json(payload)
                            if result.job_id == job_id:
                                return result.worker or "?"
        except TimeoutError:
            return None
