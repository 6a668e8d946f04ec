"""QAOA on PennyLane for a QUBO, honest about what the quantum part achieved.

Cost Hamiltonian: substituting x = (1 - Z)/2 (|0> ↔ x=0, |1> ↔ x=1). dimod's ``to_ising`` uses
s = 2x - 1, i.e. s = -Z, so its ``h`` is negated here and ``J`` kept (FIELD-NOTES.md). The circuit is
p layers of ``RZ``/``IsingZZ`` (the cost, angles scaled by the largest coefficient) and ``RX`` (the
X mixer) after a uniform superposition, on the configured device (``lightning.qubit`` by default,
``lightning.gpu`` or a QPU plugin through ``device`` and ``device_options``).

Angles start on a linear ramp (the discretised annealing path, which beats random starts) and are
optimised by COBYLA on the CVaR of the energy distribution (the mean of the best ``cvar_alpha``
fraction: Barkoutsos et al. 2020) or on its expectation; the optimiser stops when its share of the
budget is spent. ``shots`` bitstrings are then drawn from the circuit's distribution, each evaluated on
the original model: the best of them is ``raw_best_energy``. With ``polish`` the best distinct samples
seed a steepest descent, and the candidate's ``energy`` is the polished result; the raw figure is
always reported beside it, so QAOA's quality is never overstated.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import dimod
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hybrid.solvers import all_energies, bits_of, finish, to_binary
from hybrid.wire import Candidate


class QaoaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str = Field("lightning.qubit", description="any PennyLane device: lightning.gpu, a QPU plugin...")
    device_options: dict[str, Any] = Field(default_factory=dict, description="e.g. {shots: 1000} for a QPU")
    layers: int = Field(2, ge=1, le=20, description="QAOA depth p")
    max_qubits: int = Field(20, ge=1, le=34)
    objective: Literal["cvar", "expectation"] = "cvar"
    cvar_alpha: float = Field(0.2, gt=0, le=1)
    maxiter: int = Field(150, ge=1, description="objective evaluations of the angle optimiser")
    ramp: float = Field(0.75, gt=0, description="time step of the initial linear ramp")
    shots: int = Field(1000, ge=1)
    polish: bool = Field(True, description="steepest descent from the best samples (reported separately)")
    seed: int | None = 1234


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


def _device(qml: Any, cfg: QaoaConfig, wires: int) -> tuple[Any, str]:
    """The configured device, or lightning.qubit (said so in the candidate) when it is not available
    here: lightning.gpu without a GPU, a QPU plugin that is not installed."""
    try:
        return qml.device(cfg.device, wires=wires, **cfg.device_options), cfg.device
    except Exception as exc:  # PennyLane raises DeviceError, ImportError or the plugin's own errors
        if cfg.device == "lightning.qubit":
            raise
        note = f"lightning.qubit ({cfg.device} unavailable: {type(exc).__name__}: {str(exc)[:120]})"
        return qml.device("lightning.qubit", wires=wires), note


def solve_qaoa(bqm: dimod.BinaryQuadraticModel, deadline_at: float, cfg: QaoaConfig) -> Candidate:
    import pennylane as qml
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
    energies = all_energies(binary)  # diagonal of the cost, PennyLane's wire order
    order = np.argsort(energies, kind="stable")
    h, j, _ = ising_z(binary)
    scale = max(np.abs(h).max(initial=0.0), max((abs(b) for b in j.values()), default=0.0)) or 1.0
    p = cfg.layers
    dev, device_note = _device(qml, cfg, n)

    @qml.qnode(dev, diff_method=None)
    def distribution(gammas: np.ndarray, betas: np.ndarray) -> Any:
        for w in range(n):
            qml.Hadamard(wires=w)
        for k in range(p):
            g = 2.0 * gammas[k] / scale
            for i in range(n):
                if h[i]:
                    qml.RZ(g * h[i], wires=i)
            for (a, b), coupling in j.items():
                qml.IsingZZ(g * coupling, wires=[a, b])
            for w in range(n):
                qml.RX(2.0 * betas[k], wires=w)
        return qml.probs(wires=range(n))

    def objective_of(probs: np.ndarray) -> float:
        if cfg.objective == "expectation":
            return float(probs @ energies)
        mass = probs[order]
        cumulative = np.cumsum(mass)
        take = np.clip(cfg.cvar_alpha - (cumulative - mass), 0.0, mass)  # the best alpha of the mass
        return float(take @ energies[order] / cfg.cvar_alpha)

    # Stop optimising while there is still time for one more circuit (the final distribution), the
    # shots and the polish: twice the slowest evaluation so far plus 5 % of the budget.
    tail = 0.03 + 0.05 * max(0.0, deadline_at - time.time())
    best: dict[str, Any] = {"value": np.inf, "theta": None}
    evaluations = 0
    slowest = 0.0

    def objective(theta: np.ndarray) -> float:
        nonlocal evaluations, slowest
        if best["theta"] is not None and time.time() + 2 * slowest + tail >= deadline_at:
            raise _OutOfTime
        began = time.time()
        evaluations += 1
        value = objective_of(np.asarray(distribution(theta[:p], theta[p:])))
        slowest = max(slowest, time.time() - began)
        if value < best["value"]:
            best.update(value=value, theta=theta.copy())
        return value

    t = (np.arange(p) + 0.5) / p
    theta0 = np.concatenate([t * cfg.ramp, (1 - t) * cfg.ramp])
    timed_out = False
    try:
        minimize(objective, theta0, method="COBYLA", options={"maxiter": cfg.maxiter, "rhobeg": 0.2})
    except _OutOfTime:
        timed_out = True
    theta = best["theta"] if best["theta"] is not None else theta0
    probs = np.asarray(distribution(theta[:p], theta[p:]), dtype=np.float64)
    probs = np.clip(probs, 0, None)
    rng = np.random.default_rng(cfg.seed)
    shots = rng.choice(len(probs), size=cfg.shots, p=probs / probs.sum())
    shot_energies = energies[shots]
    raw_index = int(shots[np.argmin(shot_energies)])
    raw_best = float(energies[raw_index])
    details = {
        "p": p,
        "objective": cfg.objective,
        "evaluations": evaluations,
        "optimizer_stopped_by_deadline": timed_out,
        "expectation": round(float(probs @ energies), 6),
        "shots": cfg.shots,
        "p_optimum": float(probs[order[0]]),
        "device": device_note,
    }
    best_values = bits_of(raw_index, n)
    if cfg.polish:
        from dwave.samplers import SteepestDescentSolver

        distinct = np.unique(shots)
        distinct = distinct[np.argsort(energies[distinct], kind="stable")][:32]
        starts = np.array([bits_of(int(i), n) for i in distinct])
        polished = SteepestDescentSolver().sample(binary, initial_states=(starts, list(binary.variables)))
        if polished.first.energy < raw_best:
            best_values = np.array([polished.first.sample[v] for v in binary.variables])
            details["polished"] = True
    # change_vartype keeps energies, so the BINARY copy's energies are the job's.
    return finish(bqm, "qaoa", best_values, started, raw_best_energy=raw_best, details=details)
