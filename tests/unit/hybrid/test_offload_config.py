"""``offload:`` of an agent's config: the re-sends of a job with no result yet."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qxedge.hybrid.config import OffloadConfig


def test_by_default_a_job_is_sent_again_once_at_four_tenths_of_the_wait() -> None:
    config = OffloadConfig()
    assert config.resend_times(1.25) == pytest.approx([0.5])  # 1500 ms deadline less 250 ms fallback


def test_several_resends_are_spread_over_the_wait() -> None:
    assert OffloadConfig(resend_after=0.3, max_resends=3).resend_times(2.0) == pytest.approx([0.6, 1.2, 1.8])


@pytest.mark.parametrize("changes", [{"resend_after": 0}, {"max_resends": 0}])
def test_zero_turns_resends_off(changes: dict[str, float]) -> None:
    assert OffloadConfig(**changes).resend_times(10.0) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"resend_after": 0.5, "max_resends": 2},
            "resend_after 0.5 x max_resends 2 reaches the end of the wait",
        ),
        ({"resend_after": 1.0}, "resend_after\n  Input should be less than 1"),
        ({"resend_after": -0.1}, "resend_after\n  Input should be greater than or equal to 0"),
        ({"max_resends": 6}, "max_resends\n  Input should be less than or equal to 5"),
    ],
)
def test_resends_that_cannot_happen_are_refused(changes: dict[str, float], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OffloadConfig(**changes)  # type: ignore[arg-type]
    assert expected in str(caught.value)
