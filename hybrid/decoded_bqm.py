"""A job's BQM as its checked arrays: dimod's model is built when first asked, not on the way in.

Building dimod's model from a complete model's two million interactions takes 0.12 s here
(``from_numpy_vectors``), and a dense model's search (tabu, on the matrix in shared memory,
:mod:`hybrid.shared_matrix`) does not need it: :meth:`DecodedBqm.write_tabu_matrix` writes that matrix
straight from the arrays (20 ms at n = 2000, ad hoc). So the portfolio hands the matrix to tabu first, and
builds dimod's model (for the floor answer, the other solvers and the scoring) while tabu sets up in
its own process. :func:`~qxedge.hybrid.wire.check_bqm` makes one: every field is checked there, before
any native code sees it; the build repeats none of those checks.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import dimod
import numpy as np
import numpy.typing as npt


class DecodedBqm:
    """A serialised BQM's checked arrays (``head`` and ``tail`` index into ``labels``; an interaction may
    be listed more than once, or both ways: its biases add up, as in dimod) and dimod's model, built once
    by :meth:`bqm` (thread-safe)."""

    def __init__(
        self,
        linear: npt.NDArray[np.float64],
        head: npt.NDArray[np.int32],
        tail: npt.NDArray[np.int32],
        quadratic: npt.NDArray[np.float64],
        offset: float,
        vartype: dimod.Vartype,
        labels: list[Hashable],
    ) -> None:
        self.linear, self.head, self.tail, self.quadratic = linear, head, tail, quadratic
        self.offset = offset
        self.vartype = vartype
        self.labels = labels
        self._built: dimod.BinaryQuadraticModel | None = None
        self._lock = threading.Lock()

    @property
    def num_variables(self) -> int:
        return len(self.linear)

    @property
    def num_interactions(self) -> int:
        """Interactions as listed: dimod's model has fewer when some are listed twice."""
        return len(self.quadratic)

    def bqm(self) -> dimod.BinaryQuadraticModel:
        """dimod's model, in ``labels`` order (built on the first call)."""
        with self._lock:
            if self._built is None:
                self._built = dimod.BinaryQuadraticModel.from_numpy_vectors(
                    self.linear,
                    (self.head, self.tail, self.quadratic),
                    self.offset,
                    self.vartype,
                    variable_order=self.labels,
                )
            return self._built

    def write_tabu_matrix(self, out: npt.NDArray[np.float64]) -> bool:
        """Write the BINARY model's matrix in tabu's form (:func:`~qxedge.hybrid.tabu.tabu_matrix`:
        linear biases on the diagonal, each quadratic bias halved on both sides; a pair listed twice
        adds up, and a pair of one variable with itself is a linear bias, ``x * x = x``) into ``out``
        (n x n, C-contiguous); False, writing nothing, for a SPIN model (its change of vartype is
        dimod's)."""
        if self.vartype is not dimod.BINARY:
            return False
        n = self.num_variables
        if out.shape != (n, n) or not out.flags.c_contiguous:
            raise ValueError(f"the matrix must be a C-contiguous {n} x {n} array")
        out.fill(0.0)
        flat = out.reshape(n * n)  # a view: out is contiguous
        half = 0.5 * self.quadratic
        at = self.head.astype(np.int64)  # each entry's flat index, one way then the other
        at *= n
        at += self.tail
        np.add.at(flat, at, half)
        np.multiply(self.tail, n, out=at)
        at += self.head
        np.add.at(flat, at, half)
        flat[:: n + 1] += self.linear
        return True


def built(model: dimod.BinaryQuadraticModel | DecodedBqm) -> dimod.BinaryQuadraticModel:
    """dimod's model of either."""
    return model if isinstance(model, dimod.BinaryQuadraticModel) else model.bqm()
