"""The bottom layer: what every other qxedge package shares and nothing protocol-specific.

- ``errors``: the one exception root (``QxError``) and its tree;
- ``backoff``: the one jittered exponential backoff of every reconnect loop;
- ``config``: helpers of config models (relative paths, password files, service URLs without passwords);
- ``lazy``: package exports imported on first use (a config loads no driver);
- ``state``: where a process keeps its state on disk;
- ``cancels``: the cancel check around blocking awaits;
- ``ops_server``: the ``/metrics``, ``/healthz`` and ``/readyz`` endpoint of a long-running process.

It imports no other qxedge package. The names below are its public API, each imported from its module
on first use (``from qxedge.core import QxError`` loads neither pydantic nor prometheus_client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.core.backoff import Backoff
    from qxedge.core.cancels import raise_if_cancelling
    from qxedge.core.config import read_secret, redact_url, resolve_path, split_service_url
    from qxedge.core.errors import (
        AuditError,
        BrokerUnavailable,
        ConfigError,
        ConnectorError,
        ModelError,
        PayloadError,
        Problem,
        QxError,
        RejectCode,
        TransportError,
    )
    from qxedge.core.ops_server import OpsConfig, OpsServer, OpsStats
    from qxedge.core.state import state_dir

_HOME = {
    "AuditError": ".errors",
    "Backoff": ".backoff",
    "BrokerUnavailable": ".errors",
    "ConfigError": ".errors",
    "ConnectorError": ".errors",
    "ModelError": ".errors",
    "OpsConfig": ".ops_server",
    "OpsServer": ".ops_server",
    "OpsStats": ".ops_server",
    "PayloadError": ".errors",
    "Problem": ".errors",
    "QxError": ".errors",
    "RejectCode": ".errors",
    "TransportError": ".errors",
    "lazy_exports": ".lazy",
    "raise_if_cancelling": ".cancels",
    "read_secret": ".config",
    "redact_url": ".config",
    "resolve_path": ".config",
    "split_service_url": ".config",
    "state_dir": ".state",
}
__all__ = [  # what _HOME maps, spelled out for the tools
    "AuditError",
    "Backoff",
    "BrokerUnavailable",
    "ConfigError",
    "ConnectorError",
    "ModelError",
    "OpsConfig",
    "OpsServer",
    "OpsStats",
    "PayloadError",
    "Problem",
    "QxError",
    "RejectCode",
    "TransportError",
    "lazy_exports",
    "raise_if_cancelling",
    "read_secret",
    "redact_url",
    "resolve_path",
    "split_service_url",
    "state_dir",
]

__getattr__ = lazy_exports(__name__, _HOME)
