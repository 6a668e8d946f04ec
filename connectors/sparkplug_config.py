"""Sparkplug B config: ``SparkplugConfig`` (the agent as an edge node) and ``SparkplugSourceConfig`` (the
plant's edge nodes it reads), and the rule for Sparkplug ids.

Pydantic only: importing this module imports no paho client and no protobuf (the runtime, in
:mod:`qxedge.connectors.sparkplug`, is imported when ``SparkplugConfig.connector`` is called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from qxedge.connectors.sparkplug import SparkplugConnector

_FORBIDDEN = frozenset("/+#")


def check_id(value: str, what: str) -> str:
    """A Sparkplug id (group, edge node, device, host): non-empty UTF-8 without ``/``, ``+`` or ``#``."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    bad = sorted(_FORBIDDEN.intersection(value))
    if bad:
        raise ValueError(f"{what} {value!r} contains {' '.join(bad)}: not allowed in a Sparkplug id")
    if value != value.strip():
        raise ValueError(f"{what} {value!r} has leading or trailing spaces")
    return value


def _patterns(patterns: list[str]) -> list[str]:
    for p in patterns:
        if not p.strip():
            raise ValueError("an empty pattern matches nothing: remove it")
    return patterns


class SparkplugSourceConfig(BaseModel):
    """Which Sparkplug edge nodes of the plant to read."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(min_length=1, description="Sparkplug group ids to read")
    nodes: list[str] = Field(["*"], min_length=1, description="edge node ids (shell patterns) to read")
    max_payload_bytes: int = Field(262_144, ge=64, le=16 * 1024 * 1024)
    max_ahead_s: float = Field(300.0, gt=0, description="metrics stamped further in the future are skipped")
    rebirth_interval_s: float = Field(
        10.0, gt=0, description="at most one rebirth request (NCMD) per edge node in this time"
    )

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, groups: list[str]) -> list[str]:
        return [check_id(g, "group id") for g in groups]

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: list[str]) -> list[str]:
        for n in _patterns(nodes):
            if "/" in n or "#" in n or "+" in n:
                raise ValueError(f"edge node pattern {n!r}: use shell patterns (* ?), not / + #")
        return nodes


class SparkplugConfig(BaseModel):
    """The agent as a Sparkplug B v3.0 edge node on the plant broker, and optionally a Sparkplug source."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(description="Sparkplug group id of the agent's edge node")
    edge_node_id: str = Field(description="the agent's edge node id")
    primary_host_id: str | None = Field(
        None,
        description="wait for this host's spBv1.0/STATE online before the births; "
        "end the session (NDEATH) when it goes offline",
    )
    devices: list[str] = Field(["*"], description="assets published as devices (shell patterns); [] = none")
    metrics: list[str] = Field(
        ["*"], min_length=1, description="metric keys published (shell patterns: temp, score/*, setpoint)"
    )
    device_separator: str = Field(":", description="replaces / of asset ids in device ids")
    setpoint_metric: str | None = Field(
        "setpoint", description="the metric a DCMD may write (a setpoint proposal); null: read-only"
    )
    deadband: float = Field(0.0, ge=0, description="DDATA only for changes larger than this (0: any change)")
    source: SparkplugSourceConfig | None = Field(None, description="read Sparkplug edge nodes of the plant")

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value, "id")

    @field_validator("devices", "metrics")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        return _patterns(patterns)

    @field_validator("device_separator")
    @classmethod
    def _check_separator(cls, sep: str) -> str:
        if len(sep) != 1 or sep in "/+#" or sep.isspace():
            raise ValueError(f"one character other than / + # or a space, got {sep!r}")
        return sep

    @field_validator("setpoint_metric")
    @classmethod
    def _check_metric(cls, name: str | None) -> str | None:
        if name is not None and not name.strip():
            raise ValueError("empty metric name")
        return name

    def connector(self, name: str) -> SparkplugConnector:
        from qxedge.connectors.sparkplug import SparkplugConnector

        return SparkplugConnector(self, name)
