"""The solver plug point: a :class:`Solver` Protocol and the one registry of solver backends.

A backend is one module that registers a factory under its name::

    register("exact", lambda config: Backend("exact", partial(solve_exact, cfg=config.exact), ...))

The factory gets the data center's ``solvers:`` config (:class:`~qxedge.hybrid.portfolio.SolversConfig`)
and builds the :class:`Solver` for one job (in the solver process that runs it). Everything that names
solvers reads this registry: the portfolio (``auto``, ``eligible``, the warm-up of its processes), the
job envelope's ``solver`` (:data:`qxedge.hybrid.wire.SolverName`) and the CLI's ``--solver`` choices.
The built-in backends' modules (:data:`BUILTIN`) are imported on the first look-up; a backend outside
them registers when its module is imported (before the config that names it is loaded).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import dimod

    from qxedge.hybrid.portfolio import SolversConfig
    from qxedge.hybrid.shared_matrix import SharedQubo
    from qxedge.hybrid.wire import Candidate

AUTO = "auto"  # not a backend: every eligible one (the portfolio)
# the built-in backends and the module that registers each: their names are known without importing
# them (a config names a solver without loading dimod or PennyLane)
BUILTIN = {
    "exact": "qxedge.hybrid.solvers",
    "sa": "qxedge.hybrid.solvers",
    "tabu": "qxedge.hybrid.solvers",
    "greedy": "qxedge.hybrid.solvers",
    "qaoa": "qxedge.hybrid.qaoa",
    "milp": "qxedge.hybrid.milp",
}


class _Cut(Protocol):
    value: float  # epoch s; a multiprocessing RawValue("d") shared with the process that solves


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a solver must have returned its best-so-far: ``due`` (epoch s), or earlier once the
    worker moves ``cut`` forward (a long job cut to its site's fair share). Solvers are anytime: they
    read :meth:`left` between steps and stop in time to hand their answer back."""

    due: float
    cut: _Cut | None = None

    def at(self) -> float:
        return self.due if self.cut is None else min(self.due, self.cut.value)

    def left(self) -> float:
        """Seconds until :meth:`at` (negative once it has passed)."""
        return self.at() - time.time()


class Solver(Protocol):
    """One solver backend, built for one job."""

    @property
    def name(self) -> str:
        """What jobs, ``auto`` and candidates call it."""
        ...

    def refuses(self, variables: int) -> str | None:
        """Why it cannot take a model of ``variables`` variables, or None."""
        ...

    def startup_seconds(self, variables: int, interactions: int) -> float:
        """The least time it needs, predicted from the model's size alone, before it can hand back any
        answer (its set-up and the hand-back): the portfolio does not start it with less time left."""
        ...

    def solve(self, bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
        """The best sample found by ``deadline``; a failure is a candidate, not an error."""
        ...

    def warm_up(self) -> None:
        """Import (or compile) now what the first ``solve`` would: run once in every solver process."""
        ...


SolverFactory = Callable[["SolversConfig"], Solver]


def _never(variables: int) -> str | None:
    return None


def _nothing() -> None:
    return None


def _instant(variables: int, interactions: int) -> float:
    return 0.0


@dataclass(frozen=True, slots=True)
class Backend:
    """A :class:`Solver` made of functions (what the built-in backends register)."""

    name: str
    solve_fn: Callable[[dimod.BinaryQuadraticModel, Deadline], Candidate]
    refuses_fn: Callable[[int], str | None] = _never
    warm_up_fn: Callable[[], None] = _nothing
    preload: tuple[str, ...] = ()  # modules safe to import before fork: solver processes start with them
    startup_fn: Callable[[int, int], float] = _instant
    # solves a dense model's matrix in shared memory (hybrid.shared_matrix) without the model: the
    # portfolio hands dense models to such a backend that way (None: always the pickled model)
    shared_fn: Callable[[SharedQubo, Deadline], Candidate] | None = None
    # measures, in the calling process, what startup_fn predicts from: the portfolio runs it in the
    # worker's process when it warms up (solver processes measure in warm_up_fn)
    calibrate_fn: Callable[[], None] = _nothing

    def refuses(self, variables: int) -> str | None:
        return self.refuses_fn(variables)

    def startup_seconds(self, variables: int, interactions: int) -> float:
        return self.startup_fn(variables, interactions)

    def solve(self, bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
        return self.solve_fn(bqm, deadline)

    def warm_up(self) -> None:
        self.warm_up_fn()


_registry: dict[str, SolverFactory] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in dict.fromkeys(BUILTIN.values()):
            importlib.import_module(module)


def register(name: str, factory: SolverFactory) -> None:
    """Make ``name`` a solver backend; ValueError when the name is taken or not a valid name."""
    if name == AUTO or not name.isidentifier():
        raise ValueError(f"a solver backend cannot be named {name!r}")
    if name in _registry:
        raise ValueError(f"solver backend {name!r} is already registered")
    _registry[name] = factory


def unregister(name: str) -> None:
    """Forget ``name`` (a backend a test or a plugin registered); KeyError when unknown."""
    del _registry[name]


def backend_names() -> tuple[str, ...]:
    """Every registered backend, in the order of registration."""
    _load_builtins()
    return tuple(_registry)


def plugins() -> dict[str, SolverFactory]:
    """The backends registered outside :data:`BUILTIN`: solver processes register them too (so their
    factories must pickle: module-level functions or classes, not lambdas)."""
    return {name: factory for name, factory in _registry.items() if name not in BUILTIN}


def solver_names() -> tuple[str, ...]:
    """What a job (or ``qxedge solve --solver``) may name: ``auto``, the built-in backends and every
    backend registered so far; imports no backend."""
    return (AUTO, *dict.fromkeys([*BUILTIN, *_registry]))


def build(name: str, config: SolversConfig) -> Solver:
    """The backend ``name`` built from ``config``; KeyError when no backend has that name."""
    _load_builtins()
    try:
        factory = _registry[name]
    except KeyError:
        raise KeyError(f"unknown solver {name!r} (one of {', '.join(backend_names())})") from None
    return factory(config)


def known_backend(name: str) -> str:
    """``name`` when a backend has it (a pydantic validator); else ValueError naming the known ones."""
    if name not in backend_names():
        raise ValueError(f"unknown solver {name!r} (one of {', '.join(backend_names())})")
    return name


def known_solver(name: str) -> str:
    """``name`` when it is ``auto`` or a backend (a pydantic validator); else ValueError."""
    if name not in solver_names():
        raise ValueError(f"unknown solver {name!r} (one of {', '.join(solver_names())})")
    return name
