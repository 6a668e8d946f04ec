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
        """Rows for every matching asset that has every input (``signal.stat``), float32 in input order.

        The statistics table holds one row per (asset, signal), a few hundred at most: after one Polars
        filter the rows are assembled in Python, several times cheaper than a pivot and a join at
        every evaluation (bench/latency.py)."""
        parts = [f.rpartition(".") for f in inputs]
        stats = list(dict.fromkeys(stat for _, _, stat in parts))
        rows = self.frame.filter(pl.col("signal").is_in(list({signal for signal, _, _ in parts})))
        cols = rows.select("asset", "signal", "start", "end", *stats).to_dict(as_series=False)
        index = {key: i for i, key in enumerate(zip(cols["asset"], cols["signal"], strict=True))}
        assets, values, starts, ends = [], [], [], []
        for asset in sorted({a for a in cols["asset"] if any(fnmatch.fnmatchcase(a, p) for p in patterns)}):
            found = [index.get((asset, signal)) for signal, _, _ in parts]
            at = [i for i in found if i is not None]
            if len(at) < len(found):
                continue
            row = [cols[stat][i] for (_, _, stat), i in zip(parts, at, strict=True)]
            if None in row:  # e.g. the slope of readings that all share one ts
                continue
            assets.append(asset)
            values.append(row)
            starts.append(min(cols["start"][i] for i in at))
            ends.append(max(cols["end"][i] for i in at))
        matrix = np.array(values, np.float32) if values else np.empty((0, len(inputs)), np.float32)
        return FeatureMatrix(assets, matrix, starts, ends)


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
        frame = frame.filter(pl.col("ts") > now - self.length_s)
        if frame.n_chunks() > 16:  # one chunk per update: copy the window only now and then
            frame = frame.rechunk()
        self._frame = frame
        grouped = frame.group_by("asset", "signal").agg(
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            pl.len().alias("n"),
            pl.col("value").sort_by("ts").last().alias("\x1flatest"),
            *self._aggs,
        )
        keys = zip(grouped.get_column("asset").to_list(), grouped.get_column("signal").to_list(), strict=True)
        newest = zip(
            grouped.get_column("end").to_list(), grouped.get_column("\x1flatest").to_list(), strict=True
        )
        latest = dict(zip(keys, newest, strict=True))
        stats = grouped.drop("\x1flatest").filter(
            (pl.col("n") >= self.min_samples) & (pl.col("end") - pl.col("start") >= self.min_span_s)
        )
        return Features(stats, now, latest)
