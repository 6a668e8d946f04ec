"""The console's live view keeps bounded memory: one point per step, history_s back, at most
max_assets assets; and the per-asset gauges stop at MAX_ASSET_SERIES."""

from __future__ import annotations

from dataclasses import replace

from qxedge.agent.console.live import LiveView
from qxedge.agent.metrics import MAX_ASSET_SERIES, asset_metrics
from qxedge.connectors.plant import Evaluation
from tests.integration.test_metrics import AGENT


class NoStats:
    def by_asset(self, assets: object = None) -> dict[str, dict[str, float]]:
        return {}


def test_history_is_one_point_per_step_and_reaches_history_s_back() -> None:
    live = LiveView(history_s=10, every_s=1)
    for i in range(100):  # ten evaluations a second (trigger: readings) for ten seconds
        live.evaluated(Evaluation(1000 + i / 10, {"a": {"temp": float(i)}}, NoStats()))
    points = live.series("a")
    assert 9 <= len(points) <= 11
    assert points[-1][1] == {"temp": 99.0}  # the newest evaluation of the step
    assert points[0][0] >= 1000 + 9.9 - 10
    assert live.latest["a"] == (1000 + 9.9, {"temp": 99.0})


def test_new_assets_beyond_the_cap_are_counted_not_kept() -> None:
    live = LiveView(history_s=10, every_s=1, max_assets=3)
    live.evaluated(Evaluation(1.0, {f"a{i}": {"x": 1.0} for i in range(5)}, NoStats()))
    assert len(live.latest) == 3 and live.ignored == 2


def test_asset_gauges_are_capped() -> None:
    scores = {(f"line1/m{i:05}", "anomaly"): float(i) for i in range(MAX_ASSET_SERIES + 5)}
    stats = replace(AGENT, asset_scores=scores, asset_setpoints={"line1/m1": 0.5})
    families = {f.name: f for f in asset_metrics(stats)}
    assert len(families["qxedge_asset_score"].samples) == MAX_ASSET_SERIES
    assert families["qxedge_asset_setpoint"].samples[0].labels == {"site": "gumi", "asset": "line1/m1"}
    assert families["qxedge_asset_series_omitted"].samples[0].value == 5
