"""Per-signal rolling windows and their statistics: Polars for batches, NumPy per signal for a few readings.

Readings accumulate as a columnar ReadingBatch (no per-reading object). Every ``every_s`` (or, with
``window.trigger: readings``, as soon as readings are pending) the agent hands the batch to
:meth:`FeatureWindow.update`, which adds it to the retained window, drops what fell out of
``length_s``, and computes the statistics of every (asset, signal). The result, a :class:`Features`
table, turns into the matrix a model declares with :meth:`Features.matrix`. ``update`` runs in a worker
thread while the loop keeps ingesting.

Two engines give the same statistics (to float rounding; ``tests/test_features_incremental.py``):

- *full*: a batch of more than ``SMALL_BATCH`` readings is appended to the retained Polars frame as one
  frame, trimmed, and aggregated in one ``group_by`` (Polars releases the GIL: > 1M readings/s);
- *incremental*: an update of a few readings (the ``trigger: readings`` case) touches only the
  (asset, signal) keys it brings, plus the keys whose oldest reading fell out of the window (found in a
  heap of each key's oldest time, not by a scan). Each key keeps its readings as NumPy arrays sorted by
  time; the key's statistics are recomputed from them and the others are kept, and so is the set of
  keys ready to report and the newest reading of each, as persistent maps (``immutables.Map``): every
  :class:`Features` keeps its own snapshot (later updates may run in a worker thread while the loop reads
  it) without copying the window's keys. A whole-window ``group_by`` costs ~1 ms of fixed Polars
  overhead per call whatever its size; this costs a few µs per touched key. The per-key arrays are cut
  from the Polars frame when the first small update comes after a full one, and the frame is rebuilt
  from the arrays when the next full update comes (never both kept up to date at once). Once cut, the
  keys also take a bigger batch (up to ``MAX_KEYS_BATCH`` readings on at most ``MAX_TOUCHED`` keys: a
  burst after the loop was busy) rather than switching engines: going back and forth costs O(keys)
  each way, and on a plant of thousands of signals each burst then made the next one bigger.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import immutables
import numpy as np
import polars as pl

from qxedge.agent.patterns import matching
from qxedge.connectors.readings import ReadingBatch

_SCHEMA = {"asset": pl.String, "signal": pl.String, "ts": pl.Float64, "value": pl.Float64}

SMALL_BATCH = 64  # at most this many readings: the incremental engine
MAX_TOUCHED = 256  # more keys to recompute than this: one Polars group_by is cheaper
MAX_CUT_ROWS = 262_144  # a larger window stays with the full engine
MAX_KEYS_BATCH = 4096  # once cut into keys, a batch up to this many readings stays incremental

Key = tuple[str, str]
Row = tuple[Any, ...]  # start, end, n, <stat>..., newest value (None where Polars gives null)


def _stat(name: str) -> pl.Expr:
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


def _np_stat(name: str, ts: np.ndarray, v: np.ndarray) -> float | None:
    """``_stat`` for one key's readings, ``ts`` sorted (``v`` in the same order), ``len(v) >= 1``."""
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


class Newest(Mapping[Key, tuple[float, float]]):
    """(asset, signal) -> (ts, value) of the newest reading, read from the incremental engine's rows
    (a pair kept per key was one more object per reading for the collector)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: immutables.Map[Key, Row]) -> None:
        self._rows = rows

    def __getitem__(self, key: Key) -> tuple[float, float]:
        row = self._rows[key]
        return row[1], row[-1]

    def get(self, key: Key, default: Any = None) -> Any:
        row = self._rows.get(key)
        return default if row is None else (row[1], row[-1])

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[Key]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Newest({dict(self)!r})"


Ready = immutables.Map[str, immutables.Map[str, Row]]  # asset -> signal -> row
_NO_ROWS: immutables.Map[str, Row] = immutables.Map()


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
        for s in self.stats:  # unknown names fail here, like the Polars expressions
            _np_stat(s, np.zeros(1), np.zeros(1))
        # Exactly one of the two holds the window: the Polars frame (None while the keys hold it) or
        # the per-key arrays (None while the frame holds it).
        self._frame: pl.DataFrame | None = pl.DataFrame(schema=_SCHEMA)
        self._times: dict[Key, np.ndarray] | None = None  # key -> its readings' ts, sorted
        self._values: dict[Key, np.ndarray] = {}  # key -> their values, in the same order
        self._ready: Ready = immutables.Map()  # the rows with enough readings to report
        # every row's start, and stale ones: a heap of floats and the keys beside it, not a heap of
        # (start, key) tuples (a plant's keys left that many tuples a second for the collector to walk)
        self._oldest: list[float] = []
        self._starting: dict[float, Key | list[Key]] = {}
        # every key's row (the incremental engine's), a snapshot per update: ``latest`` reads it
        self._rows: immutables.Map[Key, Row] = immutables.Map()
        self._told: Collection[Key] = ()  # the keys of the last update's ``latest`` (for ``gone``)
        self._count = 0  # readings in the window (read from the loop while an update runs in a thread)

    @property
    def rows(self) -> int:
        return self._count

    def update(self, batch: ReadingBatch, now: float) -> Features:
        """Add ``batch``, forget readings older than ``now - length_s``, and compute every statistic."""
        # once cut into keys, a burst stays with them, unless the window has grown past MAX_CUT_ROWS
        keys_take = MAX_KEYS_BATCH if self._times is not None and self._count <= MAX_CUT_ROWS else SMALL_BATCH
        if len(batch) <= keys_take:
            features = self._update_keys(batch, now)
            if features is not None:
                return features
        return self._update_frame(batch, now)

    # --- the full engine: one Polars group_by over the window

    def _update_frame(self, batch: ReadingBatch, now: float) -> Features:
        frame = self._frame if self._frame is not None else self._frame_of_keys()
        self._key_state(None)
        if len(batch):
            new = pl.DataFrame(
                {"asset": batch.assets, "signal": batch.signals, "ts": batch.ts, "value": batch.values},
                schema=_SCHEMA,
            )
            frame = pl.concat([frame, new], rechunk=False)
        frame = frame.filter(pl.col("ts") > now - self.length_s)
        if frame.n_chunks() > 16:  # one chunk per update: copy the window only now and then
            frame = frame.rechunk()
        self._frame = frame
        self._count = frame.height
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
            (pl.col("n") >= self.min_samples) & (pl.col("end") - pl.col("start") >= self.min_span_s)
        )
        return Features(stats, now, latest, stats=self.stats, gone=gone)

    def _frame_of_keys(self) -> pl.DataFrame:
        assert self._times is not None
        if not self._times:
            return pl.DataFrame(schema=_SCHEMA)
        keys = list(self._times)
        at = pl.Series(np.repeat(np.arange(len(keys)), [len(ts) for ts in self._times.values()]))
        return pl.DataFrame(
            {
                "asset": pl.Series([a for a, _ in keys], dtype=pl.String).gather(at),
                "signal": pl.Series([s for _, s in keys], dtype=pl.String).gather(at),
                "ts": np.concatenate(list(self._times.values())),
                "value": np.concatenate([self._values[key] for key in keys]),
            },
            schema=_SCHEMA,
        )

    # --- the incremental engine: NumPy over the keys an update touches

    def _cut_keys(self) -> None:
        """The per-key arrays and statistics from the Polars frame (after a full update)."""
        assert self._frame is not None
        frame = self._frame.sort("asset", "signal", "ts", maintain_order=True)
        self._frame = None
        groups = frame.group_by("asset", "signal", maintain_order=True).len()
        ts_all, v_all = frame.get_column("ts").to_numpy(), frame.get_column("value").to_numpy()
        self._key_state({})
        at = 0
        for asset, signal, n in groups.iter_rows():
            key, end = (asset, signal), at + n
            self._push_start(self._set(key, ts_all[at:end], v_all[at:end])[0], key)
            at = end

    def _key_state(self, times: dict[Key, np.ndarray] | None) -> None:
        """The incremental engine's state, empty (``times`` None: the frame holds the window)."""
        self._times, self._values = times, {}
        self._ready, self._rows, self._oldest, self._starting = immutables.Map(), immutables.Map(), [], {}

    def _push_start(self, start: float, key: Key) -> None:
        """Remember that ``key``'s oldest reading is at ``start`` (until it changes: then it is stale)."""
        held = self._starting.get(start)
        if held is None:
            self._starting[start] = key
            heapq.heappush(self._oldest, start)
        elif isinstance(held, list):
            held.append(key)
        else:
            self._starting[start] = [held, key]

    def _pop_due(self, cutoff: float) -> list[Key]:
        """The keys remembered with a start at or before ``cutoff`` (some of them stale), forgotten."""
        oldest, starting, due = self._oldest, self._starting, []
        while oldest and oldest[0] <= cutoff:
            held = starting.pop(heapq.heappop(oldest))
            if isinstance(held, list):
                due.extend(held)
            else:
                due.append(held)
        return due

    def _set(self, key: Key, ts: np.ndarray, v: np.ndarray) -> Row:
        """Keep ``key``'s readings (sorted, at least one) and recompute its row."""
        assert self._times is not None
        self._times[key], self._values[key] = ts, v
        start, end = float(ts[0]), float(ts[-1])
        row = (start, end, len(ts), *(_np_stat(s, ts, v) for s in self.stats), float(v[-1]))
        self._rows = self._rows.set(key, row)
        if len(ts) >= self.min_samples and end - start >= self.min_span_s:
            asset, signal = key
            self._ready = self._ready.set(asset, self._ready.get(asset, _NO_ROWS).set(signal, row))
        else:
            self._unready(key)
        return row

    def _unready(self, key: Key) -> None:
        asset, signal = key
        signals = self._ready.get(asset)
        if signals is not None and signal in signals:
            rest = signals.delete(signal)
            self._ready = self._ready.set(asset, rest) if rest else self._ready.delete(asset)

    def _update_keys(self, batch: ReadingBatch, now: float) -> Features | None:
        """The update from the per-key arrays; None when a full update is cheaper."""
        if self._times is None:
            assert self._frame is not None
            if self._frame.height > MAX_CUT_ROWS:
                return None  # a huge window: cutting it into keys costs more than a group_by
            self._cut_keys()
            assert self._times is not None
        times, values, rows = self._times, self._values, self._rows  # (rows: as before this update)
        cutoff = now - self.length_s
        added: dict[Key, tuple[list[float], list[float]]] = {}
        for asset, signal, t, value in zip(batch.assets, batch.signals, batch.ts, batch.values, strict=True):
            if t > cutoff:
                ts_new, v_new = added.setdefault((asset, signal), ([], []))
                ts_new.append(t)
                v_new.append(value)
        count = self._count
        touched = set(added)
        for key in self._pop_due(cutoff):  # keys whose oldest reading left the window
            if key in rows and rows[key][0] <= cutoff:  # else a stale entry: the key's start moved on
                touched.add(key)
        if len(touched) > MAX_TOUCHED:  # (the full engine drops the heap, popped entries and all)
            return None
        gone = []
        for key in touched:
            old_ts = times.get(key)
            if key in added:
                t_list, v_list = added[key]
                in_order = all(a <= b for a, b in pairwise(t_list))
                ts_add, v_add = np.array(t_list, np.float64), np.array(v_list, np.float64)
                if old_ts is None:
                    ts, v = ts_add, v_add
                else:
                    in_order = in_order and old_ts[-1] <= t_list[0]
                    ts, v = np.concatenate((old_ts, ts_add)), np.concatenate((values[key], v_add))
                if not in_order:  # a stable sort: readings sharing one ts keep their arrival order
                    order = np.argsort(ts, kind="stable")
                    ts, v = ts[order], v[order]
            else:
                assert old_ts is not None
                ts, v = old_ts, values[key]
            keep = int(np.searchsorted(ts, cutoff, side="right"))
            ts, v = ts[keep:], v[keep:]
            count += len(ts) - (0 if old_ts is None else len(old_ts))
            start = rows[key][0] if key in rows else None
            if len(ts) == 0:
                del times[key], values[key]
                self._rows = self._rows.delete(key)
                self._unready(key)
                gone.append(key)
            elif self._set(key, ts, v)[0] != start:
                self._push_start(float(ts[0]), key)
        self._count = count
        self._told = self._rows
        return Features(None, now, Newest(self._rows), rows=self._ready, stats=self.stats, gone=gone)
