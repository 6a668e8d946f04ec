"""QAOA on PennyLane for a QUBO, honest about what the quantum part achieved.

Cost Hamiltonian: substituting x = (1 - Z)/2 (|0> ↔ x=0, |1> ↔ x=1). dimod's ``to_ising`` uses
s = 2x - 1, i.e. s = -Z, so its ``h`` is negated here and ``J`` kept (FIELD-NOTES.md). The circuit is
p layers of ``RZ``/``IsingZZ`` (the cost, angles scaled by the largest coefficient) and ``RX`` (the
X mixer) after a uniform superposition, on the configured device: ``lightning.qubit`` by default,
``lightning.gpu`` or a QPU plugin through ``device`` and ``device_options`` (:class:`PennyLaneCircuit`),
or the same circuit without gates on the project's own statevector, ``qxedge.gpu`` (CUDA) or
``qxedge.cpu`` (:mod:`hybrid.statevector`). The objective, the shots and the CVaR are computed where
the probabilities are (NumPy or CuPy arrays: ``circuit.xp``).

Angles start on a linear ramp (the discretised annealing path, which beats random starts) and are
optimised by COBYLA on the CVaR of the energy distribution (the mean of the best ``cvar_alpha``
fraction: Barkoutsos et al. 2020) or on its expectation; the optimiser stops while the next circuit
and what follows it still fit before the deadline (the best circuit's distribution is kept up to
:data:`KEEP_BEST_MAX_QUBITS`, so no last circuit has to run again). A budget that cannot hold the
set-up and one circuit (:func:`predicted_setup`, :func:`predicted_evaluation`) is answered
``timeout`` at once. ``shots`` bitstrings are then drawn from the circuit's distribution, each evaluated on
the original model: the best of them is ``raw_best_energy``. With ``polish`` the best distinct samples
seed a steepest descent, and the candidate's ``energy`` is the polished result; the raw figure is
always reported beside it, and a polish that beat it is credited as ``qaoa+polish``
(:func:`~qxedge.hybrid.solvers.credit`), so QAOA's quality is never overstated.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import time
from functools import partial
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qxedge.hybrid.backends import Backend, Deadline, register
from qxedge.hybrid.solvers import bits_of, finish, to_binary
from qxedge.hybrid.statevector import (
    GROUP_BITS,
    CpuStatevector,
    GpuStatevector,
    compile_kernels,
    ising_diagonal,
)
from qxedge.hybrid.wire import Candidate

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig

OWN_DEVICES = ("qxedge.cpu", "qxedge.gpu")  # hybrid/statevector.py


@functools.cache
def installed_devices() -> tuple[str, ...]:
    """The project's own simulators and every PennyLane device installed here (the plugins' entry
    points, read without importing PennyLane)."""
    plugins = {ep.name for ep in entry_points(group="pennylane.plugins")}
    return tuple(sorted(plugins | set(OWN_DEVICES)))


class QaoaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str = Field(
        "lightning.qubit",
        description="qxedge.gpu, qxedge.cpu (hybrid/statevector.py) or a PennyLane device: lightning.gpu...",
    )
    device_options: dict[str, Any] = Field(
        default_factory=dict, description="e.g. {shots: 1000} for a QPU, {dtype: complex64} for qxedge.gpu"
    )
    layers: int = Field(2, ge=1, le=20, description="QAOA depth p")
    max_qubits: int = Field(20, ge=1, le=34)
    objective: Literal["cvar", "expectation"] = "cvar"
    cvar_alpha: float = Field(0.2, gt=0, le=1)
    maxiter: int = Field(150, ge=1, description="objective evaluations of the angle optimiser")
    ramp: float = Field(0.75, gt=0, description="time step of the initial linear ramp")
    shots: int = Field(1000, ge=1)
    polish: bool = Field(True, description="steepest descent from the best samples (reported separately)")
    seed: int | None = 1234

    @field_validator("device")
    @classmethod
    def _installed(cls, device: str) -> str:
        known = installed_devices()
        if device not in known:
            close = difflib.get_close_matches(device, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            if set(known) <= set(OWN_DEVICES):  # no plugin: PennyLane itself is not installed
                hint = " (PennyLane is not installed here: pip install 'qxedge[datacenter]')"
            raise ValueError(f"unknown device {device!r}{hint}; installed here: {', '.join(known)}")
        return device

    @model_validator(mode="after")
    def _simulator_options(self) -> QaoaConfig:
        allowed = {"qxedge.cpu": set(), "qxedge.gpu": {"dtype", "group_bits"}}.get(self.device)
        if allowed is None:
            return self  # a PennyLane device checks its own options when it starts
        if unknown := set(self.device_options) - allowed:
            raise ValueError(f"{self.device} takes no option {', '.join(sorted(unknown))}")
        if self.device_options.get("dtype", "complex128") not in ("complex64", "complex128"):
            raise ValueError("device_options.dtype must be complex64 or complex128")
        if self.device_options.get("group_bits", GROUP_BITS) not in range(1, GROUP_BITS + 1):
            raise ValueError(f"device_options.group_bits must be 1..{GROUP_BITS}")
        return self


def ising_z(bqm: dimod.BinaryQuadraticModel) -> tuple[np.ndarray, dict[tuple[int, int], float], float]:
    """The cost as sum h_i Z_i + sum J_ij Z_i Z_j + c with x = (1 - Z)/2, in ``bqm.variables`` order."""
    h_s, j_s, offset = to_binary(bqm).to_ising()
    index = {v: i for i, v in enumerate(bqm.variables)}
    h = np.array([-h_s.get(v, 0.0) for v in bqm.variables], dtype=np.float64)  # s = -Z
    j: dict[tuple[int, int], float] = {}
    for (u, v), bias in j_s.items():
        key = (min(index[u], index[v]), max(index[u], index[v]))
        j[key] = j.get(key, 0.0) + float(bias)
    return h, j, float(offset)


class _OutOfTime(Exception):
    pass


class PennyLaneCircuit:
    """The QAOA circuit as PennyLane gates on any PennyLane device (``probs`` of every basis state)."""

    xp = np

    def __init__(
        self,
        dev: Any,
        h: np.ndarray,
        j: np.ndarray,
        layers: int,
        measure: Literal["probs", "state"] = "probs",
    ) -> None:
        """``j``: the couplings as an upper-triangular n x n matrix, like the simulators take them."""
        import pennylane as qml

        n = len(h)
        self.diagonal = ising_diagonal(h, j)  # the cost of every basis state, as the simulators hold it
        couplings = [(int(a), int(b), float(j[a, b])) for a, b in zip(*np.nonzero(j), strict=True)]

        @qml.qnode(dev, diff_method=None)
        def distribution(gammas: np.ndarray, betas: np.ndarray) -> Any:
            for w in range(n):
                qml.Hadamard(wires=w)
            for k in range(layers):
                for i in range(n):
                    if h[i]:
                        qml.RZ(2.0 * gammas[k] * h[i], wires=i)
                for a, b, coupling in couplings:
                    qml.IsingZZ(2.0 * gammas[k] * coupling, wires=[a, b])
                for w in range(n):
                    qml.RX(2.0 * betas[k], wires=w)
            return qml.state() if measure == "state" else qml.probs(wires=range(n))

        self.distribution = distribution

    def probs(self, gammas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        return np.asarray(self.distribution(gammas, betas), dtype=np.float64)


def _circuit(
    cfg: QaoaConfig, h: np.ndarray, j: dict[tuple[int, int], float]
) -> tuple[PennyLaneCircuit | CpuStatevector | GpuStatevector, str]:
    """The configured back-end and what to call it in the candidate. qxedge.gpu without CuPy or a GPU
    falls back to qxedge.cpu (said so in the note); a PennyLane device that cannot start (lightning.gpu
    without a GPU, options it does not take) raises: the candidate is an error saying why."""
    n = len(h)
    dense = np.zeros((n, n))
    for (a, b), coupling in j.items():
        dense[a, b] = coupling
    if cfg.device == "qxedge.cpu":
        return CpuStatevector(h, dense), cfg.device
    if cfg.device == "qxedge.gpu":
        try:
            return GpuStatevector(h, dense, **cfg.device_options), cfg.device
        except MemoryError:  # CuPy's OutOfMemoryError: the CPU would take far longer; an error candidate
            raise
        except Exception as exc:  # ImportError (no CuPy), CUDA errors (no driver, no GPU)
            note = f"qxedge.cpu (qxedge.gpu unavailable: {type(exc).__name__}: {str(exc)[:120]})"
            return CpuStatevector(h, dense), note
    import pennylane as qml

    dev = qml.device(cfg.device, wires=n, **cfg.device_options)
    return PennyLaneCircuit(dev, h, dense, cfg.layers), cfg.device


# What a solve costs before and per circuit, predicted before it starts (cautious; bench/qaoa.py and
# bench/anytime.py): the cost of every basis state and its sort on the CPU, 0.9 s at n = 20 measured
# (1.3..3 ns per n^2 2^n), and an evaluation, 0.16..0.3 s at n = 20 with p = 2 on lightning.qubit
# (0.3..1 ns per amplitude and gate, plus PennyLane's ~10 ms a call). qxedge.gpu does both on the GPU.
def predicted_setup(n: int, device: str) -> float:
    return 0.0 if device == "qxedge.gpu" else 3e-9 * n * n * 2.0**n + 1e-8 * 2.0**n


def predicted_evaluation(n: int, gates: int, device: str) -> float:
    return 0.002 if device == "qxedge.gpu" else 0.01 + 1e-9 * 2.0**n * gates


# Up to this many qubits the best evaluation's distribution is kept (32 MB at 22) rather than computed
# again at the end: the optimiser may then run until one more evaluation and the tail are left.
KEEP_BEST_MAX_QUBITS = 22


def _no_time(started: float, why: str) -> Candidate:
    return Candidate(
        solver="qaoa", status="timeout", reason=why, seconds=round(time.monotonic() - started, 6)
    )


def solve_qaoa(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: QaoaConfig) -> Candidate:
    from scipy.optimize import minimize

    started = time.monotonic()
    n = bqm.num_variables
    if n > cfg.max_qubits:
        return Candidate(
            solver="qaoa", status="refused", reason=f"{n} variables > max_qubits {cfg.max_qubits}"
        )
    if n == 0:
        return finish(bqm, "qaoa", np.zeros(0), started)
    binary = to_binary(bqm)
    h, j, offset = ising_z(binary)
    scale = max(np.abs(h).max(initial=0.0), max((abs(b) for b in j.values()), default=0.0)) or 1.0
    p = cfg.layers
    # the shots, the polish and the candidate after the last circuit: 30 ms and 5 % of the budget
    tail = 0.03 + 0.05 * max(0.0, deadline.left())
    guess = predicted_evaluation(n, p * (int(np.count_nonzero(h)) + len(j) + n) + n, cfg.device)
    setup = predicted_setup(n, cfg.device)
    if deadline.left() < setup + guess + tail:
        return _no_time(
            started,
            f"set-up ({setup:.3f} s) and one circuit evaluation ({guess:.3f} s) at {n} qubits are "
            f"predicted to need more than the {max(0.0, deadline.left()):.3f} s left",
        )
    circuit, device_note = _circuit(cfg, h, j)
    xp = circuit.xp
    # the energy of every assignment (PennyLane's wire order) is costs + offset; no 2^n array of energies
    # beside the costs the circuit holds (at n = 30 each is 8 GB)
    costs, shift = circuit.diagonal, offset
    order = xp.argsort(costs, kind="stable") if cfg.objective == "cvar" else None
    sorted_costs = costs[order] if order is not None else None

    def distribution(theta: np.ndarray) -> Any:
        return circuit.probs(theta[:p] / scale, theta[p:])

    def objective_of(probs: Any) -> float:
        if order is None:
            return float(probs @ costs) + shift
        mass = probs[order]
        take = xp.cumsum(mass)  # in place from here: two 2^n arrays in all
        take -= mass
        xp.subtract(cfg.cvar_alpha, take, out=take)
        xp.maximum(take, 0.0, out=take)
        xp.minimum(take, mass, out=take)  # the best alpha of the mass
        return float(take @ sorted_costs / cfg.cvar_alpha) + shift

    # Stop optimising while there is still time for the next evaluation, the final distribution (unless
    # the best one is kept) and the tail; the first evaluation is judged on the guess.
    keep = n <= KEEP_BEST_MAX_QUBITS
    circuits_left = 1 if keep else 2
    if deadline.left() < guess + tail:
        return _no_time(started, f"the set-up at {n} qubits left no time for a circuit evaluation")
    best: dict[str, Any] = {"value": np.inf, "theta": None, "probs": None}
    evaluations = 0
    slowest = 0.0

    def objective(theta: np.ndarray) -> float:
        nonlocal evaluations, slowest
        if time.time() + circuits_left * (slowest or guess) + tail >= deadline.at():
            raise _OutOfTime
        began = time.time()
        evaluations += 1
        probs = distribution(theta)
        value = objective_of(probs)
        slowest = max(slowest, time.time() - began)
        if value < best["value"]:
            best.update(value=value, theta=theta.copy(), probs=probs if keep else None)
        return value

    t = (np.arange(p) + 0.5) / p
    theta0 = np.concatenate([t * cfg.ramp, (1 - t) * cfg.ramp])
    timed_out = False
    try:
        minimize(objective, theta0, method="COBYLA", options={"maxiter": cfg.maxiter, "rhobeg": 0.2})
    except _OutOfTime:
        timed_out = True
    theta = best["theta"] if best["theta"] is not None else theta0
    final = best["probs"] if best["probs"] is not None else distribution(theta)
    probs = xp.maximum(final, 0.0)
    rng = np.random.default_rng(cfg.seed)
    # rng.choice(2^n, p=probs) done where the probabilities are (the same draws as NumPy's choice)
    cdf = xp.cumsum(probs)
    shots = xp.searchsorted(cdf / cdf[-1], xp.asarray(rng.random(cfg.shots)), side="right")
    raw_index = int(shots[int(xp.argmin(costs[shots]))])
    raw_best = float(binary.energies((bits_of(raw_index, n)[None, :], list(binary.variables)))[0])
    details = {
        "p": p,
        "objective": cfg.objective,
        "evaluations": evaluations,
        "optimizer_stopped_by_deadline": timed_out,
        "expectation": round(float(probs @ costs) + shift, 6),
        "shots": cfg.shots,
        "p_optimum": float(probs[int(xp.argmin(costs))]),
        "device": device_note,
    }
    best_values = bits_of(raw_index, n)
    if cfg.polish:
        from dwave.samplers import SteepestDescentSolver

        distinct = xp.unique(shots)
        distinct = distinct[xp.argsort(costs[distinct], kind="stable")][:32].tolist()
        starts = np.array([bits_of(i, n) for i in distinct])
        polished = SteepestDescentSolver().sample(binary, initial_states=(starts, list(binary.variables)))
        if polished.first.energy < raw_best:
            best_values = np.array([polished.first.sample[v] for v in binary.variables])
            details["polished"] = True
    # change_vartype keeps energies, so the BINARY copy's energies are the job's.
    return finish(bqm, "qaoa", best_values, started, raw_best_energy=raw_best, details=details)


def _warm(cfg: QaoaConfig) -> None:
    if cfg.device == "qxedge.gpu":
        with contextlib.suppress(Exception):  # no CuPy or no GPU: each solve falls back and says so
            compile_kernels(cfg.device_options.get("dtype", "complex128"))
    elif cfg.device != "qxedge.cpu":
        import pennylane  # noqa: F401


def _qaoa(config: SolversConfig) -> Backend:
    cfg = config.qaoa

    def refuses(n: int) -> str | None:
        return f"{n} variables > qaoa.max_qubits {cfg.max_qubits}" if n > cfg.max_qubits else None

    # PennyLane (seconds to import) is imported once, by the forkserver, before it forks solver processes:
    # a process recycled after an overrun is warm at once. Not CUDA: it must not be initialised before fork.
    preload = () if cfg.device in ("qxedge.gpu", "qxedge.cpu") else ("pennylane",)
    return Backend("qaoa", partial(solve_qaoa, cfg=cfg), refuses, partial(_warm, cfg), preload)


register("qaoa", _qaoa)
