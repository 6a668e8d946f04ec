"""What an update of the feature window gives: :class:`Features`, one row per (asset, signal) with a
column per statistic, and the :class:`FeatureMatrix` a model reads from it."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from qxedge.agent._patterns import matching

Key = tuple[str, str]
Row = tuple[Any, ...]  # start, end, n, <stat>..., newest value (None where Polars gives null)


class Features:
    """One row per (asset, signal) with a column per statistic, plus the window's bounds.

    Made from a Polars ``frame`` (the full engine) or from ``rows`` (the incremental engine:
    asset -> signal -> (start, end, n, <stat>..., newest value)); each form is derived from the other on
    demand.
    ``gone`` names the (asset, signal) keys whose last reading left the window in this update."""

    __slots__ = ("_by_asset", "_frame", "_rows", "computed_at", "gone", "latest", "stats")

    def __init__(
        self,
        frame: pl.DataFrame | None,
        computed_at: float,
        latest: Mapping[Key, tuple[float, float]],  # (asset, signal) -> (ts, value) of the newest reading
        *,
        rows: Mapping[str, Mapping[str, Row]] | None = None,
        stats: Sequence[str] = (),
        gone: Sequence[Key] = (),
    ) -> None:
        if frame is None and rows is None:
            raise ValueError("Features needs a frame or rows")
        self._frame = frame
        self._rows = rows
        self._by_asset: dict[str, dict[str, float]] | None = None  # by_asset() of the frame, once
        self.computed_at = computed_at
        self.latest = latest
        self.stats = list(stats)
        self.gone = gone

    @property
    def frame(self) -> pl.DataFrame:  # asset, signal, start, end, n, <stat>...
        if self._frame is None:
            assert self._rows is not None
            keys = [(a, s) for a, signals in self._rows.items() for s in signals]
            flat = [row for signals in self._rows.values() for row in signals.values()]
            columns: list[list[Any]] = [list(c) for c in zip(*flat, strict=True)] or [
                [] for _ in range(3 + len(self.stats))
            ]
            data: dict[str, Any] = {
                "asset": pl.Series("asset", [a for a, _ in keys], pl.String),
                "signal": pl.Series("signal", [s for _, s in keys], pl.String),
                "start": pl.Series("start", columns[0], pl.Float64),
                "end": pl.Series("end", columns[1], pl.Float64),
                "n": pl.Series("n", columns[2], pl.UInt32),
            }
            for i, stat in enumerate(self.stats):
                data[stat] = pl.Series(stat, columns[3 + i], pl.Float64)
            self._frame = pl.DataFrame(data)
        return self._frame

    def by_asset(self, assets: Collection[str] | None = None) -> dict[str, dict[str, float]]:
        """Every finite statistic of every asset (of ``assets`` when given) as ``{"signal.stat": value}``
        (telemetry records, a slice of assets at a time: from rows looked up per asset, from a frame
        computed once for all)."""
        if self._rows is None:
            if self._by_asset is None:
                table = self.frame.select("asset", "signal", *self.stats).rows()
                self._by_asset = _stats_by_asset(self.stats, ((a, s, row) for a, s, *row in table))
            every = self._by_asset
            return every if assets is None else {a: every[a] for a in assets if a in every}
        rows = self._rows
        picked = rows.items() if assets is None else ((a, rows[a]) for a in assets if a in rows)
        return _stats_by_asset(
            self.stats, ((a, s, row[3:-1]) for a, signals in picked for s, row in signals.items())
        )

    def assets(self, patterns: Sequence[str]) -> list[str]:
        if self._rows is not None:
            return matching(self._rows, patterns)
        return matching(set(self.frame.get_column("asset").to_list()), patterns)

    def matrix(
        self, inputs: Sequence[str], patterns: Sequence[str] = ("*",), only: Collection[str] | None = None
    ) -> FeatureMatrix:
        """Rows for every matching asset (of those in ``only`` when given) that has every input
        (``signal.stat``), float32 in input order.

        The statistics table holds one row per (asset, signal), a few hundred at most: after one Polars
        filter (or none, from the incremental engine's rows) the rows are assembled in Python, several
        times cheaper than a pivot and a join at every evaluation (bench/latency.py)."""
        parts = [f.rpartition(".") for f in inputs]
        if self._rows is not None:
            return self._matrix_of_rows(self._rows, parts, patterns, only)
        stats = list(dict.fromkeys(stat for _, _, stat in parts))
        signals = {signal for signal, _, _ in parts}
        rows = self.frame.filter(pl.col("signal").is_in(list(signals)))
        cols: dict[str, list[Any]] = rows.select("asset", "signal", "start", "end", *stats).to_dict(
            as_series=False
        )
        index = {key: i for i, key in enumerate(zip(cols["asset"], cols["signal"], strict=True))}
        assets, values, starts, ends = [], [], [], []
        names = {a for a in cols["asset"] if only is None or a in only}
        for asset in matching(names, patterns):
            found = [index.get((asset, signal)) for signal, _, _ in parts]
            at_rows = [i for i in found if i is not None]
            if len(at_rows) < len(found):
                continue
            row = [cols[stat][i] for (_, _, stat), i in zip(parts, at_rows, strict=True)]
            if None in row:  # e.g. the slope of readings that all share one ts
                continue
            assets.append(asset)
            values.append(row)
            starts.append(min(cols["start"][i] for i in at_rows))
            ends.append(max(cols["end"][i] for i in at_rows))
        return FeatureMatrix.of(assets, values, starts, ends, len(inputs))

    def _matrix_of_rows(
        self,
        rows: Mapping[str, Mapping[str, Row]],
        parts: list[tuple[str, str, str]],
        patterns: Sequence[str],
        only: Collection[str] | None,
    ) -> FeatureMatrix:
        """The same from the incremental engine's rows, looked up per asset and signal: nothing to
        assemble first, and only the assets asked for are visited (the probe's evaluation in
        bench/latency.py)."""
        at = {"start": 0, "end": 1, **{s: 3 + i for i, s in enumerate(self.stats)}}
        missing = [stat for _, _, stat in parts if stat not in at]
        if missing:
            raise pl.exceptions.ColumnNotFoundError(", ".join(dict.fromkeys(missing)))
        assets, values, starts, ends = [], [], [], []
        for asset in matching(rows if only is None else only, patterns):
            signals = rows.get(asset)
            if signals is None:
                continue
            picked = [r for signal, _, _ in parts if (r := signals.get(signal)) is not None]
            if len(picked) < len(parts):
                continue
            row = [r[at[stat]] for r, (_, _, stat) in zip(picked, parts, strict=True)]
            if None in row:  # e.g. the slope of readings that all share one ts
                continue
            assets.append(asset)
            values.append(row)
            starts.append(min(r[0] for r in picked))
            ends.append(max(r[1] for r in picked))
        return FeatureMatrix.of(assets, values, starts, ends, len(parts))


def _stats_by_asset(
    stats: Sequence[str], rows: Iterable[tuple[str, str, Sequence[Any]]]
) -> dict[str, dict[str, float]]:
    """(asset, signal, values in ``stats`` order) -> asset -> {"signal.stat": value}, finite values only."""
    out: dict[str, dict[str, float]] = {}
    for asset, signal, values in rows:
        per = out.setdefault(asset, {})
        for stat, value in zip(stats, values, strict=True):
            if value is not None and math.isfinite(value):
                per[f"{signal}.{stat}"] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    assets: list[str]
    values: np.ndarray  # (len(assets), n_inputs) float32
    starts: list[float]
    ends: list[float]

    @staticmethod
    def of(
        assets: list[str], values: list[list[Any]], starts: list[float], ends: list[float], width: int
    ) -> FeatureMatrix:
        matrix = np.array(values, np.float32) if values else np.empty((0, width), np.float32)
        return FeatureMatrix(assets, matrix, starts, ends)
