"""The full feature engine: the window as one Polars frame, every statistic from one ``group_by``.

An update appends the batch to the retained frame as one frame, trims what fell out of the window and
aggregates in one ``group_by`` (Polars releases the GIL: > 1M readings/s). It costs ~1 ms of fixed Polars
overhead per call whatever the window's size: the engine for big batches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import polars as pl

from qxedge.agent.features._stats import SCHEMA, WindowSpec, stat_expr
from qxedge.agent.features._table import Features, Key
from qxedge.connectors.readings import ReadingBatch


class FullEngine:
    """A :class:`~qxedge.agent.features.FeatureEngine` recomputing the whole window at every update."""

    def __init__(
        self, length_s: float, stats: Sequence[str], min_samples: int = 2, min_coverage: float = 0.0
    ) -> None:
        self._start(WindowSpec.of(length_s, stats, min_samples, min_coverage))

    @classmethod
    def of(
        cls, spec: WindowSpec, frame: pl.DataFrame | None = None, told: Collection[Key] = ()
    ) -> FullEngine:
        """The engine holding ``frame`` (columns of ``SCHEMA``), whose last update reported ``told``."""
        engine = cls.__new__(cls)
        engine._start(spec, frame, told)
        return engine

    def _start(self, spec: WindowSpec, frame: pl.DataFrame | None = None, told: Collection[Key] = ()) -> None:
        self.spec = spec
        self.stats = list(spec.stats)
        self._aggs = [stat_expr(s).alias(s) for s in spec.stats]
        self.frame = pl.DataFrame(schema=SCHEMA) if frame is None else frame  # the readings in the window
        self._told = told  # the keys of the last update's ``latest`` (for ``gone``)

    @property
    def rows(self) -> int:
        return self.frame.height

    @property
    def told(self) -> Collection[Key]:
        return self._told

    def update(self, batch: ReadingBatch, now: float) -> Features:
        spec = self.spec
        frame = self.frame
        if len(batch):
            new = pl.DataFrame(
                {"asset": batch.assets, "signal": batch.signals, "ts": batch.ts, "value": batch.values},
                schema=SCHEMA,
            )
            frame = pl.concat([frame, new], rechunk=False)
        frame = frame.filter(pl.col("ts") > now - spec.length_s)
        if frame.n_chunks() > 16:  # one chunk per update: copy the window only now and then
            frame = frame.rechunk()
        self.frame = frame
        grouped = frame.group_by("asset", "signal").agg(
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            pl.len().alias("n"),
            pl.col("value").sort_by("ts", maintain_order=True).last().alias("\x1flatest"),
            *self._aggs,
        )
        keys = zip(grouped.get_column("asset").to_list(), grouped.get_column("signal").to_list(), strict=True)
        newest = zip(
            grouped.get_column("end").to_list(), grouped.get_column("\x1flatest").to_list(), strict=True
        )
        latest = dict(zip(keys, newest, strict=True))
        gone = [key for key in self._told if key not in latest]
        self._told = latest.keys()
        stats = grouped.drop("\x1flatest").filter(
            (pl.col("n") >= spec.min_samples) & (pl.col("end") - pl.col("start") >= spec.min_span_s)
        )
        return Features(stats, now, latest, stats=self.stats, gone=gone)
