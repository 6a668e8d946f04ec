"""qxedge: an edge agent that connects factory floors to a quantum-AI hybrid data center.

The distribution installs one package, ``qxedge``, with these layers (each imports only those below it;
``lint-imports`` checks the contract in CI):

- ``qxedge.agent``: the edge runtime (pipeline, features, inference, safety, audit) and the CLI;
- ``qxedge.hybrid``: problems, wire format, the solver portfolio and the data-center services;
- ``qxedge.connectors``: plant and broker connectors (MQTT, Sparkplug B, OPC UA, Modbus TCP, simulator);
- ``qxedge.core``: shared plumbing (the error tree, backoff, state paths, config helpers, the ops server).

``qxedge.testing`` holds test doubles used by the tests and the benchmarks; ``qxedge.configs`` the
example configs and the small ONNX model shipped as package data.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qxedge")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = ["__version__"]
