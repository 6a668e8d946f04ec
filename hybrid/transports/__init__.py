"""Job transports of the solver workers: where jobs come from and how results go back, behind one
narrow Protocol (:class:`JobTransport`), so that workers run on the brokers and queues data centers run.

- ``mqtt``: an MQTT shared subscription (``$share/qx-solvers/qx/v1/+/jobs``; MQTT 3.1.1 or 5);
- ``nats``: a NATS JetStream work queue on ``qx.v1.*.jobs``, fed by NATS's MQTT (explicit acks,
  redelivery to another worker when one dies);
- ``rabbitmq``: a RabbitMQ quorum queue bound to the MQTT plugin's ``amq.topic`` with ``qx.v1.*.jobs``
  (competing consumers, manual acks).

Agents speak MQTT on every one; results reach them over MQTT. :class:`Probe` proves at start that jobs
reach a worker. ``config`` is pydantic only; nats-py and aio-pika are imported when their transport is
made (:func:`make_transport`).
"""

from __future__ import annotations

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.hybrid.transports.base import Delivery, JobTransport, subject_to_topic, topic_to_subject
from qxedge.hybrid.transports.config import ProbeConfig, TransportConfig, TransportKind
from qxedge.hybrid.transports.probe import Probe

__all__ = [
    "Delivery",
    "JobTransport",
    "Probe",
    "ProbeConfig",
    "TransportConfig",
    "TransportKind",
    "make_transport",
    "subject_to_topic",
    "topic_to_subject",
]


def make_transport(
    config: TransportConfig, broker: BrokerConfig, subscription: str, worker_id: str, prefetch: int
) -> JobTransport:
    """The transport ``config`` names (not connected yet: ``async with`` it). ``broker`` is the MQTT
    broker the agents use (the transport itself for kind mqtt); ``prefetch``, the jobs held at once."""
    if config.kind == "nats":
        from qxedge.hybrid.transports.nats import NatsTransport

        return NatsTransport(config, broker, worker_id, config.prefetch or prefetch)
    if config.kind == "rabbitmq":
        from qxedge.hybrid.transports.rabbitmq import RabbitTransport

        return RabbitTransport(config, broker, worker_id, config.prefetch or prefetch)
    from qxedge.hybrid.transports.mqtt import MqttTransport

    return MqttTransport(broker, subscription, worker_id)
