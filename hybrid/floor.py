"""The floor: a 1-flip steepest descent, a real answer to any valid job in milliseconds.

:func:`floor` descends from the all-zeros state, which is the greedy construction (from nothing, take
the flip that lowers the energy most, then the next best, ...), and then from ``random_starts`` random
states while the deadline leaves time for another descent. A descent flips, at every step, the one
variable whose flip lowers the energy most, until no single flip lowers it: the result is a 1-flip
local minimum, unless the deadline came first (then the best so far, and ``local_minimum`` says so).

Two implementations of the same descent, whichever was faster for the model (``bench/anytime.py``):

- :func:`descend_dense` in NumPy on dense models (:func:`is_dense`): a flip costs an ``argmin`` and a
  row of the dense matrix, while dwave-samplers' solver first builds adjacency lists from the model
  (0.3 s on a complete n = 2000 model, 2M interactions, against 0.03 s for NumPy's matrix);
- dwave-samplers' SteepestDescentSolver (C++) on sparse ones, where a dense n x n matrix would cost
  more than its adjacency lists (0.4 s for the matrix at n = 5000 against 0.03 s for the descent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dimod
import numpy as np

from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.candidate import hand_back_seconds, model_arrays

# NumPy's dense descent when at least DENSE_MIN_FRACTION of all pairs are coupled, up to
# DENSE_MAX_VARIABLES (a 200 MB matrix); dwave-samplers' SteepestDescentSolver otherwise, all starts in
# one call up to ONE_CALL_MAX variables (about 1 ms a start), the zero start alone first above
DENSE_MIN_FRACTION = 0.25
DENSE_MAX_VARIABLES = 5000
ONE_CALL_MAX = 1000
CHECK_EVERY = 32  # flips between looks at the deadline


@dataclass(slots=True)
class Descent:
    """The best state a floor run found: 0/1 ``values`` in ``binary.variables`` order."""

    values: np.ndarray
    energy: float
    local_minimum: bool  # no single flip lowers the energy (False: the deadline stopped it)
    descents: int  # how many starts were descended
    method: str  # "numpy-dense" or "dwave-steepest-descent"


def is_dense(variables: int, interactions: int) -> bool:
    """Whether the NumPy dense descent is the faster one for a model of this size."""
    pairs = variables * (variables - 1) // 2
    return variables <= DENSE_MAX_VARIABLES and interactions >= DENSE_MIN_FRACTION * pairs


def dense_arrays(binary: dimod.BinaryQuadraticModel) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(a, Q, c, largest |bias|) with E(x) = c + a @ x + x @ Q @ x / 2, Q symmetric with a zero
    diagonal, in ``binary.variables`` order."""
    linear, row, col, bias, offset = model_arrays(binary)
    n = len(linear)
    couplings = np.zeros((n, n), dtype=np.float64)
    couplings[row, col] = bias  # dimod holds one bias per pair: both sides written, no transposed sum
    couplings[col, row] = bias
    largest = max(float(np.abs(linear).max(initial=0.0)), float(np.abs(bias).max(initial=0.0)))
    return np.asarray(linear, dtype=np.float64), couplings, float(offset), largest


def descend_dense(
    linear: np.ndarray,
    couplings: np.ndarray,
    offset: float,
    start: np.ndarray,
    tol: float,
    deadline: Deadline | None = None,
    margin: float = 0.0,
) -> tuple[np.ndarray, float, bool]:
    """Steepest 1-flip descent from ``start`` (0/1): (values, energy, reached a local minimum); a flip
    that gains less than ``tol`` is not taken (float noise: no cycling on ties). It stops early, not at
    a local minimum, once ``deadline`` is less than ``margin`` away."""
    x = np.array(start, dtype=np.float64)
    fields = couplings @ x + linear  # flipping i changes the energy by (1 - 2 x_i) * fields[i]
    sign = 1.0 - 2.0 * x
    delta = sign * fields
    flips = 0
    while True:
        i = int(delta.argmin())
        if delta[i] >= -tol:
            # incremental fields drift on real-valued biases: confirm on fresh ones before stopping
            fields = couplings @ x + linear
            np.multiply(sign, fields, out=delta)
            i = int(delta.argmin())
            if delta[i] >= -tol:
                break
        if sign[i] > 0:
            x[i] = 1.0
            fields += couplings[i]
        else:
            x[i] = 0.0
            fields -= couplings[i]
        sign[i] = -sign[i]
        np.multiply(sign, fields, out=delta)
        flips += 1
        if deadline is not None and flips % CHECK_EVERY == 0 and deadline.left() <= margin:
            return x, offset + float(linear @ x) + 0.5 * float(x @ (couplings @ x)), False
    return x, offset + float(linear @ x) + 0.5 * float(x @ (fields - linear)), True


def _descend_dwave(binary: dimod.BinaryQuadraticModel, starts: np.ndarray) -> tuple[np.ndarray, float]:
    from dwave.samplers import SteepestDescentSolver

    # SteepestDescentSolver always descends to a local minimum; the variables keep binary's order
    result = SteepestDescentSolver().sample(binary, initial_states=(starts, list(binary.variables)))
    best = result.first
    return np.array([best.sample[v] for v in binary.variables], dtype=np.float64), float(best.energy)


def floor(
    binary: dimod.BinaryQuadraticModel,
    deadline: Deadline | None,
    random_starts: int = 2,
    seed: int | None = 0,
) -> Descent:
    """The best descent from all zeros and from up to ``random_starts`` random states, started only
    while the deadline leaves twice the time the first descent took; each keeps the time the caller
    needs to hand its answer back (:func:`~qxedge.hybrid.candidate.hand_back_seconds`) before the
    deadline."""
    if binary.vartype is not dimod.BINARY:
        raise ValueError("floor takes a BINARY model")
    n = binary.num_variables
    margin = hand_back_seconds(n, binary.num_interactions)
    rng = np.random.default_rng(seed)
    began = time.monotonic()
    if n == 0:
        return Descent(np.zeros(0), float(binary.offset), True, 1, "numpy-dense")
    if is_dense(n, binary.num_interactions):
        linear, couplings, offset, largest = dense_arrays(binary)
        tol = 1e-12 * max(1.0, largest) * n
        values, energy, local = descend_dense(linear, couplings, offset, np.zeros(n), tol, deadline, margin)
        best = Descent(values, energy, local, 1, "numpy-dense")
        took = time.monotonic() - began
        for _ in range(random_starts if local else 0):
            if deadline is not None and deadline.left() < 2 * took + margin:
                break
            start = rng.integers(0, 2, n).astype(np.float64)
            values, energy, local = descend_dense(linear, couplings, offset, start, tol, deadline, margin)
            best.descents += 1
            if energy < best.energy:
                best.values, best.energy, best.local_minimum = values, energy, local
            if not local:  # the deadline came
                break
        return best
    zeros = np.zeros((1, n), dtype=np.int8)
    randoms = rng.integers(0, 2, (random_starts, n), dtype=np.int8)
    if n <= ONE_CALL_MAX:
        values, energy = _descend_dwave(binary, np.vstack([zeros, randoms]))
        return Descent(values, energy, True, 1 + random_starts, "dwave-steepest-descent")
    values, energy = _descend_dwave(binary, zeros)
    took = time.monotonic() - began
    if random_starts == 0 or (deadline is not None and deadline.left() < 2 * took + margin):
        return Descent(values, energy, True, 1, "dwave-steepest-descent")
    more_values, more_energy = _descend_dwave(binary, randoms)
    if more_energy < energy:
        values, energy = more_values, more_energy
    return Descent(values, energy, True, 1 + random_starts, "dwave-steepest-descent")
