"""What a solver worker needs of a job transport, as one narrow Protocol, and the deliveries it hands out.

A transport is an async context manager that hands over jobs in batches (:meth:`JobTransport.deliveries`)
and publishes results so that agents receive them over MQTT (:meth:`JobTransport.publish`). A job is
settled with :meth:`Delivery.ack` once its result is published: a worker that dies before that leaves the
job to be delivered again (to another worker on NATS and RabbitMQ; see each transport's docstring).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, Self


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Delivery:
    """One job message: the MQTT topic it was published on (``qx/v1/{site}/jobs``), its payload, whether
    the transport delivered it before (to this worker or another), and how to settle it."""

    topic: str
    payload: bytes
    redelivered: bool = False
    settle: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)
    acked: bool = False

    async def ack(self) -> None:
        """The job is answered: the transport may forget it (idempotent; a lost link is no error: the
        job is then delivered again and answered from the ledger)."""
        if not self.acked:
            self.acked = True
            await self.settle()


class JobTransport(Protocol):
    """Jobs in, results out. ``name`` says which broker feature carries the jobs, e.g. ``NATS
    JetStream work queue QX_JOBS (qx.v1.*.jobs) at nats://dc:4222``."""

    name: str

    @property
    def connected(self) -> bool: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def deliveries(self) -> AsyncIterator[list[Delivery]]:
        """Batches of jobs, as they come, until the transport is closed."""
        ...

    async def publish(self, topic: str, payload: bytes, job_id: str | None = None) -> None:
        """Send a result so that the agent subscribed to the MQTT ``topic`` receives it (QoS 1 where the
        broker allows); ``job_id`` is its MQTT 5 correlation data where the protocol has it."""
        ...

    def missing(self, stage: str = "jobs") -> str:
        """What the broker lacks, for the probe's failure: ``mqtt`` when nothing speaks MQTT at the
        agents' URL, ``jobs`` when probes published there never reach a worker through this transport."""
        ...


def topic_to_subject(topic: str) -> str:
    """An MQTT topic as NATS maps it to a subject, and RabbitMQ's MQTT plugin to a routing key:
    ``qx/v1/gumi/jobs`` → ``qx.v1.gumi.jobs``. A ``.`` inside a level becomes ``/`` (RabbitMQ's rule;
    on NATS, sites and job ids with dots are not supported)."""
    return topic.translate(_SWAP)


def subject_to_topic(subject: str) -> str:
    """The inverse of :func:`topic_to_subject`."""
    return subject.translate(_SWAP)


_SWAP = str.maketrans({"/": ".", ".": "/"})
