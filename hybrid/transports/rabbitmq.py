"""Jobs from a RabbitMQ quorum queue bound to the MQTT plugin's exchange, results back through it.

RabbitMQ's MQTT plugin publishes an agent's ``qx/v1/{site}/jobs`` to the topic exchange ``amq.topic``
(its ``mqtt.exchange``) with the routing key ``qx.v1.{site}.jobs``. Every worker declares the same
durable quorum queue (``queue``), bound with ``qx.v1.*.jobs``, and consumes it with manual acks and a
prefetch of ``prefetch`` jobs: competing consumers, each job to one worker. A worker whose connection
drops (it died) has its unacknowledged jobs put back in the queue at once, for another worker, flagged
``redelivered``.

Results are published to the same exchange with the result topic's routing key (publisher confirms on),
so the MQTT plugin hands them to the agent's subscription on ``qx/v1/{site}/results/+``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.config import redact_url
from qxedge.core.errors import TransportError
from qxedge.hybrid.transports.base import Delivery, subject_to_topic, topic_to_subject
from qxedge.hybrid.transports.config import TransportConfig

log = logging.getLogger(__name__)

JOBS_ROUTING_KEY = "qx.v1.*.jobs"  # what the MQTT topics qx/v1/+/jobs map to
_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, OSError, TimeoutError)


class RabbitTransport:
    def __init__(self, config: TransportConfig, broker: BrokerConfig, worker_id: str, prefetch: int) -> None:
        assert config.url is not None  # checked by TransportConfig
        self.config = config
        self.broker = broker
        self.worker_id = worker_id
        self.prefetch = prefetch
        self.name = (
            f"RabbitMQ quorum queue {config.queue} bound to {config.exchange} ({JOBS_ROUTING_KEY}) "
            f"at {config.url}"
        )
        self._conn: Any = None
        self._exchange: Any = None
        self._queue: Any = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def __aenter__(self) -> RabbitTransport:
        cfg = self.config
        try:
            self._conn = await aio_pika.connect_robust(
                cfg.amqp_url(),
                timeout=10,
                client_properties={"connection_name": f"qxedge-solver-{self.worker_id}"},
            )
        except _AMQP_ERRORS as exc:
            raise TransportError(
                f"RabbitMQ: cannot connect to {redact_url(cfg.url or '')}: {exc or type(exc).__name__}"
            ) from exc
        try:
            channel = await self._conn.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            try:
                self._exchange = await channel.get_exchange(cfg.exchange, ensure=True)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                raise TransportError(
                    f"RabbitMQ: no exchange {cfg.exchange} (the MQTT plugin's mqtt.exchange) at {cfg.url}"
                ) from exc
            self._queue = await channel.declare_queue(
                cfg.queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await self._queue.bind(self._exchange, routing_key=JOBS_ROUTING_KEY)
        except BaseException as exc:
            await self._conn.close()
            if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
                raise TransportError(
                    f"RabbitMQ: the queue {cfg.queue} exists with other arguments (it must be a durable "
                    f"quorum queue): {exc}"
                ) from exc
            if isinstance(exc, _AMQP_ERRORS):
                raise TransportError(f"RabbitMQ: cannot set up the queue {cfg.queue}: {exc}") from exc
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def deliveries(self) -> AsyncIterator[list[Delivery]]:
        async with self._queue.iterator() as messages:
            async for message in messages:
                yield [
                    Delivery(
                        subject_to_topic(message.routing_key or ""),
                        message.body,
                        redelivered=bool(message.redelivered),
                        settle=functools.partial(self._ack, message),
                    )
                ]

    async def _ack(self, message: Any) -> None:
        try:
            await message.ack()
        except _AMQP_ERRORS as exc:  # the channel is gone: the job is requeued, answered from the ledger
            log.warning("RabbitMQ: could not acknowledge a job (%s): it will be delivered again", exc)
        raise_if_cancelling()  # aio-pika waits with asyncio.wait_for: it may drop a cancel

    async def publish(self, topic: str, payload: bytes, job_id: str | None = None) -> None:
        message = aio_pika.Message(
            payload,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=job_id,
            headers={"x-mqtt-publish-qos": 1},
        )
        try:
            await self._exchange.publish(message, routing_key=topic_to_subject(topic), timeout=10)
        except _AMQP_ERRORS as exc:
            log.warning("RabbitMQ: could not publish the result on %s: %s", topic, exc)
        raise_if_cancelling()

    def missing(self, stage: str = "jobs") -> str:
        if stage == "mqtt":
            return (
                f"RabbitMQ: the MQTT plugin is not enabled (nothing speaks MQTT at {self.broker.url}: "
                "rabbitmq-plugins enable rabbitmq_mqtt; RabbitMQ 3.x speaks MQTT 3.1.1 only)"
            )
        return (
            f"RabbitMQ: jobs published over MQTT at {self.broker.url} never reached the queue "
            f"{self.config.queue} (bound to {self.config.exchange} with {JOBS_ROUTING_KEY}): is the MQTT "
            f"plugin's exchange (mqtt.exchange) {self.config.exchange}, on the same vhost (mqtt.vhost)?"
        )
