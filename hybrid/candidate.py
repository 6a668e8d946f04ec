"""From a solver's best state to a :class:`~qxedge.hybrid.wire.Candidate`, shared by every backend."""

from __future__ import annotations

import time
from typing import Any

import dimod
import numpy as np

from qxedge.hybrid.wire import POLISHED, Candidate, label_sample


def to_binary(bqm: dimod.BinaryQuadraticModel) -> dimod.BinaryQuadraticModel:
    return bqm if bqm.vartype is dimod.BINARY else bqm.change_vartype(dimod.BINARY, inplace=False)


def model_arrays(
    bqm: dimod.BinaryQuadraticModel,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(linear, row, col, quadratic, offset) in ``bqm.variables`` order, one entry per interaction."""
    vectors = bqm.to_numpy_vectors()
    quadratic = vectors.quadratic
    return (
        np.asarray(vectors.linear_biases, dtype=np.float64),
        np.asarray(quadratic.row_indices),
        np.asarray(quadratic.col_indices),
        np.asarray(quadratic.biases, dtype=np.float64),
        float(vectors.offset),
    )


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


def hand_back_seconds(variables: int, interactions: int) -> float:
    """Kept before the deadline to turn the best state into a candidate (:func:`finish`: the labelled
    sample and dimod's energy, measured 8 ms on a complete n = 2000 model and 3 ms on n = 5000 sparse)
    with room for a busy machine: 34 ms and 20 ms there, 10 ms for small models."""
    return 0.01 + 2e-6 * variables + 10e-9 * interactions


def timed_out(solver: str, started: float, reason: str, **details: Any) -> Candidate:
    return Candidate(
        solver=solver,
        status="timeout",
        reason=reason,
        seconds=round(time.monotonic() - started, 6),
        details=details,
    )
