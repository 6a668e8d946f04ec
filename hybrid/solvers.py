"""Classical solvers behind one small interface: ``solve(bqm, deadline) -> Candidate``.

Every solver reports the sample in the job's own vartype, with ``energy`` recomputed by dimod on the
job's model, so the energy always matches the sample. The anytime ones (``sa``, ``tabu``) use the whole
budget and return before ``deadline.at()``, a deadline a worker brings forward (a cut) included; when
their set-up alone would not fit, they say so at once (``timeout`` with the predicted set-up).

- ``exact``: vectorised enumeration of all 2^n assignments with NumPy (refused above ``max_variables``);
  a proven optimum, so ``auto`` stops waiting as soon as it has one;
- ``sa``: dwave-samplers' SimulatedAnnealingSampler in rounds of reads, its ``interrupt_function``
  stopping before a read that would end after the deadline (it has no time limit of its own,
  dwave-samplers issue #27); anneals get longer with the budget, planned from the time per sweep
  measured on the job's model;
- ``tabu``: dwave-samplers' TabuSearch in slices of at most ``slice_seconds``, each from the best state
  so far (from a random one after a slice of 0.1 s or more that found nothing better), on a dense
  matrix built once;
- ``greedy``: the floor (:mod:`hybrid.floor`), a steepest descent to a 1-flip local minimum in
  milliseconds (the portfolio's first answer and the agent's instant fallback, :mod:`hybrid.client`).

``sa`` lives in :mod:`hybrid.annealing`, ``tabu`` in :mod:`hybrid.tabu`, the floor's descent in
:mod:`hybrid.floor` and what they share in :mod:`hybrid.candidate`; all four register in
:mod:`hybrid.backends` at the end of this module (their names stay importable from here). QAOA lives
in :mod:`hybrid.qaoa` and has the same shape.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qxedge.hybrid.annealing import SaConfig as SaConfig
from qxedge.hybrid.annealing import sa_startup_seconds
from qxedge.hybrid.annealing import solve_sa as solve_sa
from qxedge.hybrid.backends import Backend, Deadline, register
from qxedge.hybrid.candidate import credit as credit
from qxedge.hybrid.candidate import finish as finish
from qxedge.hybrid.candidate import to_binary as to_binary
from qxedge.hybrid.floor import floor
from qxedge.hybrid.tabu import TabuConfig as TabuConfig
from qxedge.hybrid.tabu import calibrate as calibrate_tabu
from qxedge.hybrid.tabu import solve_tabu as solve_tabu
from qxedge.hybrid.tabu import solve_tabu_shared, tabu_startup_seconds
from qxedge.hybrid.wire import Candidate

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig


class ExactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_variables: int = Field(22, ge=1, le=24, description="2^n energies are held: 128 MiB at 24")
    chunk_bits: int = Field(16, ge=8, le=22)


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
    bqm: dimod.BinaryQuadraticModel, chunk_bits: int = 16, deadline: Deadline | None = None
) -> np.ndarray:
    """Energy of every assignment; index b has variable i = bit (n-1-i) of b (variable 0 is the MSB,
    PennyLane's wire order). TimeoutError when ``deadline`` (a cut included) passes before the end."""
    a, q, offset = qubo_arrays(bqm)
    n = len(a)
    out = np.empty(1 << n, dtype=np.float64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    step = 1 << min(chunk_bits, n)
    for start in range(0, 1 << n, step):
        if deadline is not None and deadline.left() < 0:
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
        energies = all_energies(bqm, cfg.chunk_bits, deadline)
    except TimeoutError as exc:
        return Candidate(
            solver="exact", status="timeout", reason=str(exc), seconds=round(time.monotonic() - started, 6)
        )
    best = int(np.argmin(energies))
    return finish(bqm, "exact", bits_of(best, n), started, details={"optimal": True})


def solve_greedy(
    bqm: dimod.BinaryQuadraticModel,
    deadline: Deadline | None = None,
    *,
    random_starts: int = 2,
    seed: int | None = 0,
) -> Candidate:
    """The floor (:mod:`hybrid.floor`): steepest descent from all zeros (the greedy construction), then
    from ``random_starts`` random states while the deadline allows; a 1-flip local minimum in
    milliseconds (the portfolio's first answer, the agent's instant fallback)."""
    started = time.monotonic()
    found = floor(to_binary(bqm), deadline, random_starts, seed)
    details = {"local_minimum": found.local_minimum, "descents": found.descents, "method": found.method}
    return finish(bqm, "greedy", found.values, started, details=details)


def _warm_samplers() -> None:
    import dwave.samplers  # noqa: F401


def _warm_tabu(sizes: list[int]) -> None:
    _warm_samplers()
    calibrate_tabu(sizes)


def _exact(config: SolversConfig) -> Backend:
    cfg = config.exact

    def refuses(n: int) -> str | None:
        return f"{n} variables > exact.max_variables {cfg.max_variables}" if n > cfg.max_variables else None

    return Backend("exact", partial(solve_exact, cfg=cfg), refuses)


def _tabu(config: SolversConfig) -> Backend:
    cfg = config.tabu

    def refuses(n: int) -> str | None:
        return f"{n} variables > tabu.max_variables {cfg.max_variables}" if n > cfg.max_variables else None

    return Backend(
        "tabu",
        partial(solve_tabu, cfg=cfg),
        refuses,
        partial(_warm_tabu, cfg.calibrate_sizes),
        startup_fn=tabu_startup_seconds,
        shared_fn=partial(solve_tabu_shared, cfg=cfg),
        calibrate_fn=partial(calibrate_tabu, cfg.calibrate_sizes),
    )


def _sa(config: SolversConfig) -> Backend:
    startup = partial(sa_startup_seconds, cfg=config.sa)
    return Backend("sa", partial(solve_sa, cfg=config.sa), warm_up_fn=_warm_samplers, startup_fn=startup)


register("exact", _exact)
register("sa", _sa)
register("tabu", _tabu)
register("greedy", lambda _config: Backend("greedy", solve_greedy, warm_up_fn=_warm_samplers))
