"""The production day's planner: problems built from live inputs and decomposition (the closed-loop demo
end to end is tests/integration/test_demo.py)."""

from __future__ import annotations

import pytest

from qxedge.agent.planning import DayPlanner, Order, PlanningConfig, baseline_plan, blocks
from qxedge.hybrid.problems import scheduling

LIGHT, MID, PEAK = 94.0, 145.0, 211.0


def day(**kw: object) -> PlanningConfig:
    orders = [
        Order(asset="l/comp1", runs=2, release=1, power_kw=30),
        Order(asset="l/comp2", runs=2, release=1, power_kw=30),
        Order(asset="l/oven1", runs=2, release=1, due=6, power_kw=45),
    ]
    doc: dict[str, object] = {
        "slots": 8,
        "slot_s": 1,
        "cap_kw": 130,
        "price": [MID, PEAK, PEAK, MID, LIGHT, LIGHT, LIGHT, LIGHT],
        "base_assets": ["l/pump*"],
        "margin_kw": 5,
        "orders": orders,
        **kw,
    }
    return PlanningConfig.model_validate(doc)


BASE = {("l/pump1", "power"): (0.0, 20.0), ("l/pump2", "power"): (0.0, 30.0), ("x/other", "power"): (0, 99.0)}


def test_problem_from_live_inputs() -> None:
    planner = DayPlanner(day())
    planner.observe({("l/comp1", "power"): (0.0, 33.4), ("l/comp2", "power"): (0.0, 0.6)})  # comp2 is off
    planner.ran["l/comp1"].add(1)
    p = planner.problem(2, BASE, {"l/oven1": 9.0})
    assert p is not None and p.slots == 6 and p.price == [PEAK, MID, LIGHT, LIGHT, LIGHT, LIGHT]
    # cap minus the forecast: the matching base assets (50 kW), comp2's standby (0.6 kW), the margin (5)
    assert p.cap_kw == [74] * 6
    comp1, comp2, oven = p.assets
    assert comp1.power_kw == 35 and comp1.runs == 1  # measured 33.4 kW, up to the 5 kW step; one run done
    assert comp2.power_kw == 30 and comp2.runs == 2  # never seen running: nameplate power
    assert oven.runs == 0 and planner.held == {"l/oven1"}  # flagged by the anomaly model: held
    assert p.window(oven) == range(0, 4)  # due before slot 6, re-indexed from slot 2


def test_power_rounding_tolerates_meter_noise() -> None:
    planner = DayPlanner(day())
    planner.observe({("l/comp1", "power"): (0.0, 30.3), ("l/comp2", "power"): (0.0, 31.0)})
    p = planner.problem(0, BASE, {})
    assert p is not None and [a.power_kw for a in p.assets[:2]] == [30, 35]


def test_repair_keeps_the_cap_before_the_runs() -> None:
    """A run that fits nowhere under the cap is dropped (unmet), never left over the cap."""
    p = scheduling.LoadSchedule(
        assets=[scheduling.ScheduledAsset(name="a", power_kw=30, runs=1, earliest=1, latest=2)],
        cap_kw=[50, 20],
        price=[1.0, 1.0],
    )
    fixed = scheduling.repair(p, {"a": [1]})
    assert fixed == {"a": []}
    assert scheduling.violations(p, fixed) == ["a runs 0 slots, needs 1"]


def test_problem_clips_what_no_longer_fits_and_drops_past_orders() -> None:
    planner = DayPlanner(day())
    p = planner.problem(5, BASE, {})
    assert p is not None
    assert [(a.name, a.runs) for a in p.assets] == [("l/comp1", 2), ("l/comp2", 2), ("l/oven1", 1)]
    assert planner.problem(6, BASE, {}) is not None
    assert [a.name for a in planner.problem(6, BASE, {}).assets] == ["l/comp1", "l/comp2"]  # type: ignore[union-attr]
    assert planner.problem(8, BASE, {}) is None


def test_optimum_beats_the_baseline_and_becomes_setpoints() -> None:
    cfg = day()
    planner = DayPlanner(cfg)
    p = planner.problem(0, BASE, {})
    assert p is not None
    best, best_cost = scheduling.brute_force(p)
    assert best is not None
    baseline = baseline_plan(cfg)
    assert scheduling.violations(p, baseline)  # everything at once in slots 1-2: over the cap
    assert best_cost < scheduling.cost(p, baseline)
    assert planner.adopt(0, p, best)
    assert planner.setpoints(4) == {a: 1.0 if 4 in best[a] else 0.0 for a in best}
    assert planner.adopt(0, p, {"l/comp1": [1, 2, 3]}) is False  # infeasible: repaired on adoption
    assert not scheduling.violations(p, {a: planner.plan[a] for a in best})


def test_improve_keeps_plans_feasible_and_never_costs_more() -> None:
    p = DayPlanner(day(cap_kw=150)).problem(0, BASE, {})
    assert p is not None
    for start in (scheduling.repair(p, {}), baseline_plan(day())):
        feasible = start if not scheduling.violations(p, start) else scheduling.repair(p, start)
        better = scheduling.improve(p, feasible)
        assert scheduling.violations(p, better) == []
        assert scheduling.cost(p, better) <= scheduling.cost(p, feasible)
    assert scheduling.cost(p, scheduling.improve(p, baseline_plan(day()))) == scheduling.brute_force(p)[1]


def test_blocks_split_the_horizon_and_solve_to_a_feasible_plan() -> None:
    cfg = day(
        slots=16,
        price=[MID] * 8 + [LIGHT] * 8,
        orders=[Order(asset=f"l/m{i}", runs=3, release=i, power_kw=20 + 5 * i) for i in range(4)],
    )
    p = DayPlanner(cfg).problem(0, BASE, {})
    assert p is not None
    parts = blocks(p, max_variables=8)
    assert len(parts) > 1
    plan: scheduling.Plan = {a.name: [] for a in p.assets}
    for first, block in parts:
        assert sum(len(block.window(a)) for a in block.assets) <= 8
        sub, _ = scheduling.brute_force(block)
        assert sub is not None  # every block is feasible by construction of the allocation
        for asset, slots in sub.items():
            plan[asset].extend(first + t for t in slots)
    assert scheduling.violations(p, plan) == []
    assert scheduling.cost(p, plan) <= scheduling.cost(p, scheduling.repair(p, {}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cap_kw": [100, 100]}, "one value per slot"),
        ({"price": [1.0]}, "one value per slot"),
        ({"orders": [Order(asset="a", runs=5, release=5, power_kw=1)]}, "do not fit"),
    ],
)
def test_bad_planning_config(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        day(**change)
