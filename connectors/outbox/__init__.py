"""The disk-backed store-and-forward outbox upstream (SQLite, in-order QoS 1, optional confirmations).

- :mod:`.config`: ``OutboxConfig`` (pydantic only);
- ``_outbox``: ``Outbox``, ``OutboxError`` (the runtime; it drives an ``MqttClient``), imported on
  first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.connectors.outbox.config import OutboxConfig
from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.connectors.outbox._outbox import Outbox, OutboxError

__all__ = ["Outbox", "OutboxConfig", "OutboxError"]

__getattr__ = lazy_exports(__name__, {"Outbox": "._outbox", "OutboxError": "._outbox"})
