"""QAOA statevector for an Ising (QUBO) cost: one phase multiply per layer plus the X mixer.

The circuit is the one :mod:`hybrid.qaoa` builds with PennyLane (Hadamards, then p layers of
``RZ(2 g h_i)``, ``IsingZZ(2 g J_ij)`` and ``RX(2 b)``), computed without gates: the cost layer of a
diagonal Hamiltonian is ``psi *= exp(-i g E(z))`` with ``E(z) = sum h_i z_i + sum J_ij z_i z_j``
(``z = +1`` for bit 0) held once per problem, and the mixer is ``RX(2 b)`` on every wire. Index ``b`` of
the state has wire ``i`` at bit ``n - 1 - i`` (wire 0 most significant, PennyLane's order), so the
state equals ``lightning.qubit``'s amplitude for amplitude, global phase included.

Two back-ends, chosen by ``QaoaConfig.device`` in :mod:`hybrid.qaoa`:

- ``qxedge.cpu``: NumPy; the mixer in groups of up to 4 wires, one small matrix product each, and the
  phase per distinct energy when there are few (integer QUBO biases);
- ``qxedge.gpu``: CuPy on a CUDA GPU (the optional ``gpu`` extra). Two kernels: the diagonal once per
  problem (each thread sums its own assignment's cost), and one pass per group of wires and layer.
  A thread holds ``2^K`` amplitudes of one group of ``K`` adjacent bits in registers and mixes them
  there; the first pass of a layer also applies the phase and mixes the 5 lowest bits across the
  warp's lanes with shuffles, so that every load and store of a warp is 32 consecutive amplitudes.
  At n = 30 and K = 5 a layer is 5 passes over the state (``bench/qaoa_gpu.py`` measures it against
  the card's copy bandwidth and checks it against ``lightning.qubit``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

GROUP_BITS = 5  # K: wires mixed per pass in a thread's registers (2^K amplitudes each)
LANE_BITS = 5  # the lowest bits, mixed across a warp's 32 lanes
MIXER_GROUP_CPU = 4  # wires per matrix product on the CPU (a 16 x 16 matrix)


def ising_diagonal(h: np.ndarray, j: np.ndarray) -> np.ndarray:
    """E(z) for every basis state, wire 0 the most significant bit (``j`` upper triangular, n x n)."""
    n = len(h)
    out = np.empty(1 << n, dtype=np.float64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    step = 1 << min(16, n)
    for start in range(0, 1 << n, step):
        idx = np.arange(start, min(start + step, 1 << n), dtype=np.int64)
        z = 1.0 - 2.0 * ((idx[:, None] >> shifts) & 1)
        out[start : start + len(idx)] = z @ h + np.einsum("ij,ij->i", z @ j, z)
    return out


def _rx_power(beta: float, k: int) -> np.ndarray:
    """RX(2 beta) on each of k wires, as one 2^k x 2^k matrix."""
    c, s = np.cos(beta), np.sin(beta)
    rx = np.array([[c, -1j * s], [-1j * s, c]])
    m = np.ones((1, 1), dtype=np.complex128)
    for _ in range(k):
        m = np.kron(m, rx)
    return m


class CpuStatevector:
    """The QAOA state on NumPy (complex128).

    The phase exp(-i gamma E) is half a layer's time when computed for every basis state (complex exp,
    no SIMD). A QUBO with integer biases has few distinct energies, so when there are at most 1/8 as
    many levels as states, the phase is computed once per level and gathered: bit for bit the same
    values (``levels``)."""

    device = "qxedge.cpu"
    xp = np

    def __init__(self, h: np.ndarray, j: np.ndarray) -> None:
        self.n = len(h)
        self.diagonal = ising_diagonal(np.asarray(h, np.float64), np.triu(np.asarray(j, np.float64), 1))
        values, index = np.unique(self.diagonal, return_inverse=True)
        self.levels = (values, index.astype(np.int32)) if len(values) * 8 <= len(self.diagonal) else None

    def phase(self, gamma: float) -> np.ndarray:
        if self.levels is None:
            return np.exp(-1j * gamma * self.diagonal)
        values, index = self.levels
        return np.take(np.exp(-1j * gamma * values), index)

    def state(self, gammas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        n = self.n
        psi = np.full(1 << n, 2.0 ** (-n / 2), dtype=np.complex128)
        for gamma, beta in zip(gammas, betas, strict=True):
            psi *= self.phase(gamma)
            for low in range(0, n, MIXER_GROUP_CPU):
                k = min(MIXER_GROUP_CPU, n - low)
                mixer = _rx_power(beta, k)  # symmetric: rows @ mixer is mixer @ columns
                if low == 0:  # the lowest bits: one matrix product, far cheaper than the batched form
                    psi = (psi.reshape(-1, 1 << k) @ mixer).reshape(-1)
                else:  # bits low..low+k-1 of the index become the middle axis
                    psi = np.matmul(mixer, psi.reshape(-1, 1 << k, 1 << low)).reshape(-1)
        return psi

    def probs(self, gammas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        psi = self.state(gammas, betas)
        return np.asarray(psi.real**2 + psi.imag**2)


_KERNELS = r"""
// REAL, CPLX (double2 or float2: x real, y imaginary) and K (bits mixed in registers) are defined in
// front of this source.
typedef REAL real;
typedef CPLX cplx;

// c self - i s other: one output of RX(2 beta) on the pair (self, other)
__device__ __forceinline__ cplx rx(cplx self, cplx other, real c, real s) {
    cplx r;
    r.x = c * self.x + s * other.y;
    r.y = c * self.y - s * other.x;
    return r;
}

extern "C" __global__ void ising_diagonal(double* out, const double* h, const double* j, int n,
                                          long long size) {
    for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < size;
         b += (long long)gridDim.x * blockDim.x) {
        double e = 0.0;
        for (int a = 0; a < n; ++a) {
            double acc = h[a];
            for (int c = a + 1; c < n; ++c) acc += ((b >> (n - 1 - c)) & 1) ? -j[a * n + c] : j[a * n + c];
            e += ((b >> (n - 1 - a)) & 1) ? -acc : acc;
        }
        out[b] = e;
    }
}

// One pass: RX(2 beta) on bits q0 .. q0+K-1 of every index (in registers); in the first pass of a layer
// (FIRST), before that, the phase exp(-i gamma E) and RX on bits 0 .. lanes-1 (across the warp's lanes:
// needs q0 == lanes).
template <bool FIRST>
__device__ __forceinline__ void pass(cplx* psi, const double* diag, double gamma, real c, real s, int q0,
                                     int lanes, long long threads) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= threads) return;
    long long base = ((t >> q0) << (q0 + K)) | (t & ((1LL << q0) - 1));
    const long long stride = 1LL << q0;
    cplx* p = psi + base;
    cplx v[1 << K];
#pragma unroll
    for (int m = 0; m < (1 << K); ++m) v[m] = p[m * stride];
    if (FIRST) {
        unsigned mask = threads >= 32 ? 0xffffffffu : (unsigned)((1ULL << threads) - 1);
#pragma unroll
        for (int m = 0; m < (1 << K); ++m) {
            double sn, cs;
            sincos(gamma * diag[base + m * stride], &sn, &cs);
            cplx a = v[m];
            v[m].x = (real)(cs * a.x + sn * a.y);  // a * (cos - i sin)
            v[m].y = (real)(cs * a.y - sn * a.x);
        }
        for (int bit = 0; bit < lanes; ++bit) {
#pragma unroll
            for (int m = 0; m < (1 << K); ++m) {
                cplx other;
                other.x = __shfl_xor_sync(mask, v[m].x, 1 << bit);
                other.y = __shfl_xor_sync(mask, v[m].y, 1 << bit);
                v[m] = rx(v[m], other, c, s);
            }
        }
    }
#pragma unroll
    for (int bit = 0; bit < K; ++bit) {
#pragma unroll
        for (int m = 0; m < (1 << K); ++m) {
            if (m & (1 << bit)) continue;
            cplx a = v[m];
            v[m] = rx(a, v[m | (1 << bit)], c, s);
            v[m | (1 << bit)] = rx(v[m | (1 << bit)], a, c, s);
        }
    }
#pragma unroll
    for (int m = 0; m < (1 << K); ++m) p[m * stride] = v[m];
}

extern "C" __global__ void first_pass(cplx* psi, const double* diag, double gamma, real c, real s, int q0,
                                      int lanes, long long threads) {
    pass<true>(psi, diag, gamma, c, s, q0, lanes, threads);
}

extern "C" __global__ void mix_pass(cplx* psi, const double* diag, double gamma, real c, real s, int q0,
                                    int lanes, long long threads) {
    pass<false>(psi, diag, gamma, c, s, q0, lanes, threads);
}
"""


@cache
def _module(real: str, k: int) -> Any:
    import cupy as cp

    return cp.RawModule(code=kernel_source(real, k), options=("-std=c++17",))


@cache
def _probability_kernel() -> Any:
    import cupy as cp

    source = "p = (double)z.real() * z.real() + (double)z.imag() * z.imag()"
    return cp.ElementwiseKernel("T z", "float64 p", source, "qx_probability")


def compile_kernels(dtype: Any = np.complex128) -> None:
    """Compile every kernel variant of ``dtype`` now (CuPy also keeps them on disk), so that a solver
    process's first job does not pay it (~2 s on the H100 and H200 measured)."""
    import cupy as cp

    real = _c_real(dtype)
    for k in range(GROUP_BITS + 1):
        _module(real, k).get_function("mix_pass")  # the module holds every kernel of this K
    _probability_kernel()(cp.zeros(1, dtype=dtype))


def _c_real(dtype: Any) -> str:
    """The kernels' real type for a complex dtype."""
    return "double" if np.dtype(dtype) == np.complex128 else "float"


def kernel_source(real: str, k: int) -> str:
    return f"#define REAL {real}\n#define CPLX {real}2\n#define K {k}\n{_KERNELS}"


def gpu_passes(n: int, group_bits: int = GROUP_BITS) -> list[tuple[int, int, int]]:
    """(q0, K, lanes) of each pass of one layer: the first holds the phase and the lane bits."""
    lanes = min(LANE_BITS, n)
    passes = [(lanes, min(group_bits, n - lanes), lanes)]
    q0 = lanes + passes[0][1]
    while q0 < n:
        k = min(group_bits, n - q0)
        passes.append((q0, k, 0))
        q0 += k
    return passes


class GpuStatevector:
    """The QAOA state on a CUDA GPU through CuPy (``complex128`` by default, ``complex64`` for speed)."""

    device = "qxedge.gpu"

    def __init__(
        self, h: np.ndarray, j: np.ndarray, dtype: Any = np.complex128, group_bits: int = GROUP_BITS
    ) -> None:
        import cupy as cp  # ImportError without the gpu extra; CUDARuntimeError without a GPU

        self.xp = cp
        self.n = n = len(h)
        self.dtype = np.dtype(dtype)
        self.real = _c_real(self.dtype)
        self.scalar = np.finfo(self.dtype).dtype.type  # float64 or float32: the kernels' c and s
        self.passes = gpu_passes(n, group_bits)
        h_d = cp.asarray(np.asarray(h, np.float64))
        j_d = cp.asarray(np.ascontiguousarray(np.triu(np.asarray(j, np.float64), 1)))
        self.diagonal = cp.empty(1 << n, dtype=cp.float64)
        kernel = _module(self.real, self.passes[0][1]).get_function("ising_diagonal")
        blocks = min(((1 << n) + 255) // 256, 65536)
        kernel((blocks,), (256,), (self.diagonal, h_d, j_d, np.int32(n), np.int64(1 << n)))
        self.psi = cp.empty(1 << n, dtype=self.dtype)

    def evolve(self, gammas: np.ndarray, betas: np.ndarray) -> Any:
        """The state after the circuit, on the GPU (the same buffer every call)."""
        self.psi.fill(2.0 ** (-self.n / 2))
        for gamma, beta in zip(gammas, betas, strict=True):
            self.layer(float(gamma), float(beta))
        return self.psi

    def layer(self, gamma: float, beta: float) -> None:
        """One QAOA layer on the state in place: phase exp(-i gamma E), then RX(2 beta) on every wire."""
        c, s = self.scalar(np.cos(beta)), self.scalar(np.sin(beta))
        for q0, k, lanes in self.passes:
            threads = (1 << self.n) >> k
            block = min(256, threads)
            args = (self.psi, self.diagonal, np.float64(gamma), c, s, np.int32(q0), np.int32(lanes))
            mix = _module(self.real, k).get_function("first_pass" if lanes else "mix_pass")
            mix(((threads + block - 1) // block,), (block,), (*args, np.int64(threads)))

    def state(self, gammas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        return np.asarray(self.evolve(gammas, betas).get())

    def probs(self, gammas: np.ndarray, betas: np.ndarray) -> Any:
        """|amplitude|^2 of every basis state as float64, on the GPU (one pass, no temporaries)."""
        return _probability_kernel()(self.evolve(gammas, betas))

    def expectation(self, gammas: np.ndarray, betas: np.ndarray) -> float:
        """<E> of the final state, reduced on the GPU (nothing of size 2^n crosses to the host). A cuBLAS
        dot (a CuPy ReductionKernel doing the same was x6 slower at n = 24 on an H100)."""
        return float(self.probs(gammas, betas) @ self.diagonal)
