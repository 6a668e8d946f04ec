"""The demo's printed summary says which way the optimised day's energy cost went."""

from __future__ import annotations

from typing import Any

import pytest

from qxedge.agent.demo import format_summary


def summary(baseline: float, optimised: float) -> dict[str, Any]:
    day = {"peak_kw": 150.0, "cap_violations": 0, "unmet_runs": 0}
    return {
        "site": "demo",
        "broker": "mqtt://127.0.0.1:1883",
        "duration_s": 60.0,
        "readings": 10,
        "readings_per_s": 1.0,
        "published": 10,
        "inferences": 1,
        "evaluations": 1,
        "provider": "CPUExecutionProvider",
        "setpoints": 0,
        "setpoints_applied": 0,
        "verdicts": {},
        "deadletters": 0,
        "jobs": 0,
        "results": 0,
        "fallbacks": 0,
        "late": 0,
        "solver_wins": {},
        "max_scores": {},
        "faults": [],
        "setpoint_log": [],
        "baseline": {**day, "energy_cost": baseline},
        "optimised": {**day, "energy_cost": optimised},
    }


@pytest.mark.parametrize(
    ("baseline", "optimised", "said"),
    [(1000, 800, "20.0% lower energy cost"), (248_223, 303_765, "22.4% higher energy cost")],
)
def test_the_cost_change_is_worded_by_its_sign(baseline: float, optimised: float, said: str) -> None:
    text = format_summary(summary(baseline, optimised))
    assert f"optimised vs baseline: {said}" in text, text
