"""The incremental engine of FeatureWindow (a few readings per update, NumPy per key) against the full
Polars engine, over random sequences of small and large updates: out-of-order readings, readings already
out of the window, keys appearing and expiring, min_samples / min_coverage warm-up."""

from __future__ import annotations

import fnmatch
import math
import random

import numpy as np
import polars as pl
import pytest

from qxedge.agent._patterns import AssetFilter
from qxedge.agent.features import SMALL_BATCH, Features, FeatureWindow, FullEngine, IncrementalEngine
from qxedge.agent.features import _window as features_module
from qxedge.connectors.readings import ReadingBatch

T0 = 1_764_000_000.0
STATS = ["mean", "std", "min", "max", "median", "first", "last", "count", "range", "slope"]
INPUTS = ["temp.mean", "temp.slope", "power.std", "power.last", "vib.first", "vib.median", "temp.count"]


FullOnly = FullEngine  # the reference: every update through the Polars group_by


def close(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    assert isinstance(a, int | float) and isinstance(b, int | float)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_same(got: Features, want: Features, got_rows: int, want_rows: int) -> None:
    assert got_rows == want_rows
    g = got.frame.sort("asset", "signal")
    w = want.frame.sort("asset", "signal")
    assert g.schema == w.schema
    assert g.select("asset", "signal", "n").to_dicts() == w.select("asset", "signal", "n").to_dicts()
    for name in ["start", "end", *STATS]:
        for x, y in zip(g.get_column(name).to_list(), w.get_column(name).to_list(), strict=True):
            assert close(x, y), (name, x, y)
    got_stats, want_stats = got.by_asset(), want.by_asset()  # the telemetry's view
    assert {a: d.keys() for a, d in got_stats.items()} == {a: d.keys() for a, d in want_stats.items()}
    for asset, values in want_stats.items():
        assert all(close(got_stats[asset][k], v) for k, v in values.items()), asset
    assert set(got.latest) == set(want.latest)
    for key, (ts, value) in want.latest.items():
        assert got.latest[key] == (ts, value), key
    for patterns in (["*"], ["l1/*"]):
        gm, wm = got.matrix(INPUTS, patterns), want.matrix(INPUTS, patterns)
        assert gm.assets == wm.assets
        np.testing.assert_allclose(gm.values, wm.values, rtol=1e-6, atol=1e-6)
        assert gm.starts == wm.starts and gm.ends == wm.ends
        assert got.assets(patterns) == want.assets(patterns)


def random_batch(
    rng: random.Random, now: float, size: int, keys: list[tuple[str, str]], used: set[float]
) -> ReadingBatch:
    batch = ReadingBatch()
    for _ in range(size):
        asset, signal = rng.choice(keys)
        while True:  # distinct times (readings sharing one: the test of arrival order below)
            ts = now - rng.choice([0.0, rng.uniform(0, 1), rng.uniform(0, 6)])
            if ts not in used:
                used.add(ts)
                break
        batch.append(asset, signal, ts, rng.gauss(50, 10))
    return batch


@pytest.mark.parametrize("seed", range(12))
def test_incremental_updates_match_the_full_engine(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    if seed % 3 == 2:  # back and forth between the engines in the middle of expiries
        monkeypatch.setattr(features_module, "MAX_TOUCHED", 3)
    if seed % 3 == 1:  # the keys take batches of 65-200 readings; bigger ones go through Polars
        monkeypatch.setattr(features_module, "MAX_KEYS_BATCH", 200)
    length = rng.choice([2.0, 5.0])
    min_samples = rng.choice([1, 2, 5])
    min_coverage = rng.choice([0.0, 0.3, 0.8])
    keys = [(f"l{line}/a{i}", s) for line in (1, 2) for i in range(3) for s in ("temp", "power", "vib")]
    subject = FeatureWindow(length, STATS, min_samples, min_coverage)
    reference = FullOnly(length, STATS, min_samples, min_coverage)
    now, used = T0, set[float]()
    small = large = gone = 0
    before: set[tuple[str, str]] = set()
    for step in range(150):
        now += rng.choice([0.0, 0.001, 0.05, 0.3, 1.0]) if step % 40 else length * 1.5  # all expire
        active = rng.sample(keys, rng.randint(1, len(keys)))  # keys come and go
        size = rng.choice([0, 1, 1, 2, 5, SMALL_BATCH]) if rng.random() < 0.85 else rng.randint(65, 400)
        small += size <= SMALL_BATCH
        large += size > SMALL_BATCH
        batch = random_batch(rng, now, size, active, used)
        got = subject.update(batch, now)
        want = reference.update(batch, now)
        assert_same(got, want, subject.rows, reference.rows)
        for features in (got, want):  # the keys whose last reading left the window, each once
            assert sorted(features.gone) == sorted(before - set(features.latest))
        before = set(want.latest)
        gone += len(got.gone)
    assert small > 50 and large > 5 and gone > 10


@pytest.mark.parametrize("seed", range(3))
def test_the_incremental_engine_alone_matches_the_full_engine(seed: int) -> None:
    """Either engine is a whole FeatureEngine: the incremental one from an empty window, big batches too."""
    rng = random.Random(seed)
    keys = [(f"l1/a{i}", s) for i in range(4) for s in ("temp", "power", "vib")]
    subject, reference = IncrementalEngine(5.0, STATS, 2, 0.3), FullOnly(5.0, STATS, 2, 0.3)
    now, used = T0, set[float]()
    for _ in range(60):
        now += rng.choice([0.0, 0.05, 0.3, 1.0, 4.0])
        batch = random_batch(rng, now, rng.choice([0, 1, 3, 300]), rng.sample(keys, 5), used)
        assert_same(subject.update(batch, now), reference.update(batch, now), subject.rows, reference.rows)


@pytest.mark.parametrize("size", [200, features_module.MAX_KEYS_BATCH + 1])
def test_a_big_batch_after_small_ones_sees_every_reading(size: int) -> None:
    fw = FeatureWindow(100.0, ["count", "mean"], min_samples=1)
    for i in range(100):
        b = ReadingBatch()
        b.append("a", "x", T0 + i * 0.01, float(i))
        fw.update(b, T0 + i * 0.01)
    assert isinstance(fw.engine, IncrementalEngine)  # the incremental engine held the window
    big = ReadingBatch()
    for i in range(100, 100 + size):
        big.append("a", "x", T0 + i * 0.01, float(i))
    row = fw.update(big, T0 + 50).frame.row(0, named=True)
    # a burst on few keys stays with them; a bigger one goes through Polars
    assert isinstance(fw.engine, FullEngine) == (size > features_module.MAX_KEYS_BATCH)
    assert fw.rows == 100 + size
    assert row["count"] == 100 + size and row["mean"] == pytest.approx((99 + size) / 2)


def test_keys_expire_without_new_readings() -> None:
    fw = FeatureWindow(1.0, ["last"], min_samples=1)
    b = ReadingBatch()
    b.append("a", "x", T0, 1.0)
    b.append("b", "x", T0 + 0.5, 2.0)
    assert set(fw.update(b, T0 + 0.6).latest) == {("a", "x"), ("b", "x")}
    features = fw.update(ReadingBatch(), T0 + 1.2)
    assert set(features.latest) == {("b", "x")} and fw.rows == 1
    assert features.frame.get_column("asset").to_list() == ["b"]
    empty = fw.update(ReadingBatch(), T0 + 2)
    assert not empty.latest and empty.frame.height == 0 and fw.rows == 0
    assert empty.frame.schema == FullOnly(1.0, ["last"]).update(ReadingBatch(), T0).frame.schema


def test_keys_sharing_their_oldest_time_expire_together() -> None:
    fw = FeatureWindow(1.0, ["count", "last"], min_samples=1)
    b = ReadingBatch()
    for asset in ("a", "b", "c"):  # one oldest time for three keys, then a later reading each
        b.append(asset, "x", T0, 1.0)
    fw.update(b, T0)
    b = ReadingBatch()
    for asset, later in (("a", 0.2), ("b", 0.2), ("c", 0.6)):
        b.append(asset, "x", T0 + later, 2.0)
    fw.update(b, T0 + 0.6)
    features = fw.update(ReadingBatch(), T0 + 1.1)  # T0 left the window: every key lost a reading
    assert features.frame.sort("asset").get_column("count").to_list() == [1, 1, 1] and fw.rows == 3
    features = fw.update(ReadingBatch(), T0 + 1.3)  # a and b (their next oldest shared too) are gone
    assert sorted(features.gone) == [("a", "x"), ("b", "x")] and set(features.latest) == {("c", "x")}


def test_readings_sharing_one_time_keep_their_arrival_order_in_both_engines() -> None:
    """A device that repeats a timestamp: first / last / latest are the first and last to arrive."""
    batch = ReadingBatch()
    for i in range(40):
        batch.append("a", "x", T0 + i % 3, float(i))  # ts T0, T0+1, T0+2, T0, ...: 38 is the last at T0+2
    for engine in (FullOnly(10.0, ["first", "last"], 1), FeatureWindow(10.0, ["first", "last"], 1)):
        engine.update(ReadingBatch(), T0)  # the incremental engine from here on (the full one stays full)
        features = engine.update(batch, T0 + 3)
        row = features.frame.select("first", "last").row(0)
        assert row == (0.0, 38.0), (type(engine).__name__, row)
        assert features.latest[("a", "x")] == (T0 + 2, 38.0), type(engine).__name__


def test_many_touched_keys_fall_back_to_polars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_module, "MAX_TOUCHED", 2)
    fw = FeatureWindow(10.0, ["mean"], min_samples=1)
    b = ReadingBatch()
    for i in range(5):
        b.append(f"a{i}", "x", T0 + i, float(i))
    features = fw.update(b, T0 + 5)
    assert isinstance(fw.engine, FullEngine)
    assert sorted(features.frame.get_column("mean").to_list()) == [0, 1, 2, 3, 4]
    assert isinstance(features.frame, pl.DataFrame)


def test_features_stay_as_they_were_while_later_updates_run() -> None:
    fw = FeatureWindow(1.0, ["last"], min_samples=2)
    b = ReadingBatch()
    b.append("a", "x", T0, 1.0)
    b.append("a", "x", T0 + 0.1, 2.0)
    b.append("b", "x", T0 + 0.2, 3.0)
    first = fw.update(b, T0 + 0.2)
    assert first.frame.get_column("asset").to_list() == ["a"]  # "b" has one reading
    later = ReadingBatch()
    later.append("b", "x", T0 + 0.9, 4.0)
    second = fw.update(later, T0 + 1.05)  # "a"'s first reading expires, "b" becomes ready
    assert dict(first.latest) == {("a", "x"): (T0 + 0.1, 2.0), ("b", "x"): (T0 + 0.2, 3.0)}
    assert first.frame.get_column("asset").to_list() == ["a"]
    assert second.latest[("b", "x")] == (T0 + 0.9, 4.0)
    assert second.frame.get_column("asset").to_list() == ["b"]  # "a" has one reading left
    third = fw.update(ReadingBatch(), T0 + 2)
    assert not third.latest and set(second.latest) == {("a", "x"), ("b", "x")}


def test_many_keys_only_the_touched_ones_are_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = FeatureWindow(10.0, ["last"], min_samples=1)
    big = ReadingBatch()
    for i in range(5_000):  # spread over 5 s: the oldest leave the window first
        big.append(f"a{i}", "x", T0 + i / 1000, float(i))
    fw.update(big, T0 + 5)
    fw.update(ReadingBatch(), T0 + 5)  # the first small update cuts the keys
    recomputed: list[tuple[str, str]] = []
    original = IncrementalEngine._set

    def counting(
        self: IncrementalEngine, key: tuple[str, str], ts: np.ndarray, v: np.ndarray
    ) -> tuple[object, ...]:
        recomputed.append(key)
        return original(self, key, ts, v)

    monkeypatch.setattr(IncrementalEngine, "_set", counting)
    b = ReadingBatch()
    b.append("new", "x", T0 + 10.0015, 1.0)
    features = fw.update(b, T0 + 10.0015)  # a0 and a1 expire, "new" arrives
    assert sorted(recomputed) == [("new", "x")]
    assert fw.rows == 4_999 and ("a0", "x") not in features.latest and ("a2", "x") in features.latest


@pytest.mark.parametrize(
    "patterns",
    [["*"], ["l1/a1"], ["l1/a1", "l2/a0", "nowhere"], ["l1/*", "l2/a0"], ["l?/a[02]"], ["l2/*", "*/a1"], []],
)
def test_asset_patterns_select_as_fnmatch_does(patterns: list[str]) -> None:
    fw = FeatureWindow(10.0, ["last"], min_samples=1)
    b = ReadingBatch()
    names = [f"l{line}/a{i}" for line in (1, 2) for i in range(3)]
    for i, asset in enumerate(names):
        b.append(asset, "temp", T0 + i, float(i))
    want = sorted(a for a in names if any(fnmatch.fnmatchcase(a, p) for p in patterns))
    covers = AssetFilter(patterns)  # what a model and the telemetry ask per asset, the answer kept
    assert [a for a in names if covers(a)] == want == [a for a in names if covers(a)]
    for features in (fw.update(b, T0 + 6), fw.update(ReadingBatch(), T0 + 6)):  # the full, then the keys
        assert features.assets(patterns) == want
        assert features.matrix(["temp.last"], patterns).assets == want
        assert features.matrix(["temp.last"], patterns, only={"l1/a1", "l2/a2"}).assets == [
            a for a in want if a in {"l1/a1", "l2/a2"}
        ]
