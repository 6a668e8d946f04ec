import numpy as np
import pytest

from qxedge.agent.features import FeatureWindow
from qxedge.connectors.readings import ReadingBatch

T0 = 1_764_000_000.0


def batch_of(asset: str, signal: str, ts: list[float], values: list[float]) -> ReadingBatch:
    b = ReadingBatch()
    for t, v in zip(ts, values, strict=True):
        b.append(asset, signal, t, v)
    return b


def test_statistics_match_numpy() -> None:
    rng = np.random.default_rng(3)
    ts = list(T0 + np.arange(50) * 0.2)
    values = list(3.0 * (np.array(ts) - T0) + rng.normal(0, 0.5, 50))
    fw = FeatureWindow(20.0, ["mean", "std", "min", "max", "slope", "range", "count", "last", "median"])
    row = fw.update(batch_of("l1/a", "temp", ts, values), now=T0 + 10).frame.row(0, named=True)
    v, t = np.array(values), np.array(ts)
    assert row["asset"] == "l1/a" and row["signal"] == "temp"
    assert row["mean"] == pytest.approx(v.mean())
    assert row["std"] == pytest.approx(v.std(ddof=1))
    assert row["min"] == v.min() and row["max"] == v.max() and row["last"] == v[-1]
    assert row["range"] == pytest.approx(np.ptp(v)) and row["count"] == 50
    assert row["median"] == pytest.approx(np.median(v))
    assert row["slope"] == pytest.approx(np.polyfit(t - T0, v, 1)[0])
    assert (row["start"], row["end"]) == (ts[0], ts[-1])


def test_old_readings_leave_the_window() -> None:
    fw = FeatureWindow(5.0, ["mean", "count"])
    fw.update(batch_of("a", "x", [T0 + i for i in range(5)], [100.0] * 5), now=T0 + 5)
    features = fw.update(batch_of("a", "x", [T0 + 5 + i for i in range(5)], [1.0] * 5), now=T0 + 9.5)
    row = features.frame.row(0, named=True)
    assert row["count"] == 5 and row["mean"] == 1.0
    assert fw.rows == 5


def test_min_samples_and_coverage_hold_back_young_signals() -> None:
    fw = FeatureWindow(10.0, ["mean"], min_samples=3, min_coverage=0.5)
    b = batch_of("a", "few", [T0 + 9, T0 + 9.5], [1, 2])  # 2 samples
    b.extend(batch_of("a", "short", [T0 + 9, T0 + 9.2, T0 + 9.4, T0 + 9.6], [1, 2, 3, 4]))  # spans 0.6 s
    b.extend(batch_of("a", "ok", [T0 + 1, T0 + 5, T0 + 9], [1, 2, 3]))
    assert fw.update(b, now=T0 + 10).frame.get_column("signal").to_list() == ["ok"]


def test_matrix_in_declared_order_only_complete_assets() -> None:
    fw = FeatureWindow(10.0, ["mean", "max"])
    b = ReadingBatch()
    for asset, scale in (("l1/b", 10.0), ("l1/a", 1.0), ("l2/c", 5.0)):
        b.extend(batch_of(asset, "temp", [T0 + 1, T0 + 2], [scale, 2 * scale]))
        b.extend(batch_of(asset, "power", [T0 + 1, T0 + 2], [-scale, -scale]))
    b.extend(batch_of("l1/d", "temp", [T0 + 1, T0 + 2], [1, 1]))  # no power: left out
    features = fw.update(b, now=T0 + 3)
    m = features.matrix(["power.mean", "temp.max", "temp.mean"], ["l1/*"])
    assert m.assets == ["l1/a", "l1/b"]
    assert m.values.dtype == np.float32
    np.testing.assert_allclose(m.values, [[-1, 2, 1.5], [-10, 20, 15]])
    assert m.starts == [T0 + 1, T0 + 1] and m.ends == [T0 + 2, T0 + 2]
    single = features.matrix(["temp.max"], ["l2/*"])  # one statistic: pivot names columns differently
    assert single.assets == ["l2/c"] and single.values.tolist() == [[10.0]]
    assert features.matrix(["vibration.mean"]).assets == []


def test_first_and_last_follow_time_not_arrival() -> None:
    fw = FeatureWindow(10.0, ["first", "last"])
    row = fw.update(batch_of("a", "x", [T0 + 3, T0 + 1, T0 + 2], [3.0, 1.0, 2.0]), now=T0 + 4).frame.row(
        0, named=True
    )
    assert (row["first"], row["last"]) == (1.0, 3.0)
