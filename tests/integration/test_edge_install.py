"""The edge install (``pip install qxedge``, no extra): the agent imports and runs without the data center's
packages (PennyLane, SciPy, nats-py, aio-pika), and the commands that need them say which extra to install.

The install is a fresh venv holding exactly the distributions pip would install for qxedge without extras
(tests/integration/installs.py): the data center's packages are absent, metadata and entry points included.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing import EDGE_YAML
from tests.integration.installs import closure, make_venv

pytestmark = pytest.mark.integration

DATACENTER_ONLY = {"pennylane", "pennylane-lightning", "scipy", "nats-py", "aio-pika"}
# the modules that import a data-center package when they are imported, and which one
NEEDS_EXTRA = {
    "qxedge.hybrid.transports.nats": "nats",
    "qxedge.hybrid.transports.nats_standby": "nats",
    "qxedge.hybrid.transports.rabbitmq": "aio_pika",
    "qxedge.hybrid.ledger.postgres": "psycopg",  # the postgres extra
}
SHORT_DAY = {  # four one-hour slots of 1.5 s: the demo's production day, small
    "QXEDGE_PLANNING__DEMO_CLOCK": '{speed: 2400, start: "2026-06-01T00:00", slots: 4}',
}


@pytest.fixture(scope="module")
def edge_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dists = closure()
    assert not dists & DATACENTER_ONLY, "the base install requires a data-center package"
    return make_venv(tmp_path_factory.mktemp("edge-venv"), dists)


def run(python: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=170,
    )


def test_every_agent_module_imports_without_the_datacenter_extra(edge_python: Path, tmp_path: Path) -> None:
    code = f"""
import importlib, importlib.util, pkgutil, sys
import qxedge
for absent in ("pennylane", "scipy", "nats", "aio_pika"):
    assert importlib.util.find_spec(absent) is None, absent + " is installed"
needs = {NEEDS_EXTRA!r}
failed = []
for name in ("core", "connectors", "agent", "hybrid"):
    package = importlib.import_module("qxedge." + name)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # ModuleNotFoundError, or the module's own error naming its extra
            missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
            if needs.get(info.name) != getattr(missing, "name", None):
                failed.append(f"{{info.name}}: {{exc!r}}")
assert not failed, failed
assert "pennylane" not in sys.modules and "scipy" not in sys.modules
print("imported", len(sys.modules))
"""
    result = run(edge_python, ["-c", code], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("imported"), result.stdout


def test_the_agents_local_fallback_solves_without_the_datacenter_extra(
    edge_python: Path, tmp_path: Path
) -> None:
    """What the agent decides with when the data center does not answer: a BQM by each classical
    backend of ``offload.fallback`` (dwave-samplers, NumPy), a CQM by HiGHS (``local_cqm``)."""
    code = """
import sys, time
import dimod
from qxedge.hybrid.backends import Deadline, build
from qxedge.hybrid.client import local_cqm
from qxedge.hybrid.portfolio import SolversConfig
solvers = SolversConfig()
bqm = dimod.generators.ran_r(1, 12, seed=7)
bqm.relabel_variables({v: f"x{v}" for v in bqm.variables})  # labels as on the wire
for name in ("tabu", "sa", "greedy", "exact"):
    found = build(name, solvers).solve(bqm, Deadline(time.time() + 1.0))
    assert found.status == "ok" and abs(found.energy - bqm.energy(found.sample)) < 1e-9, (name, found)
cqm = dimod.ConstrainedQuadraticModel()
x = [dimod.Binary(i) for i in range(4)]
cqm.set_objective(-sum((i + 1) * v for i, v in enumerate(x)))
cqm.add_constraint(sum(x) <= 2, label="two")
found = local_cqm(cqm, Deadline(time.time() + 2.0), solvers)
assert found.solver == "milp" and found.details.get("optimal"), found
assert "pennylane" not in sys.modules and "scipy" not in sys.modules
print("ok", found.energy)
"""
    result = run(edge_python, ["-c", code], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok -7"), result.stdout


def test_check_config_passes_and_worker_commands_name_the_extra(edge_python: Path, tmp_path: Path) -> None:
    cli = ["-m", "qxedge.agent.cli"]
    checked = run(edge_python, [*cli, "check-config", str(EDGE_YAML)], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok (site demo" in checked.stdout
    status = run(edge_python, [*cli, "status", "--url", "http://127.0.0.1:9"], tmp_path)
    assert status.returncode == 1 and "no agent answers at http://127.0.0.1:9" in status.stderr, status
    problem = tmp_path / "bqm.json"
    problem.write_text('{"type": "BinaryQuadraticModel"}')
    for args in (["solver"], ["solve", str(problem)], ["check-config", "--kind", "datacenter", "dc.yaml"]):
        if args[0] == "check-config":
            (tmp_path / "dc.yaml").write_text("solvers: {workers: 1}\n")
        refused = run(edge_python, [*cli, *args], tmp_path)
        assert refused.returncode == 1, (args, refused.stdout + refused.stderr)
        assert "needs pennylane, scipy, not installed here: pip install 'qxedge[datacenter]'" in (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr


def test_the_demo_runs_without_the_datacenter_extra(
    edge_python: Path, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Its solver worker runs the classical solvers (no QAOA) and the demo says so."""
    args = ["-m", "qxedge.agent.cli", "demo", "--broker", broker.url, "--duration", "3"]
    result = run(edge_python, args, tmp_path, **SHORT_DAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no QAOA in this install (pennylane, scipy missing: pip install 'qxedge[datacenter]')" in (
        result.stderr
    )
    assert "optimised vs baseline" in result.stdout
    assert "offload" in result.stdout and "local fallbacks" in result.stdout
