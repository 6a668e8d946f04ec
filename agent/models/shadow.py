"""A new model in shadow: scored on the same features as the model in force, never acted on.

At each evaluation the agent hands the shadow the window's features and the in-force model's scores
(:meth:`Shadow.score`, on the evaluation's thread); the shadow scores the same assets and the
:class:`Comparison` keeps both: agreement at the rule threshold (both above it or both not), the score
distributions, the time per run. :meth:`Comparison.failure` judges it against the ``shadow`` bounds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from qxedge.agent.features import Features
from qxedge.agent.inference import OnnxModel
from qxedge.agent.models.config import ShadowConfig
from qxedge.agent.models.manifest import Manifest

MAX_PAIRS = 100_000  # scores kept for the distributions (the oldest go first)


def _distribution(scores: np.ndarray) -> dict[str, float]:
    if not len(scores):
        return {}
    return {
        "mean": float(scores.mean()),
        "p50": float(np.median(scores)),
        "p95": float(np.quantile(scores, 0.95)),
        "max": float(scores.max()),
    }


class Comparison:
    """The in-force model's and the shadow's scores of the same (asset, evaluation) pairs."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.evaluations = 0  # evaluations in which the shadow scored at least one asset
        self.pairs = 0
        self.agreed = 0
        self.nonfinite = 0  # shadow scores that were NaN or infinite
        self.runs = 0
        self.in_force_s = 0.0
        self.shadow_s = 0.0
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._kept = 0

    def add(self, in_force: np.ndarray, shadow: np.ndarray, in_force_s: float, shadow_s: float) -> None:
        self.runs += 1
        self.in_force_s += in_force_s
        self.shadow_s += shadow_s
        if not len(shadow):
            return
        self.evaluations += 1
        finite = np.isfinite(shadow)
        self.nonfinite += int((~finite).sum())
        self.pairs += len(shadow)
        t = self.threshold
        self.agreed += int(((in_force > t) == (shadow > t)).sum())
        self._a.append(in_force[finite])
        self._b.append(shadow[finite])
        self._kept += int(finite.sum())
        while self._kept > MAX_PAIRS and len(self._a) > 1:
            self._kept -= len(self._a.pop(0))
            self._b.pop(0)

    @property
    def agreement(self) -> float:
        return self.agreed / self.pairs if self.pairs else math.nan

    def summary(self) -> dict[str, Any]:
        a = np.concatenate(self._a) if self._a else np.empty(0)
        b = np.concatenate(self._b) if self._b else np.empty(0)
        shift = (float(np.median(b)) - float(np.median(a))) / self.threshold if len(a) else math.nan
        per_run = 1e6 / self.runs if self.runs else math.nan
        return {
            "evaluations": self.evaluations,
            "pairs": self.pairs,
            "threshold": self.threshold,
            "agreement": self.agreement,
            "median_shift": shift,  # (shadow - in force) median, in units of the threshold
            "nonfinite": self.nonfinite,
            "in_force": _distribution(a),
            "shadow": _distribution(b),
            "latency_us": {"in_force": self.in_force_s * per_run, "shadow": self.shadow_s * per_run},
        }

    def failure(self, bounds: ShadowConfig) -> str | None:
        """Why the shadow fails its bounds, or None when it passes."""
        if not self.pairs:
            return "it scored no asset during the shadow period (missing features?)"
        if self.nonfinite:
            return f"{self.nonfinite} of its {self.pairs} scores were not finite"
        if self.agreement < bounds.min_agreement:
            return (
                f"agreement {self.agreement:.1%} with the model in force at threshold {self.threshold:g} "
                f"is under {bounds.min_agreement:.1%} ({self.pairs} scores)"
            )
        shift = self.summary()["median_shift"]
        if bounds.max_median_shift is not None and abs(shift) > bounds.max_median_shift:
            return (
                f"its median score moved by {shift:+.2f} x the threshold (bound {bounds.max_median_shift:g})"
            )
        if bounds.max_latency_ratio is not None and self.in_force_s > 0:
            ratio = self.shadow_s / self.in_force_s
            bound = bounds.max_latency_ratio
            if ratio > bound:
                return f"it runs {ratio:.1f}x slower than the model in force (bound {bound:g}x)"
        return None


class Shadow:
    """A candidate model, its manifest, and its comparison with the model in force."""

    def __init__(self, model: OnnxModel, manifest: Manifest, threshold: float, started_at: float) -> None:
        self.model = model
        self.manifest = manifest
        self.sha256 = manifest.model.sha256
        self.started_at = started_at  # time.monotonic()
        self.comparison = Comparison(threshold)
        self.failed: str | None = None  # set when scoring raised (the evaluation goes on)

    def score(
        self,
        features: Features,
        only: Collection[str] | None,
        assets: Sequence[str],
        scores: np.ndarray,
        in_force_s: float,
    ) -> None:
        """Score what the model in force scored (``assets``, ``scores``) in this evaluation, once its
        decision is out (on the evaluation's thread: the loop, or a worker for a large one). A failure
        is recorded, never raised: the evaluation must go on."""
        if self.failed is not None:
            return
        try:
            matrix = features.matrix(self.model.inputs, self.model.config.assets, only)
            started = time.perf_counter()
            shadow = self.model.score(matrix.values)
            took = time.perf_counter() - started
            at = {asset: i for i, asset in enumerate(matrix.assets)}
            pairs = [(i, at[a]) for i, a in enumerate(assets) if a in at]
            mine = np.array([shadow[j] for _, j in pairs], np.float64)
            theirs = np.array([scores[i] for i, _ in pairs], np.float64)
            self.comparison.add(theirs, mine, in_force_s, took)
        except Exception as exc:  # onnxruntime's own errors, a shape it refuses: the shadow fails
            self.failed = f"scoring failed: {type(exc).__name__}: {exc}"
