"""Jobs from an MQTT shared subscription (``$share/qx-solvers/qx/v1/+/jobs``), results over MQTT.

The broker hands each job to one member of the group: mosquitto, EMQX, HiveMQ and VerneMQ do this for
MQTT 3.1.1 and MQTT 5 clients alike (``broker.protocol``). Brokers that grant ``$share`` and deliver
nothing (NATS, RabbitMQ, amqtt, aedes) are caught by the start-up probe. There is no redelivery to
another member: a job is acknowledged to the broker on receipt (QoS 1), so a worker that dies mid-job
loses it, and the agent falls back locally by its deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from qxedge.connectors.mqtt import BrokerConfig, MqttClient, Subscription
from qxedge.hybrid.transports.base import Delivery


class MqttTransport:
    def __init__(self, broker: BrokerConfig, subscription: str, worker_id: str) -> None:
        self.broker = broker
        self.subscription = subscription
        self.mqtt = MqttClient(broker, role=f"solver-{worker_id}")
        self.name = f"MQTT {broker.protocol} shared subscription {subscription} at {broker.url}"
        self._jobs: Subscription | None = None

    @property
    def connected(self) -> bool:
        return self.mqtt.connected

    async def __aenter__(self) -> MqttTransport:
        await self.mqtt.__aenter__()
        try:
            self._jobs = await self.mqtt.subscribe(self.subscription, qos=1)
        except BaseException:
            await self.mqtt.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.mqtt.__aexit__(*exc_info)

    async def deliveries(self) -> AsyncIterator[list[Delivery]]:
        assert self._jobs is not None, "MqttTransport used outside 'async with'"
        async for batch in self._jobs:
            yield [Delivery(topic, payload) for topic, payload in batch]

    async def publish(self, topic: str, payload: bytes, job_id: str | None = None) -> None:
        self.mqtt.publish(topic, payload, qos=1, correlation=job_id.encode() if job_id else None)

    def missing(self, stage: str = "jobs") -> str:
        if stage == "mqtt":
            return f"nothing speaks MQTT at {self.broker.url}"
        shared = self.subscription.startswith("$share/")
        if shared:
            return (
                f"the broker at {self.broker.url} granted {self.subscription} but delivered nothing: it "
                "does not support shared subscriptions (use transport kind nats or rabbitmq for NATS or "
                "RabbitMQ, or a broker with $share: mosquitto 2, EMQX, HiveMQ, VerneMQ)"
            )
        return f"the broker at {self.broker.url} delivered nothing on {self.subscription}"
