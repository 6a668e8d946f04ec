"""The historian's Parquet, replayed through the agent's own feature window (training features).

The historian writes ``{root}/site={site}/date={YYYY-MM-DD}/*.parquet`` with columns ``asset``,
``signal``, ``ts`` (a UTC timestamp, or epoch seconds), ``value`` and ``seq``; Polars scans it with hive
partitioning, the date partitions outside ``[since, until)`` are pruned before any file is read.

The readings then go through :class:`~qxedge.agent.features.FeatureWindow` exactly as the agent feeds it
(one batch every ``window.every_s``, the window's ``update(batch, now)``, then ``Features.matrix``), so
a model is trained on the very features it is served: no second implementation to drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from qxedge.agent.config import WindowConfig
from qxedge.agent.features import FeatureWindow
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.errors import ModelError

COLUMNS = ("asset", "signal", "ts", "value")


@dataclass(frozen=True, slots=True)
class HistoryWindows:
    features: np.ndarray  # (rows, inputs) float32, in time order
    assets: list[str]  # the asset of each row
    times: np.ndarray  # epoch seconds of each row's evaluation
    readings: int  # readings read from the history


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def read_history(root: Path, site: str, since: float, until: float) -> pl.DataFrame:
    """The site's readings in ``[since, until)``, sorted by time: asset, signal, ts (epoch s), value."""
    folder = root / f"site={site}"
    if not folder.is_dir():
        raise ModelError(f"history {root}: no folder site={site} (the historian's Hive layout)")
    try:
        scan = pl.scan_parquet(folder / "**" / "*.parquet", hive_partitioning=True)
        schema = scan.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ModelError(f"history {folder}: cannot read its Parquet: {exc}") from exc
    absent = [c for c in COLUMNS if c not in schema]
    if absent:
        raise ModelError(f"history {folder}: the Parquet has no column {', '.join(absent)}")
    ts = pl.col("ts")
    if isinstance(schema["ts"], pl.Datetime):
        ts = ts.dt.epoch("us").cast(pl.Float64) / 1e6
    elif not schema["ts"].is_numeric():
        raise ModelError(f"history {folder}: column ts is {schema['ts']}, not a timestamp")
    if "date" in schema:  # the partition key: whole days outside the range are never read
        date = pl.col("date").cast(pl.String)
        scan = scan.filter((date >= _day(since)) & (date <= _day(math.nextafter(until, -math.inf))))
    try:
        frame = (
            scan.select(
                pl.col("asset").cast(pl.String),
                pl.col("signal").cast(pl.String),
                ts.alias("ts"),
                pl.col("value").cast(pl.Float64),
            )
            .filter((pl.col("ts") >= since) & (pl.col("ts") < until) & pl.col("value").is_finite())
            .sort("ts", maintain_order=True)
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ModelError(f"history {folder}: cannot read its Parquet: {exc}") from exc
    return frame


def windows(
    readings: pl.DataFrame, window: WindowConfig, inputs: Sequence[str], patterns: Sequence[str] = ("*",)
) -> HistoryWindows:
    """One feature row per matching asset and evaluation, as the agent would score them: a signal has
    features once its readings span the window's ``min_coverage`` (warm-up, after a gap), the agent's
    own rule."""
    fw = FeatureWindow(window.length_s, window.stats, window.min_samples, window.min_coverage)
    every = window.every_s
    ts = readings.get_column("ts").to_numpy()
    if len(ts) == 0:
        return HistoryWindows(np.empty((0, len(inputs)), np.float32), [], np.empty(0), 0)
    assets = readings.get_column("asset").to_list()
    signals = readings.get_column("signal").to_list()
    values = readings.get_column("value").to_list()
    ts_list = ts.tolist()
    rows: list[np.ndarray] = []
    row_assets: list[str] = []
    row_times: list[float] = []
    now = math.floor(ts[0] / every) * every
    at = 0
    while at < len(ts):
        if ts[at] > now + every + window.length_s:  # a gap longer than the window: jump over it
            now = math.floor(ts[at] / every) * every
            fw.update(ReadingBatch(), now)  # (everything before it leaves the window)
        now += every
        end = int(np.searchsorted(ts, now, side="right"))
        batch = ReadingBatch(assets[at:end], signals[at:end], ts_list[at:end], values[at:end])
        at = end
        m = fw.update(batch, now).matrix(inputs, patterns)
        if len(m.assets):
            rows.append(m.values)
            row_assets.extend(m.assets)
            row_times.extend([now] * len(m.assets))
    features = np.concatenate(rows) if rows else np.empty((0, len(inputs)), np.float32)
    return HistoryWindows(features, row_assets, np.array(row_times), len(ts))
