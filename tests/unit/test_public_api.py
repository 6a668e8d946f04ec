"""Each package's curated API: every name of ``__all__`` resolves, nothing else is offered from the
package, and the lazy packages load a module only when one of its names is asked for."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib

import pytest

from qxedge.testing import ROOT

PACKAGES = [
    "qxedge",
    "qxedge.core",
    "qxedge.testing",
    "qxedge.agent",
    "qxedge.agent.console",
    "qxedge.agent.features",
    "qxedge.agent.models",
    "qxedge.connectors",
    "qxedge.connectors.modbus",
    "qxedge.connectors.mqtt",
    "qxedge.connectors.opcua",
    "qxedge.connectors.outbox",
    "qxedge.hybrid",
    "qxedge.hybrid.ledger",
    "qxedge.hybrid.problems",
    "qxedge.hybrid.transports",
]
DATA_PACKAGES = ["qxedge.configs"]  # package data only: an empty __all__


def test_every_package_is_listed() -> None:
    """A package added to the distribution gets a curated API, checked here."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        shipped = tomllib.load(f)["tool"]["setuptools"]["packages"]
    assert sorted(shipped) == sorted(PACKAGES + DATA_PACKAGES)


@pytest.mark.parametrize("name", DATA_PACKAGES)
def test_a_data_package_exports_nothing(name: str) -> None:
    assert importlib.import_module(name).__all__ == []


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for public in package.__all__:
        assert getattr(package, public) is not None, public
    home = getattr(package, "_HOME", None)
    if home is not None:  # the lazy ones: __all__ spells out exactly what _HOME maps
        assert sorted(package.__all__) == sorted(home)


def test_the_stats_snapshots_are_public() -> None:
    """The snapshots /metrics reads are part of the API: an integrator's own exporter reads them too."""
    from qxedge.agent import AgentStats, ModelStats
    from qxedge.agent.pipeline import Agent
    from qxedge.hybrid import SolverStats
    from qxedge.hybrid.service import SolverService

    assert Agent.stats.__annotations__["return"] in ("AgentStats", AgentStats)
    assert SolverService.stats.__annotations__["return"] in ("SolverStats", SolverStats)
    assert ModelStats.__module__ == "qxedge.agent.pipeline"


@pytest.mark.parametrize("name", ["qxedge.core", "qxedge.agent", "qxedge.connectors", "qxedge.hybrid"])
def test_a_name_outside_the_api_is_an_import_error(name: str) -> None:
    with pytest.raises(ImportError, match="cannot import name 'nothing_here'"):
        exec(f"from {name} import nothing_here")


def test_loading_a_config_loads_no_runtime() -> None:
    """``qxedge.agent``'s API is lazy: the config module alone pulls in neither the pipeline nor the
    data-center service (nor their drivers)."""
    probe = (
        "import sys, qxedge.agent.config, qxedge.hybrid.wire;"
        "print(sorted(m for m in ('qxedge.agent.pipeline', 'qxedge.hybrid.service', 'onnxruntime')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
