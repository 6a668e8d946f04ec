"""Offload of hard optimisation subproblems to the data center: problems, the wire format, the solver
backends and their portfolio, the agent's offload client and the data-center service.

The names below are the public API, importable from ``qxedge.hybrid`` (each loads its module on first
use). The solver plug point is :mod:`qxedge.hybrid.backends`; the reference problems are in
:mod:`qxedge.hybrid.problems`. ``hybrid`` never imports ``agent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.hybrid.backends import (
        Backend,
        Deadline,
        Solver,
        backend_names,
        register,
        solver_names,
        unregister,
    )
    from qxedge.hybrid.client import OffloadClient, OffloadConfig
    from qxedge.hybrid.historian import Historian, HistorianConfig, HistorianStats
    from qxedge.hybrid.offline import solve_file
    from qxedge.hybrid.portfolio import Portfolio, SolversConfig
    from qxedge.hybrid.service import DataCenterConfig, SolverService, SolverStats
    from qxedge.hybrid.wire import Candidate, JobEnvelope, JobLimits, JobRejected, ResultEnvelope, decode_job

_HOME = {
    "Backend": ".backends",
    "Candidate": ".wire",
    "DataCenterConfig": ".service",
    "Deadline": ".backends",
    "Historian": ".historian",
    "HistorianConfig": ".historian",
    "HistorianStats": ".historian",
    "JobEnvelope": ".wire",
    "JobLimits": ".wire",
    "JobRejected": ".wire",
    "OffloadClient": ".client",
    "OffloadConfig": ".client",
    "Portfolio": ".portfolio",
    "ResultEnvelope": ".wire",
    "Solver": ".backends",
    "SolverService": ".service",
    "SolverStats": ".service",
    "SolversConfig": ".portfolio",
    "backend_names": ".backends",
    "decode_job": ".wire",
    "register": ".backends",
    "solve_file": ".offline",
    "solver_names": ".backends",
    "unregister": ".backends",
}
__all__ = [  # what _HOME maps, spelled out for the tools
    "Backend",
    "Candidate",
    "DataCenterConfig",
    "Deadline",
    "Historian",
    "HistorianConfig",
    "HistorianStats",
    "JobEnvelope",
    "JobLimits",
    "JobRejected",
    "OffloadClient",
    "OffloadConfig",
    "Portfolio",
    "ResultEnvelope",
    "Solver",
    "SolverService",
    "SolverStats",
    "SolversConfig",
    "backend_names",
    "decode_job",
    "register",
    "solve_file",
    "solver_names",
    "unregister",
]


__getattr__ = lazy_exports(__name__, _HOME)
