"""Test doubles and helpers shared by tests/ and bench/: never imported by the runtime packages.

- ``Watcher``: an independent MQTT client recording what a broker delivered (``mqtt.py``);
- ``wait_until`` / ``wait_until_sync``: waits on a condition (``waits.py``);
- ``random_bqm``, ``optimum``, ``sample_energy``: seeded problems and their reference optimum;
- ``edge_config``, ``ROOT``, ``EDGE_YAML``: the example config pointed at a test broker; ``compressed``:
  a fast plant clock for its production day;
- ``faults``: the agent as a child process, a plant thread, an upstream counter (fault runs);
- ``plant_server`` / ``Plant``: an OPC UA server with a small plant address space (``opcua_plant.py``);
- ``Plc``: a Modbus TCP device that records every request (``modbus_plc.py``);
- ``opcua_pki.make_pki``: self-signed certificates for OPC UA security tests (import the module);
- ``solver_doubles``: solver backends that overrun or wait out their deadline (import the module).

The last two are imported on first use (asyncua and pymodbus load only for the tests that use them).
"""

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports
from qxedge.testing.configs import EDGE_YAML, ROOT, compressed, edge_config
from qxedge.testing.mqtt import Watcher
from qxedge.testing.problems import optimum, random_bqm, sample_energy
from qxedge.testing.waits import wait_until, wait_until_sync

if TYPE_CHECKING:
    from qxedge.testing.modbus_plc import Plc
    from qxedge.testing.opcua_plant import Plant, plant_server

__all__ = [
    "EDGE_YAML",
    "ROOT",
    "Plant",
    "Plc",
    "Watcher",
    "compressed",
    "edge_config",
    "optimum",
    "plant_server",
    "random_bqm",
    "sample_energy",
    "wait_until",
    "wait_until_sync",
]

__getattr__ = lazy_exports(
    __name__, {"Plc": ".modbus_plc", "Plant": ".opcua_plant", "plant_server": ".opcua_plant"}
)
