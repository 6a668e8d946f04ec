"""The incremental feature engine: NumPy over the (asset, signal) keys an update touches.

An update of a few readings touches only the keys it brings, plus the keys whose oldest reading fell
out of the window (found in a heap of each key's oldest time, not by a scan). Each key keeps its
readings as NumPy arrays sorted by time; the key's statistics are recomputed from them and the others
are kept, and so is the set of keys ready to report and the newest reading of each, as persistent maps
(``immutables.Map``): every :class:`~qxedge.agent.features.Features` keeps its own snapshot (later
updates may run in a worker thread while the loop reads it) without copying the window's keys. This
costs a few µs per touched key, where a whole-window ``group_by`` costs ~1 ms.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

import immutables
import numpy as np
import polars as pl

from qxedge.agent.features._stats import SCHEMA, WindowSpec, np_stat
from qxedge.agent.features._table import Features, Key, Row
from qxedge.connectors.readings import ReadingBatch

Ready = immutables.Map[str, immutables.Map[str, Row]]  # asset -> signal -> row
_NO_ROWS: immutables.Map[str, Row] = immutables.Map()


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


class IncrementalEngine:
    """A :class:`~qxedge.agent.features.FeatureEngine` recomputing only the keys an update touches."""

    def __init__(
        self, length_s: float, stats: Sequence[str], min_samples: int = 2, min_coverage: float = 0.0
    ) -> None:
        self._start(WindowSpec.of(length_s, stats, min_samples, min_coverage))

    @classmethod
    def cut(cls, spec: WindowSpec, frame: pl.DataFrame) -> IncrementalEngine:
        """The engine holding the readings of ``frame`` (columns of ``SCHEMA``; the full engine's)."""
        engine = cls.__new__(cls)
        engine._start(spec)
        frame = frame.sort("asset", "signal", "ts", maintain_order=True)
        groups = frame.group_by("asset", "signal", maintain_order=True).len()
        ts_all, v_all = frame.get_column("ts").to_numpy(), frame.get_column("value").to_numpy()
        at = 0
        for asset, signal, n in groups.iter_rows():
            key, end = (asset, signal), at + n
            engine._push_start(engine._set(key, ts_all[at:end], v_all[at:end])[0], key)
            at = end
        engine._count = frame.height
        return engine

    def _start(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.stats = list(spec.stats)
        self.length_s, self.min_samples, self.min_span_s = spec.length_s, spec.min_samples, spec.min_span_s
        self._times: dict[Key, np.ndarray] = {}  # key -> its readings' ts, sorted
        self._values: dict[Key, np.ndarray] = {}  # key -> their values, in the same order
        self._ready: Ready = immutables.Map()  # the rows with enough readings to report
        # every row's start, and stale ones: a heap of floats and the keys beside it, not a heap of
        # (start, key) tuples (a plant's keys left that many tuples a second for the collector to walk)
        self._oldest: list[float] = []
        self._starting: dict[float, Key | list[Key]] = {}
        # every key's row, a snapshot per update: ``latest`` reads it
        self._rows: immutables.Map[Key, Row] = immutables.Map()
        self._count = 0  # readings in the window (read from the loop while an update runs in a thread)

    @property
    def rows(self) -> int:
        return self._count

    @property
    def told(self) -> Collection[Key]:
        """The keys of the last update's ``latest``."""
        return self._rows

    def frame(self) -> pl.DataFrame:
        """The readings in the window as one frame (columns of ``SCHEMA``; for the full engine)."""
        if not self._times:
            return pl.DataFrame(schema=SCHEMA)
        keys = list(self._times)
        at = pl.Series(np.repeat(np.arange(len(keys)), [len(ts) for ts in self._times.values()]))
        return pl.DataFrame(
            {
                "asset": pl.Series([a for a, _ in keys], dtype=pl.String).gather(at),
                "signal": pl.Series([s for _, s in keys], dtype=pl.String).gather(at),
                "ts": np.concatenate(list(self._times.values())),
                "value": np.concatenate([self._values[key] for key in keys]),
            },
            schema=SCHEMA,
        )

    def update(self, batch: ReadingBatch, now: float) -> Features:
        features = self.try_update(batch, now)
        assert features is not None
        return features

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
        self._times[key], self._values[key] = ts, v
        start, end = float(ts[0]), float(ts[-1])
        row = (start, end, len(ts), *(np_stat(s, ts, v) for s in self.stats), float(v[-1]))
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

    def try_update(self, batch: ReadingBatch, now: float, max_touched: int | None = None) -> Features | None:
        """The update; None, and the window left as it was, when it would recompute more than
        ``max_touched`` keys (then one Polars ``group_by`` is cheaper: the engine is given up)."""
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
        if max_touched is not None and len(touched) > max_touched:
            return None  # (with entries popped from the heap: the engine is given up)
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
        return Features(None, now, Newest(self._rows), rows=self._ready, stats=self.stats, gone=gone)
