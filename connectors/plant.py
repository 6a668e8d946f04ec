"""The contract between the agent and a plant connector (OPC UA, Modbus TCP, Sparkplug B).

The MQTT JSON source is built into the agent's ingest loop; every other connector is an object that
satisfies :class:`PlantConnector`, built from its section of the config file (``connectors: - modbus:
{...}``) by that section's ``connector(name)`` method. The agent runs each connector's ``run(link)`` in
its TaskGroup and hands it a :class:`PlantLink`:

- ``link.readings(batch)`` delivers readings (called on the event loop; the batch joins the next
  evaluation exactly like readings that arrived over MQTT). A connector that reads back its writes
  delivers the value it read as a reading too, so the safety envelope's ``readback`` check applies;
- ``link.propose(asset, value, source, data_ts)`` submits a setpoint proposal from the plant side (a
  Sparkplug DCMD, say). It goes through the safety envelope like every other proposal.

Setpoints flow the other way only through the agent's setpoint gate: after the envelope allowed a value
and the audit log recorded it, the gate calls ``write(asset, value)`` on every connector whose
``writes(asset)`` is true. ``write`` raises :class:`~qxedge.core.errors.ConnectorError` when the device
refused or could not be reached; the gate audits that and raises an alarm. After each evaluation the agent
calls ``observe(asset, metrics, ts)`` with what it knows of the asset (latest readings, scores, the
setpoint), for connectors that publish upstream (the Sparkplug edge node); others ignore it.

``run`` never returns while the agent runs: it reconnects on its own (jittered exponential backoff) and
logs, rather than raising, what goes wrong with the device.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.readings import ReadingBatch


@dataclass(frozen=True, slots=True)
class PlantLink:
    site: str
    broker: BrokerConfig  # the plant broker (Sparkplug uses its own connection to it)
    readings: Callable[[ReadingBatch], None]
    propose: Callable[[str, float, str, float], Awaitable[None]]  # asset, value, source, data_ts


class PlantConnector(Protocol):
    name: str  # "modbus[1]": the config path, for logs and metrics

    async def run(self, link: PlantLink) -> None: ...

    def writes(self, asset: str) -> bool: ...

    async def write(self, asset: str, value: float) -> None: ...

    def observe(self, asset: str, metrics: Mapping[str, float], ts: float) -> None: ...
