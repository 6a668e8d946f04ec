"""Test doubles and helpers shared by tests/ and bench/: never imported by the runtime packages.

- ``Watcher``: an independent MQTT client recording what a broker delivered (``mqtt.py``);
- ``wait_until`` / ``wait_until_sync``: waits on a condition (``waits.py``);
- ``random_bqm``, ``optimum``, ``sample_energy``: seeded problems and their reference optimum;
- ``edge_config``, ``ROOT``, ``EDGE_YAML``: the example config pointed at a test broker;
- ``faults``: the agent as a child process, a plant thread, an upstream counter (fault runs).
"""

from qxedge.testing.configs import EDGE_YAML, ROOT, edge_config
from qxedge.testing.mqtt import Watcher
from qxedge.testing.problems import optimum, random_bqm, sample_energy
from qxedge.testing.waits import wait_until, wait_until_sync

__all__ = [
    "EDGE_YAML",
    "ROOT",
    "Watcher",
    "edge_config",
    "optimum",
    "random_bqm",
    "sample_energy",
    "wait_until",
    "wait_until_sync",
]
