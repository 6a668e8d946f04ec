"""The built-in MQTT JSON ingest: one more :class:`~qxedge.connectors.plant.ReadingSource`.

It subscribes the ``mqtt`` entries' topic filters on the agent's own plant-broker client. Each read
burst of the client (all that one wake-up read) is decoded right where it was read, with no task in
between, and goes to the agent in one ``link.readings(batch)``; what is invalid goes to ``rejected``
with the reason (the agent dead-letters it). With ``ack_after`` (the agent's, when the history upstream
is on) a burst's QoS 1 readings are acknowledged to the broker only once the history journal has them
on disk: an agent killed before then gets them again from its persistent session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from qxedge.connectors.mqtt import AckAfter, Message, MqttClient, MqttSourceConfig
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch, ReadingDecoder, Rejected, TopicPattern

log = logging.getLogger(__name__)

# (messages of the burst, the rejected ones, the receive time)
RejectedHandler = Callable[[int, list[Rejected], float], None]


class MqttIngest:
    """Readings of the ``mqtt`` connector entries, read by the agent's plant-broker client."""

    name = "mqtt"

    def __init__(
        self,
        mqtt: MqttClient,
        sources: Sequence[MqttSourceConfig],
        rejected: RejectedHandler,
        ack_after: AckAfter | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.sources = sources
        self.rejected = rejected
        self.ack_after = ack_after  # QoS 1 readings are acknowledged to the broker once it says so
        self.listening = asyncio.Event()  # every filter subscribed (or queued for the next connect)

    async def run(self, link: PlantLink) -> None:
        filters = []
        for cfg in self.sources:
            decoder = ReadingDecoder(TopicPattern(cfg.topic_pattern), cfg.max_payload_bytes, cfg.max_ahead_s)
            for topic_filter in cfg.topics:
                on_batch = partial(self._decode, link, decoder)
                await self.mqtt.subscribe(topic_filter, cfg.qos, on_batch=on_batch, ack_after=self.ack_after)
                filters.append(topic_filter)
        log.info("agent %s: listening on %s", link.site, ", ".join(filters))
        self.listening.set()
        await asyncio.get_running_loop().create_future()  # the client delivers until the agent stops

    def _decode(self, link: PlantLink, decoder: ReadingDecoder, messages: list[Message]) -> None:
        now = time.time()
        batch = ReadingBatch()
        rejected: list[Rejected] = []
        decoder.decode(messages, now, batch, rejected)
        if len(batch):
            link.readings(batch)
        self.rejected(len(messages), rejected, now)
