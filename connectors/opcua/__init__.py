"""OPC UA: subscriptions to monitored items in, setpoint writes with read-back out.

- :mod:`.config`: ``OpcUaConfig`` and its parts (security, nodes, setpoints), ``split_endpoint``; no asyncua;
- :mod:`.nodes`: node ids and browse paths of a config file, parsed without the OPC UA stack;
- ``_connector``: ``OpcUaConnector`` (asyncua), ``OpcUaStats``; ``_values``: notification values to
  readings and setpoints to variants; ``_pki``: certificate checks (``cryptography``);
- ``_browse``: ``browse_server`` (the address space below a root, for ``qxedge discover``);
  ``_session``: ``open_session`` (one short session: security, identity, errors that say what to
  change; ``check-config --connect`` and the browse use it).

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
    from qxedge.connectors.opcua._browse import BrowsedVariable, BrowseResult, browse_server
    from qxedge.connectors.opcua._connector import OpcUaConnector, OpcUaStats
    from qxedge.connectors.opcua._session import open_session

__all__ = [
    "BrowsePath",
    "BrowseResult",
    "BrowsedVariable",
    "NodeIdSpec",
    "OpcUaConfig",
    "OpcUaConnector",
    "OpcUaNode",
    "OpcUaSecurity",
    "OpcUaSetpoint",
    "OpcUaStats",
    "VariantName",
    "browse_server",
    "open_session",
    "parse_node",
    "split_endpoint",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "BrowseResult": "._browse",
        "BrowsedVariable": "._browse",
        "OpcUaConnector": "._connector",
        "OpcUaStats": "._connector",
        "browse_server": "._browse",
        "open_session": "._session",
    },
)
