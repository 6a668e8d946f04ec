"""Loading a config imports no driver it does not use (correctness, not timing: see docs/architecture.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qxedge.testing import ROOT

# Drivers and heavy libraries (modules, with their submodules) that loading the demo config (an MQTT
# source, an ONNX model named by path) must not import: the runtimes import them when they start. paho's
# topic tree (paho.mqtt.matcher) is pure and may come with a config; its client may not.
DRIVERS = (
    "asyncua",
    "pymodbus",
    "polars",
    "onnxruntime",
    "dimod",
    "pennylane",
    "numpy",
    "scipy",
    "paho.mqtt.client",
    "google.protobuf",
    "prometheus_client",
)

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in sys.modules if any(m == d or m.startswith(d + ".") for d in {drivers}))))
"""


def _imported(code: str) -> list[str]:
    probe = PROBE.format(code=code, drivers=repr(set(DRIVERS)))
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "from qxedge.agent.config import load_config\n"
        f"load_config({str(ROOT / 'configs' / 'edge.yaml')!r}, environ={{}})",
        "from qxedge.agent.cli import build_parser\nbuild_parser().format_help()",
        "import qxedge.connectors.mqtt, qxedge.connectors.opcua, qxedge.connectors.modbus, "
        "qxedge.connectors.outbox",
    ],
    ids=["load-config", "cli-help", "connector-packages"],
)
def test_no_driver_is_imported(code: str) -> None:
    assert _imported(code) == []


def test_the_runtime_names_still_import_their_driver() -> None:
    found = _imported(
        "from qxedge.connectors.opcua import OpcUaConnector\n"
        "from qxedge.connectors.modbus import ModbusConnector"
    )
    assert "asyncua" in found and "pymodbus" in found
