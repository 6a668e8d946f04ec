"""Per-signal rolling windows and their statistics, computed with Polars.

Readings accumulate as a columnar ReadingBatch (no per-reading object). Every ``every_s`` the agent
hands the batch to :meth:`FeatureWindow.update`, which appends it to the retained window as one frame,
drops what fell out of ``length_s``, and aggregates every (asset, signal) in one ``group_by``. The
result, a :class:`Features` table, turns into the matrix a model declares with :meth:`Features.matrix`.
Polars releases the GIL, so ``update`` runs in a worker thread while the loop keeps ingesting.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from connectors.readings import ReadingBatch

_SCHEMA = {"asset": pl.String, "signal": pl.String, "ts": pl.Float64, "value": pl.Float64}


def _stat(name: str) -> pl.Expr:
    v, t = pl.col("value"), pl.col("ts")
    match name:
        case "mean" | "std" | "min" | "max" | "median":
            expr: pl.Expr = getattr(v, name)()
            return expr
        case "first":  # by time, whatever the arrival order
            return v.sort_by(t).first()
        case "last":
            return v.sort_by(t).last()
        case "count":
            return v.count().cast(pl.Float64)
        case "range":
            return v.max() - v.min()
        case "slope":  # least-squares slope in units per second
            tc = t - t.mean()
            return ((tc * (v - v.mean())).sum() / (tc * tc).sum()).fill_nan(None)
    raise ValueError(f"unknown statistic {name!r}")


@dataclass(frozen=True, slots=True)
class Features:
    """One row per (asset, signal) with a column per statistic, plus the window's bounds."""

    frame: pl.DataFrame  # asset, signal, start, end, n, <stat>...
    computed_at: float
    latest: dict[tuple[str, str], tuple[float, float]]  # (asset, signal) -> (ts, value) of the newest reading

    def assets(self, patterns: Sequence[str]) -> list[str]:
        names = self.frame.get_column("asset").unique().sort().to_list()
        return [a for a in names if any(fnmatch.fnmatchcase(a, p) for p in patterns)]

    def matrix(self, inputs: Sequence[str], patterns: Sequence[str] = ("*",)) -> FeatureMatrix:
        """Rows for every matching asset that has every input (``signal.stat``), float32 in input order."""
        assets = self.assets(patterns)
        empty = FeatureMatrix([], np.empty((0, len(inputs)), np.float32), [], [])
        parts = [f.rpartition(".") for f in inputs]
        signals = list({signal for signal, _, _ in parts})
        stats = list({stat for _, _, stat in parts})
        rows = self.frame.filter(pl.col("asset").is_in(assets) & pl.col("signal").is_in(signals))
        wide = rows.pivot(on="signal", index="asset", values=stats, separator="\x1f")
        # pivot names a column "<stat>\x1f<signal>", or just "<signal>" when there is a single stat
        columns = [signal if len(stats) == 1 else f"{stat}\x1f{signal}" for signal, _, stat in parts]
        if any(c not in wide.columns for c in columns):
            return empty
        bounds = rows.group_by("asset").agg(pl.col("start").min(), pl.col("end").max())
        wide = wide.select("asset", *(pl.col(c).alias(f) for c, f in zip(columns, inputs, strict=True)))
        wide = wide.join(bounds, on="asset").drop_nulls().sort("asset")
        if wide.is_empty():
            return empty
        return FeatureMatrix(
            wide.get_column("asset").to_list(),
            wide.select(list(inputs)).to_numpy().astype(np.float32, copy=False),
            wide.get_column("start").to_list(),
            wide.get_column("end").to_list(),
        )


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    assets: list[str]
    values: np.ndarray  # (len(assets), n_inputs) float32
    starts: list[float]
    ends: list[float]


class FeatureWindow:
    """The retained readings of the last ``length_s`` seconds and their statistics.

    A signal gets statistics once it has ``min_samples`` readings spanning ``min_coverage`` of the
    window: a half-filled window after a start or a gap would give misleading std and slope.
    """

    def __init__(
        self, length_s: float, stats: Sequence[str], min_samples: int = 2, min_coverage: float = 0.0
    ) -> None:
        self.length_s = length_s
        self.stats = list(dict.fromkeys(stats))
        self.min_samples = min_samples
        self.min_span_s = min_coverage * length_s
        self._aggs = [_stat(s).alias(s) for s in self.stats]
        self._frame = pl.DataFrame(schema=_SCHEMA)

    @property
    def rows(self) -> int:
        return self._frame.height

    def update(self, batch: ReadingBatch, now: float) -> Features:
        """Add ``batch``, forget readings older than ``now - length_s``, and compute every statistic."""
        if len(batch):
            new = pl.DataFrame(
                {"asset": batch.assets, "signal": batch.signals, "ts": batch.ts, "value": batch.values},
                schema=_SCHEMA,
            )
            frame = pl.concat([self._frame, new], rechunk=False)
        else:
            frame = self._frame
        self._frame = frame.filter(pl.col("ts") > now - self.length_s).rechunk()
        newest = self._frame.group_by("asset", "signal").agg(
            pl.col("ts").max().alias("ts"), pl.col("value").sort_by("ts").last().alias("value")
        )
        latest = {(a, s): (t, v) for a, s, t, v in newest.iter_rows()}
        stats = (
            self._frame.group_by("asset", "signal")
            .agg(
                pl.col("ts").min().alias("start"),
                pl.col("ts").max().alias("end"),
                pl.len().alias("n"),
                *self._aggs,
            )
            .filter((pl.col("n") >= self.min_samples) & (pl.col("end") - pl.col("start") >= self.min_span_s))
        )
        return Features(stats, now, latest)
