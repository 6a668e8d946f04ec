"""What both feature engines compute: the statistics (as Polars expressions and over NumPy arrays, kept
side by side so they agree) and the window's settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

SCHEMA = {"asset": pl.String, "signal": pl.String, "ts": pl.Float64, "value": pl.Float64}


def stat_expr(name: str) -> pl.Expr:
    """The statistic ``name`` of a group's readings (columns ``ts`` and ``value``), for Polars."""
    v, t = pl.col("value"), pl.col("ts")
    match name:
        case "mean" | "std" | "min" | "max" | "median":
            expr: pl.Expr = getattr(v, name)()
            return expr
        case "first":  # by time, whatever the arrival order (readings sharing one ts: the first to come)
            return v.sort_by(t, maintain_order=True).first()
        case "last":
            return v.sort_by(t, maintain_order=True).last()
        case "count":
            return v.count().cast(pl.Float64)
        case "range":
            return v.max() - v.min()
        case "slope":  # least-squares slope in units per second
            tc = t - t.mean()
            return ((tc * (v - v.mean())).sum() / (tc * tc).sum()).fill_nan(None)
    raise ValueError(f"unknown statistic {name!r}")


def np_stat(name: str, ts: np.ndarray, v: np.ndarray) -> float | None:
    """``stat_expr`` for one key's readings, ``ts`` sorted (``v`` in the same order), ``len(v) >= 1``."""
    match name:
        case "mean":
            return float(v.mean())
        case "std":  # Polars' default: ddof = 1, null for one reading
            return float(v.std(ddof=1)) if len(v) > 1 else None
        case "min":
            return float(v.min())
        case "max":
            return float(v.max())
        case "median":
            return float(np.median(v))
        case "first":
            return float(v[0])
        case "last":
            return float(v[-1])
        case "count":
            return float(len(v))
        case "range":
            return float(v.max() - v.min())
        case "slope":
            tc = ts - ts.mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                slope = float((tc * (v - v.mean())).sum() / (tc * tc).sum())
            return None if np.isnan(slope) else slope
    raise ValueError(f"unknown statistic {name!r}")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """The retained readings of the last ``length_s`` seconds; a signal gets statistics once it has
    ``min_samples`` readings spanning ``min_coverage`` of the window (a half-filled window after a start
    or a gap would give misleading std and slope)."""

    length_s: float
    stats: tuple[str, ...]
    min_samples: int
    min_span_s: float

    @classmethod
    def of(
        cls, length_s: float, stats: Sequence[str], min_samples: int = 2, min_coverage: float = 0.0
    ) -> WindowSpec:
        """ValueError naming an unknown statistic."""
        names = tuple(dict.fromkeys(stats))
        for s in names:
            stat_expr(s)
            np_stat(s, np.zeros(1), np.zeros(1))
        return cls(length_s, names, min_samples, min_coverage * length_s)
