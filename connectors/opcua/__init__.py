"""OPC UA: subscriptions to monitored items in, setpoint writes with read-back out.

- :mod:`.config`: ``OpcUaConfig`` and its parts (security, nodes, setpoints), ``split_endpoint``; no asyncua;
- :mod:`.nodes`: node ids and browse paths of a config file, parsed without the OPC UA stack;
- ``_connector``: ``OpcUaConnector`` (asyncua), ``OpcUaStats``; ``_values``: notification values to
  readings and setpoints to variants; ``_pki``: certificate checks (``cryptography``).

The runtime names are imported on first use (:mod:`qxedge.core.lazy`): loading a config that has no OPC
UA connector imports no asyncua.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.connectors.opcua.config import (
    OpcUaConfig,
    OpcUaNode,
    OpcUaSecurity,
    OpcUaSetpoint,
    VariantName,
    split_endpoint,
)
from qxedge.connectors.opcua.nodes import BrowsePath, NodeIdSpec, parse_node
from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.connectors.opcua._connector import OpcUaConnector, OpcUaStats

__all__ = [
    "BrowsePath",
    "NodeIdSpec",
    "OpcUaConfig",
    "OpcUaConnector",
    "OpcUaNode",
    "OpcUaSecurity",
    "OpcUaSetpoint",
    "OpcUaStats",
    "VariantName",
    "parse_node",
    "split_endpoint",
]

__getattr__ = lazy_exports(__name__, {"OpcUaConnector": "._connector", "OpcUaStats": "._connector"})
