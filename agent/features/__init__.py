"""Per-signal rolling windows and their statistics, behind one interface with two engines.

Readings accumulate as a columnar ReadingBatch (no per-reading object). Every ``every_s`` (or, with
``window.trigger: readings``, as soon as readings are pending) the agent hands the batch to the
:class:`FeatureEngine`'s ``update``, which adds it to the retained window, drops what fell out of
``length_s``, and computes the statistics of every (asset, signal). The result, a :class:`Features`
table, turns into the matrix a model declares with :meth:`Features.matrix`.

Two engines give the same statistics (to float rounding; ``tests/test_features_incremental.py``), each
in its own module and holding its own state:

- :class:`FullEngine` (``_full.py``): the window as one Polars frame, one ``group_by`` per update;
- :class:`IncrementalEngine` (``_incremental.py``): per-key NumPy arrays, only the touched keys
  recomputed.

:class:`FeatureWindow` (``_window.py``), the agent's, picks the cheaper one at each update and hands the
window over whole when it switches.
"""

from __future__ import annotations

from typing import Protocol

from qxedge.agent.features._full import FullEngine
from qxedge.agent.features._incremental import IncrementalEngine
from qxedge.agent.features._stats import WindowSpec
from qxedge.agent.features._table import FeatureMatrix, Features
from qxedge.agent.features._window import SMALL_BATCH, FeatureWindow
from qxedge.connectors.readings import ReadingBatch


class FeatureEngine(Protocol):
    """Rolling windows of readings and their statistics."""

    @property
    def rows(self) -> int:
        """Readings held in the window."""
        ...

    def update(self, batch: ReadingBatch, now: float) -> Features:
        """Add ``batch``, forget readings older than ``now - length_s``, and compute every statistic."""
        ...


__all__ = [
    "SMALL_BATCH",
    "FeatureEngine",
    "FeatureMatrix",
    "FeatureWindow",
    "Features",
    "FullEngine",
    "IncrementalEngine",
    "WindowSpec",
]
