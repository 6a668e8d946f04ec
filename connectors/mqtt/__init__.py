"""MQTT: the broker link every other part of qxedge talks through.

- :mod:`.config`: ``BrokerConfig`` (URL, credentials, TLS, backoff), ``TlsConfig``, ``MqttSourceConfig``
  and ``split_url``: pydantic only, no paho client;
- :mod:`.topics`: qxedge's topics (``site_topic``) and topic filters (validity, matching, overlap), pure;
- ``_client``: ``MqttClient`` (paho driven by the event loop, messages in batches), ``Subscription``,
  ``Publication``, ``each_message``; ``_matcher``: paho's topic matcher with cached answers.

The runtime names are imported on first use (:mod:`qxedge.core.lazy`): ``from qxedge.connectors.mqtt
import BrokerConfig`` loads no paho client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.connectors.mqtt.config import BrokerConfig, MqttSourceConfig, TlsConfig, split_url
from qxedge.connectors.mqtt.topics import NAMESPACE, check_filter, filters_overlap, site_topic, topic_matches
from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.connectors.mqtt._client import (
        AckAfter,
        Message,
        MqttClient,
        PendingAcks,
        Publication,
        Subscription,
        each_message,
    )
    from qxedge.connectors.mqtt._matcher import CachedMatcher

__all__ = [
    "NAMESPACE",
    "AckAfter",
    "BrokerConfig",
    "CachedMatcher",
    "Message",
    "MqttClient",
    "MqttSourceConfig",
    "PendingAcks",
    "Publication",
    "Subscription",
    "TlsConfig",
    "check_filter",
    "each_message",
    "filters_overlap",
    "site_topic",
    "split_url",
    "topic_matches",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "AckAfter": "._client",
        "Message": "._client",
        "MqttClient": "._client",
        "PendingAcks": "._client",
        "Publication": "._client",
        "Subscription": "._client",
        "each_message": "._client",
        "CachedMatcher": "._matcher",
    },
)
