"""Seeded random binary quadratic models and an independent reference for their optimum."""

from __future__ import annotations

import dimod
import numpy as np
from dimod.typing import VartypeLike

from qxedge.hybrid.wire import unlabel_sample


def random_bqm(
    n: int, density: float, seed: int, vartype: VartypeLike = "BINARY"
) -> dimod.BinaryQuadraticModel:
    """``n`` variables, each pair coupled with probability ``density``, integer biases in [-100, 100]."""
    rng = np.random.default_rng(seed)
    return dimod.generators.gnp_random_bqm(
        n,
        density,
        vartype,
        random_state=seed,
        bias_generator=lambda size: rng.integers(-100, 101, size).astype(float).tolist(),
    )


def optimum(bqm: dimod.BinaryQuadraticModel) -> float:
    """The lowest energy, by dimod's brute force: an independent reference."""
    return float(dimod.ExactSolver().sample(bqm).first.energy)  # type: ignore[no-untyped-call]


def sample_energy(bqm: dimod.BinaryQuadraticModel, sample: dict[str, int]) -> float:
    return float(bqm.energy(unlabel_sample(bqm, sample)))
