"""Classical solvers behind one small interface: ``solve(bqm, deadline_at) -> Candidate``.

Every solver works on a BINARY copy of the model and reports the sample in the job's own vartype, with
``energy`` recomputed by dimod on the job's model, so the energy always matches the sample.

- ``exact``: vectorised enumeration of all 2^n assignments with NumPy (refused above ``max_variables``);
  a proven optimum, so ``auto`` stops waiting as soon as it has one;
- ``sa``: dwave-samplers' SimulatedAnnealingSampler; it has no time limit of its own (dwave-samplers
  issue #27), so its ``interrupt_function`` stops it between reads once the budget is spent;
- ``tabu``: dwave-samplers' TabuSampler with its ``timeout`` set from the budget (capped by ``max_seconds``).

- ``greedy``: dwave-samplers' SteepestDescentSolver from a few random starts (also the agent's local
  fallback, :mod:`hybrid.client`).

Each registers itself in :mod:`hybrid.backends` (a line after its function); QAOA lives in
:mod:`hybrid.qaoa` and has the same shape.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import Backend, Deadline, register
from qxedge.hybrid.wire import POLISHED, Candidate, label_sample

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig


class ExactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_variables: int = Field(22, ge=1, le=24, description="2^n energies are held: 128 MiB at 24")
    chunk_bits: int = Field(16, ge=8, le=22)


class SaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_sweeps: int = Field(1000, ge=1)
    max_reads: int = Field(200, ge=1, description="reads stop earlier when the budget is spent")
    seed: int | None = None


class TabuConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_seconds: float = Field(0.6, gt=0, description="cap on the search time within a job's budget")
    seed: int | None = None


def to_binary(bqm: dimod.BinaryQuadraticModel) -> dimod.BinaryQuadraticModel:
    return bqm if bqm.vartype is dimod.BINARY else bqm.change_vartype(dimod.BINARY, inplace=False)


def credit(solver: str, energy: float, raw_best_energy: float | None) -> str:
    """Who a candidate's energy is credited to: ``solver``, or ``solver+polish`` when a classical polish
    of its samples beat its own raw best (by more than float noise), so the win is not the solver's alone.
    Any backend that polishes reports ``raw_best_energy`` and is credited this way; a label, not a backend."""
    if raw_best_energy is not None and energy < raw_best_energy - 1e-9 * max(1.0, abs(raw_best_energy)):
        return solver + POLISHED
    return solver


def finish(
    bqm: dimod.BinaryQuadraticModel,
    solver: str,
    binary_values: np.ndarray,
    started: float,
    raw_best_energy: float | None = None,
    **extra: Any,
) -> Candidate:
    """A candidate from 0/1 values in ``bqm.variables`` order, in the model's vartype, energy from dimod;
    one polished below its ``raw_best_energy`` is credited to ``solver+polish`` (:func:`credit`)."""
    values = np.asarray(binary_values, dtype=np.int64)
    if bqm.vartype is dimod.SPIN:
        values = 2 * values - 1
    sample = label_sample(bqm, values)
    energy = float(bqm.energy(dict(zip(bqm.variables, values.tolist(), strict=True))))
    return Candidate(
        solver=credit(solver, energy, raw_best_energy),
        energy=energy,
        raw_best_energy=raw_best_energy,
        seconds=round(time.monotonic() - started, 6),
        sample=sample,
        **extra,
    )


def qubo_arrays(bqm: dimod.BinaryQuadraticModel) -> tuple[np.ndarray, np.ndarray, float]:
    """BINARY bqm → (linear a[n], upper-triangular Q[n, n], offset) in ``bqm.variables`` order."""
    binary = to_binary(bqm)
    index = {v: i for i, v in enumerate(binary.variables)}
    n = binary.num_variables
    a = np.array([binary.get_linear(v) for v in binary.variables], dtype=np.float64)
    q = np.zeros((n, n), dtype=np.float64)
    for (u, v), bias in binary.quadratic.items():
        i, j = sorted((index[u], index[v]))
        q[i, j] += bias
    return a, q, float(binary.offset)


def all_energies(
    bqm: dimod.BinaryQuadraticModel, chunk_bits: int = 16, deadline_at: float | None = None
) -> np.ndarray:
    """Energy of every assignment; index b has variable i = bit (n-1-i) of b (variable 0 is the MSB,
    PennyLane's wire order). TimeoutError when ``deadline_at`` passes before the end."""
    a, q, offset = qubo_arrays(bqm)
    n = len(a)
    out = np.empty(1 << n, dtype=np.float64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    step = 1 << min(chunk_bits, n)
    for start in range(0, 1 << n, step):
        if deadline_at is not None and time.time() > deadline_at:
            raise TimeoutError(f"enumerated {start} of {1 << n} assignments by the deadline")
        idx = np.arange(start, min(start + step, 1 << n), dtype=np.int64)
        bits = ((idx[:, None] >> shifts) & 1).astype(np.float64)
        out[start : start + len(idx)] = offset + bits @ a + np.einsum("ij,ij->i", bits @ q, bits)
    return out


def bits_of(index: int, n: int) -> np.ndarray:
    return np.array([(index >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.int64)


def solve_exact(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: ExactConfig) -> Candidate:
    started = time.monotonic()
    n = bqm.num_variables
    if n > cfg.max_variables:
        return Candidate(solver="exact", status="refused", reason=f"{n} variables > max {cfg.max_variables}")
    if n == 0:
        return finish(bqm, "exact", np.zeros(0), started, details={"optimal": True})
    try:
        energies = all_energies(bqm, cfg.chunk_bits, deadline.at())
    except TimeoutError as exc:
        return Candidate(
            solver="exact", status="timeout", reason=str(exc), seconds=round(time.monotonic() - started, 6)
        )
    best = int(np.argmin(energies))
    return finish(bqm, "exact", bits_of(best, n), started, details={"optimal": True})


def solve_sa(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: SaConfig) -> Candidate:
    from dwave.samplers import SimulatedAnnealingSampler

    started = time.monotonic()
    binary = to_binary(bqm)
    if binary.num_variables == 0:
        return finish(bqm, "sa", np.zeros(0), started)
    reads = 0

    def interrupt() -> bool:
        nonlocal reads
        reads += 1
        return deadline.left() <= 0

    result = SimulatedAnnealingSampler().sample(
        binary,
        num_reads=cfg.max_reads,
        num_sweeps=cfg.num_sweeps,
        seed=cfg.seed,
        interrupt_function=interrupt,
    )
    best = result.first.sample
    values = np.array([best[v] for v in binary.variables])
    return finish(bqm, "sa", values, started, details={"reads": len(result)})


def solve_tabu(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: TabuConfig) -> Candidate:
    from dwave.samplers import TabuSampler

    started = time.monotonic()
    binary = to_binary(bqm)
    if binary.num_variables == 0:
        return finish(bqm, "tabu", np.zeros(0), started)
    timeout_ms = max(1, int(1000 * min(cfg.max_seconds, deadline.left())))
    result = TabuSampler().sample(binary, num_reads=1, timeout=timeout_ms, seed=cfg.seed)
    best = result.first.sample
    values = np.array([best[v] for v in binary.variables])
    return finish(bqm, "tabu", values, started, details={"timeout_ms": timeout_ms})


def solve_greedy(bqm: dimod.BinaryQuadraticModel, reads: int = 4, seed: int = 0) -> Candidate:
    """Steepest descent from a few random starts: a local optimum in about a millisecond."""
    from dwave.samplers import SteepestDescentSolver

    started = time.monotonic()
    binary = to_binary(bqm)
    if binary.num_variables == 0:
        return finish(bqm, "greedy", np.zeros(0), started)
    result = SteepestDescentSolver().sample(binary, num_reads=reads, seed=seed)
    best = result.first.sample
    return finish(bqm, "greedy", np.array([best[v] for v in binary.variables]), started)


def _warm_samplers() -> None:
    import dwave.samplers  # noqa: F401


def _solve_greedy(bqm: dimod.BinaryQuadraticModel, deadline: Deadline) -> Candidate:
    return solve_greedy(bqm)  # about a millisecond: no deadline to watch


def _exact(config: SolversConfig) -> Backend:
    cfg = config.exact

    def refuses(n: int) -> str | None:
        return f"{n} variables > exact.max_variables {cfg.max_variables}" if n > cfg.max_variables else None

    return Backend("exact", partial(solve_exact, cfg=cfg), refuses)


register("exact", _exact)
register("sa", lambda config: Backend("sa", partial(solve_sa, cfg=config.sa), warm_up_fn=_warm_samplers))
register(
    "tabu", lambda config: Backend("tabu", partial(solve_tabu, cfg=config.tabu), warm_up_fn=_warm_samplers)
)
register("greedy", lambda _config: Backend("greedy", _solve_greedy, warm_up_fn=_warm_samplers))
