"""The agent's feature window: the full engine for big batches, the incremental one for a few readings.

The window is held by exactly one engine at a time and handed over whole when the other one is due:

- a batch of at most ``SMALL_BATCH`` readings cuts a window of up to ``MAX_CUT_ROWS`` readings into the
  incremental engine's keys (the ``trigger: readings`` case);
- once cut, the keys also take a bigger batch (up to ``MAX_KEYS_BATCH`` readings: a burst after the
  loop was busy) rather than switching engines: going back and forth costs O(keys) each way, and on a
  plant of thousands of signals each burst then made the next one bigger;
- an update that would recompute more than ``MAX_TOUCHED`` keys, or a bigger batch, goes to the full
  engine, which gets the keys' readings as one frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from qxedge.agent.features._full import FullEngine
from qxedge.agent.features._incremental import IncrementalEngine
from qxedge.agent.features._stats import WindowSpec
from qxedge.agent.features._table import Features
from qxedge.connectors.readings import ReadingBatch

SMALL_BATCH = 64  # at most this many readings: the incremental engine
MAX_TOUCHED = 256  # more keys to recompute than this: one Polars group_by is cheaper
MAX_CUT_ROWS = 262_144  # a larger window stays with the full engine
MAX_KEYS_BATCH = 4096  # once cut into keys, a batch up to this many readings stays incremental


class FeatureWindow:
    """A :class:`~qxedge.agent.features.FeatureEngine` choosing, at each update, the cheaper engine."""

    def __init__(
        self, length_s: float, stats: Sequence[str], min_samples: int = 2, min_coverage: float = 0.0
    ) -> None:
        self.spec = WindowSpec.of(length_s, stats, min_samples, min_coverage)
        self.engine: FullEngine | IncrementalEngine = FullEngine.of(self.spec)

    @property
    def rows(self) -> int:
        """Readings in the window (read from the loop while an update runs in a thread)."""
        return self.engine.rows

    def update(self, batch: ReadingBatch, now: float) -> Features:
        """Add ``batch``, forget readings older than ``now - length_s``, and compute every statistic."""
        engine = self.engine
        if isinstance(engine, IncrementalEngine):
            # once cut into keys, a burst stays with them, unless the window has grown past MAX_CUT_ROWS
            if len(batch) <= (MAX_KEYS_BATCH if engine.rows <= MAX_CUT_ROWS else SMALL_BATCH):
                features = engine.try_update(batch, now, MAX_TOUCHED)
                if features is not None:
                    return features
            full = self.engine = FullEngine.of(self.spec, engine.frame(), engine.told)
            return full.update(batch, now)
        if len(batch) <= SMALL_BATCH and engine.rows <= MAX_CUT_ROWS:
            keys = IncrementalEngine.cut(self.spec, engine.frame)
            features = keys.try_update(batch, now, MAX_TOUCHED)
            if features is not None:
                self.engine = keys
                return features
        return engine.update(batch, now)
