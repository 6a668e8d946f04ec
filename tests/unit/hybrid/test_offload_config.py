"""``offload:`` of an agent's config: the re-sends of a job with no result yet, and their budget."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qxedge.hybrid.config import OffloadConfig
from qxedge.hybrid.resend import ResendBudget


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


def test_the_resend_budget_lets_a_few_lost_jobs_through_and_stops_a_storm() -> None:
    budget = ResendBudget()
    for _ in range(50):
        budget.answered_in_time()
    assert [budget.may_resend() for _ in range(6)] == [True] * 4 + [False] * 2  # 10 tokens, needs > 5
    for _ in range(30):  # 4 tokens left; thirty prompt answers earn three back: one more re-send
        budget.answered_in_time()
    assert budget.may_resend()
    assert not budget.may_resend()


def test_when_most_answers_are_slow_one_job_in_ten_prompt_ones_is_re_sent_at_most() -> None:
    budget = ResendBudget()
    sent = 0
    for i in range(1000):
        if i % 2:
            budget.answered_in_time()
        else:
            sent += budget.may_resend()
    assert sent <= 4 + 500 * 0.1 + 1


def test_a_budget_needs_tokens() -> None:
    with pytest.raises(ValueError, match="max_tokens > 0"):
        ResendBudget(max_tokens=0)
