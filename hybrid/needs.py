"""What the data center's commands need beyond the edge install: the ``datacenter`` extra.

The base install (``pip install qxedge``) is the edge agent's: its connectors, ONNX Runtime, the console,
and the light classical solvers of its local fallback (dimod, dwave-samplers' tabu, SA and steepest
descent, HiGHS for constrained jobs). A solver worker needs more, ``pip install 'qxedge[datacenter]'``:
PennyLane and its lightning.qubit simulator for QAOA on a PennyLane device, SciPy for QAOA's angle
optimiser (COBYLA) on any device, and nats-py or aio-pika for those job transports. Each is imported only
when a job or a config needs it, so the edge install imports and runs the agent without them; the
commands that do need them (``qxedge solver``, ``qxedge solve``) check first and say which are missing,
instead of failing inside a solver process.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING

from qxedge.core.errors import MissingExtra
from qxedge.hybrid.qaoa import OWN_DEVICES

if TYPE_CHECKING:
    from qxedge.hybrid.service import DataCenterConfig

EXTRA = "datacenter"


def installed(module: str) -> bool:
    """Whether ``module`` (a top-level import name) can be imported here, without importing it."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def qaoa_packages(device: str) -> dict[str, str]:
    """What QAOA on ``device`` imports: {import name: distribution}."""
    need = {} if device in OWN_DEVICES else {"pennylane": "pennylane"}
    need["scipy"] = "scipy"  # COBYLA sets the angles on every device
    return need


def worker_packages(cfg: DataCenterConfig) -> dict[str, str]:
    """What a solver worker of ``cfg`` may import: {import name: distribution}. QAOA's are always
    needed (a job may name ``qaoa``), a transport's when ``transport.kind`` names it."""
    need = qaoa_packages(cfg.solvers.qaoa.device)
    if cfg.transport.kind == "nats":
        need["nats"] = "nats-py"
    elif cfg.transport.kind == "rabbitmq":
        need["aio_pika"] = "aio-pika"
    return need


def missing(packages: dict[str, str]) -> list[str]:
    """The distributions of ``packages`` that are not installed here."""
    return [dist for module, dist in packages.items() if not installed(module)]


def require_worker(cfg: DataCenterConfig, what: str) -> None:
    """MissingExtra naming the ``datacenter`` extra when ``what`` (a command) cannot run here."""
    if lacking := missing(worker_packages(cfg)):
        raise MissingExtra(what, EXTRA, lacking)


def qaoa_runs_here(device: str) -> bool:
    """Whether QAOA on ``device`` can run in this install."""
    return not missing(qaoa_packages(device))
