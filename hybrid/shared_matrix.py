"""A dense model's matrix in shared memory: how a solver process gets a complete model without pickling it.

A complete model of 2000 variables pickled is 32 MB: pickling it, sending it down a pipe and dimod
rebuilding its adjacency in the solver process took 0.3 to 0.6 s of a 1 s deadline on 2 busy cores,
and then tabu built its dense matrix from it. For a dense model (:func:`~qxedge.hybrid.floor.is_dense`)
the worker writes that matrix once, in tabu's form (:func:`~qxedge.hybrid.tabu.tabu_matrix`: BINARY, the
linear biases on the diagonal, each quadratic bias halved on both sides, so ``E(x) = offset + x @ Q @ x``),
into a :class:`multiprocessing.shared_memory.SharedMemory` block (30 ms at n = 2000); a
:class:`SharedQubo` pickles as the block's name, the labels and the offset, and a solver process maps
the block (no copy). The worker unlinks the block once the job's collection ends; a solver process
still reading it keeps its mapping until it lets go.
"""

from __future__ import annotations

import contextlib
import os
from multiprocessing import shared_memory
from typing import Any

import dimod
import numpy as np

from qxedge.hybrid.candidate import to_binary
from qxedge.hybrid.decoded_bqm import DecodedBqm, built
from qxedge.hybrid.tabu import tabu_matrix


class SharedQubo:
    """A BINARY model as an ``n`` x ``n`` float64 matrix in shared memory, tabu's form; ``labels`` are
    the model's variables as results carry them (``str``), ``spin`` whether the job's model is SPIN
    (samples are reported in its vartype)."""

    def __init__(
        self,
        block: shared_memory.SharedMemory,
        n: int,
        offset: float,
        spin: bool,
        labels: list[str],
        owner: bool,
    ) -> None:
        self._block: shared_memory.SharedMemory | None = block
        self.name = block.name
        self.n = n
        self.offset = offset
        self.spin = spin
        self.labels = labels
        self._owner = owner

    @classmethod
    def create(cls, model: dimod.BinaryQuadraticModel | DecodedBqm) -> SharedQubo:
        """Write ``model``'s matrix into a new block (the caller owns it: :meth:`release` unlinks it); a
        decoded BINARY job's straight from its arrays, without dimod's model."""
        n = model.num_variables
        block = shared_memory.SharedMemory(create=True, size=max(1, 8 * n * n))
        try:
            out = np.ndarray((n, n), dtype=np.float64, buffer=block.buf)
            if isinstance(model, DecodedBqm) and model.write_tabu_matrix(out):
                labels, offset, spin = [str(v) for v in model.labels], model.offset, False
            else:
                bqm = built(model)
                binary = to_binary(bqm)
                tabu_matrix(binary, out=out)
                labels = [str(v) for v in bqm.variables]
                offset, spin = float(binary.offset), bqm.vartype is dimod.SPIN
        except BaseException:
            block.close()
            block.unlink()
            raise
        return cls(block, n, offset, spin, labels, owner=True)

    def matrix(self) -> np.ndarray:
        """The matrix, mapped, not copied (writable, as dwave's TabuSearch wants its buffer, but never
        written); FileNotFoundError when the block is gone (its job ended before this process got to
        it)."""
        if self._block is None:
            self._block = _attach(self.name)
        q: np.ndarray = np.ndarray((self.n, self.n), dtype=np.float64, buffer=self._block.buf)
        return q

    def energy(self, binary_values: np.ndarray) -> float:
        """``offset + x @ Q @ x`` for 0/1 values in the model's variable order."""
        x = np.asarray(binary_values, dtype=np.float64)
        return self.offset + float(x @ (self.matrix() @ x))

    def release(self) -> None:
        """Let go of the block (every array from :meth:`matrix` must be gone); the owner also unlinks it."""
        block, self._block = self._block, None
        if block is None:
            return
        with contextlib.suppress(BufferError):  # an array still maps it: the mapping ends with the process
            block.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                block.unlink()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "offset": self.offset,
            "spin": self.spin,
            "labels": self.labels,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._block = None
        self._owner = False


def _attach(name: str) -> shared_memory.SharedMemory:
    """Map an existing block. Python < 3.13 registers it with the resource tracker again: solver
    processes share the worker's tracker (the forkserver hands it down), where it is one entry, which
    the worker's unlink removes."""
    return shared_memory.SharedMemory(name=name)


def room_for(variables: int) -> bool:
    """Whether shared memory has room for a matrix of ``variables`` squared, with as much again to spare:
    on Linux a block lives in /dev/shm, a tmpfs (64 MB in a default Docker container), and writing past
    its end kills the process (SIGBUS) rather than raising. True where there is no /dev/shm to ask."""
    try:
        free = os.statvfs("/dev/shm")
    except OSError:
        return True
    return free.f_bavail * free.f_frsize >= 2 * 8 * variables * variables


def share_seconds(variables: int) -> float:
    """A dense model's way to a solver process predicted: its matrix written into shared memory (30 ms
    measured at n = 2000, against 0.2 s or more to pickle, send and rebuild the model)."""
    return 0.002 + 10e-9 * variables * variables
