"""The qxedge edge agent: config, pipeline, features, inference, safety, decisions and the CLI.

The names below are the agent's public API, importable from ``qxedge.agent`` (each loads its module on
first use, so ``import qxedge.agent.config`` loads no runtime). Modules whose names start with ``_``
are private; the feature engines are in :mod:`qxedge.agent.features`, the plug points for connectors
in :mod:`qxedge.connectors.plant`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.agent.audit import AuditLog
    from qxedge.agent.cli import main
    from qxedge.agent.clock import Clock, SlotGrid
    from qxedge.agent.config import EdgeConfig, load_config
    from qxedge.agent.day import ProductionDay
    from qxedge.agent.features import FeatureEngine, Features, FeatureWindow
    from qxedge.agent.gate import SetpointGate
    from qxedge.agent.history import HistoryConfig, HistoryRecorder
    from qxedge.agent.inference import OnnxModel
    from qxedge.agent.orders import Order
    from qxedge.agent.pipeline import Agent, AgentStats, ModelStats
    from qxedge.agent.safety import Proposal, Safety, SafetyConfig, Verdict
    from qxedge.agent.telemetry import TelemetryConfig, TelemetryPublisher

_HOME = {
    "Agent": ".pipeline",
    "AgentStats": ".pipeline",
    "AuditLog": ".audit",
    "Clock": ".clock",
    "EdgeConfig": ".config",
    "FeatureEngine": ".features",
    "FeatureWindow": ".features",
    "Features": ".features",
    "HistoryConfig": ".history",
    "HistoryRecorder": ".history",
    "ModelStats": ".pipeline",
    "OnnxModel": ".inference",
    "Order": ".orders",
    "ProductionDay": ".day",
    "Proposal": ".safety",
    "Safety": ".safety",
    "SafetyConfig": ".safety",
    "SetpointGate": ".gate",
    "SlotGrid": ".clock",
    "TelemetryConfig": ".telemetry",
    "TelemetryPublisher": ".telemetry",
    "Verdict": ".safety",
    "load_config": ".config",
    "main": ".cli",
}
__all__ = [  # what _HOME maps, spelled out for the tools
    "Agent",
    "AgentStats",
    "AuditLog",
    "Clock",
    "EdgeConfig",
    "FeatureEngine",
    "FeatureWindow",
    "Features",
    "HistoryConfig",
    "HistoryRecorder",
    "ModelStats",
    "OnnxModel",
    "Order",
    "ProductionDay",
    "Proposal",
    "Safety",
    "SafetyConfig",
    "SetpointGate",
    "SlotGrid",
    "TelemetryConfig",
    "TelemetryPublisher",
    "Verdict",
    "load_config",
    "main",
]


__getattr__ = lazy_exports(__name__, _HOME)
