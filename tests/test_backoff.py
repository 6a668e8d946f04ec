"""The one reconnect backoff (qxedge.core.backoff)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qxedge.core.backoff import Backoff

bounds = st.tuples(
    st.floats(min_value=0.001, max_value=60, allow_nan=False),
    st.floats(min_value=1, max_value=1000, allow_nan=False),
).map(lambda lh: (lh[0], lh[0] * lh[1]))


@given(bounds, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_delays_are_equal_jitter_of_a_doubling_capped_ceiling(
    lh: tuple[float, float], tries: int, seed: int
) -> None:
    low, high = lh
    backoff = Backoff(low, high, rng=random.Random(seed))
    for n in range(tries):
        ceiling = min(high, low * 2**n)
        assert backoff.ceiling == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling * (1 + 1e-12)


@given(bounds, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_reset_starts_again_from_low(lh: tuple[float, float], tries: int, seed: int) -> None:
    low, high = lh
    backoff = Backoff(low, high, rng=random.Random(seed))
    for _ in range(tries):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling == low
    assert low / 2 <= backoff.next_delay() <= low


def test_delays_are_jittered_and_grow() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    assert len(set(delays)) == len(delays)
    assert max(delays[:1]) <= 0.5 and min(delays[3:]) >= 2.0


@pytest.mark.parametrize(("low", "high"), [(0, 1), (-1, 1), (2, 1)])
def test_bounds_are_checked(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="0 < low <= high"):
        Backoff(low, high)
