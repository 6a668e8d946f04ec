"""Protocol connectors: sources of readings and sinks of setpoints.

``mqtt``, ``opcua``, ``modbus`` and ``outbox`` are packages of a config module (no driver), pure logic
and a runtime imported on first use; ``sparkplug*``, ``simulator``, ``readings``, ``confirm``,
``broker_check`` and ``plant`` (the agent ↔ connector contract) are modules. docs/architecture.md maps
what lives where.

The names below are the public API, each imported from its module on first use.

Connectors import neither ``agent`` nor ``hybrid``; shared plumbing comes from ``qxedge.core``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.connectors.broker_check import check_mosquitto_conf
    from qxedge.connectors.embedded_broker import EmbeddedBroker
    from qxedge.connectors.plant import (
        AssetStats,
        Evaluation,
        EvaluationObserver,
        PlantConnector,
        PlantLink,
        ReadingSource,
        SetpointSink,
    )
    from qxedge.connectors.readings import ReadingBatch, ReadingDecoder, Rejected, TopicPattern
    from qxedge.connectors.simulator import SimulatedPlant, SimulatorConfig
    from qxedge.connectors.sparkplug import SparkplugConfig, SparkplugConnector

_HOME = {
    "AssetStats": ".plant",
    "EmbeddedBroker": ".embedded_broker",
    "Evaluation": ".plant",
    "EvaluationObserver": ".plant",
    "PlantConnector": ".plant",
    "PlantLink": ".plant",
    "ReadingBatch": ".readings",
    "ReadingDecoder": ".readings",
    "ReadingSource": ".plant",
    "Rejected": ".readings",
    "SetpointSink": ".plant",
    "SimulatedPlant": ".simulator",
    "SimulatorConfig": ".simulator",
    "SparkplugConfig": ".sparkplug",
    "SparkplugConnector": ".sparkplug",
    "TopicPattern": ".readings",
    "check_mosquitto_conf": ".broker_check",
}
__all__ = [  # what _HOME maps, spelled out for the tools
    "AssetStats",
    "EmbeddedBroker",
    "Evaluation",
    "EvaluationObserver",
    "PlantConnector",
    "PlantLink",
    "ReadingBatch",
    "ReadingDecoder",
    "ReadingSource",
    "Rejected",
    "SetpointSink",
    "SimulatedPlant",
    "SimulatorConfig",
    "SparkplugConfig",
    "SparkplugConnector",
    "TopicPattern",
    "check_mosquitto_conf",
]

__getattr__ = lazy_exports(__name__, _HOME)
