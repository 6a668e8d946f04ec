"""The agent's plug points for the plant side: a reading source, a setpoint sink, an evaluation observer.

Three narrow Protocols, like httpx transports: a connector implements the ones it serves, and the
agent sorts what each ``connectors:`` entry of the config builds (its section's ``connector(name)``)
by the Protocols it satisfies.

- :class:`ReadingSource` (OPC UA, Modbus TCP, Sparkplug B, the built-in MQTT JSON ingest): the agent
  runs ``run(link)`` in its TaskGroup and hands it a :class:`PlantLink`. ``link.readings(batch)``
  delivers readings (called on the event loop; the batch joins the next evaluation). A connector that
  reads back its writes delivers the value it read as a reading too, so the safety envelope's
  ``readback`` check applies. ``link.propose(asset, value, source, data_ts)`` submits a setpoint
  proposal from the plant side (a Sparkplug DCMD, say); it goes through the safety envelope like every
  other proposal. ``run`` never returns while the agent runs: it reconnects on its own (jittered
  exponential backoff) and logs, rather than raising, what goes wrong with the device.
- :class:`SetpointSink` (OPC UA, Modbus TCP): after the envelope allowed a value and the audit log
  recorded it, the agent's setpoint gate calls ``write(asset, value)`` on every sink whose
  ``writes(asset)`` is true. ``write`` raises :class:`~qxedge.core.errors.ConnectorError` when the
  device refused or could not be reached; the gate audits that and raises an alarm.
- :class:`EvaluationObserver` (the Sparkplug edge node, the telemetry publisher): after each evaluation
  the agent calls ``evaluated(evaluation)`` with an :class:`Evaluation`: every asset that got readings,
  a score or a new setpoint (or lost a signal out of the window), with all the agent knows of it, and
  the window's statistics of that evaluation. It runs on the event loop: keep it quick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.readings import ReadingBatch


@dataclass(frozen=True, slots=True)
class PlantLink:
    """What a :class:`ReadingSource` gets from the agent."""

    site: str
    broker: BrokerConfig  # the plant broker (Sparkplug uses its own connection to it)
    readings: Callable[[ReadingBatch], None]
    propose: Callable[[str, float, str, float], Awaitable[None]]  # asset, value, source, data_ts


class AssetStats(Protocol):
    """The window statistics of one evaluation (the agent's ``Features``)."""

    def by_asset(self, assets: Collection[str] | None = None) -> dict[str, dict[str, float]]:
        """``{asset: {"signal.stat": value}}`` of every asset (of ``assets`` when given)."""
        ...


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What an :class:`EvaluationObserver` hears after one evaluation."""

    ts: float  # when the evaluation ran (epoch s)
    # asset -> its signals' newest readings, ``score/<model>`` of every model's newest score, and
    # ``setpoint``: only the assets that changed in this evaluation
    assets: Mapping[str, Mapping[str, float]]
    features: AssetStats  # the statistics of every (asset, signal) in the window


@runtime_checkable
class ReadingSource(Protocol):
    name: str  # "modbus[1]": the config path, for logs and metrics

    async def run(self, link: PlantLink) -> None: ...


@runtime_checkable
class SetpointSink(Protocol):
    name: str

    def writes(self, asset: str) -> bool: ...

    async def write(self, asset: str, value: float) -> None: ...


@runtime_checkable
class EvaluationObserver(Protocol):
    name: str

    def evaluated(self, evaluation: Evaluation) -> None: ...


# what a ``connectors:`` section builds: a source, and maybe a sink and an observer too
PlantConnector = ReadingSource | SetpointSink | EvaluationObserver
