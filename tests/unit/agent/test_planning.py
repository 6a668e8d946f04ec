"""The planner: horizon problems built from live inputs on the plant's clock, and decomposition (the
closed-loop demo end to end is tests/integration/test_demo.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from qxedge.agent.clock import Slot
from qxedge.agent.orders import Order, merge_config
from qxedge.agent.planning import Planner, PlanningConfig, baseline, blocks, fix
from qxedge.agent.planstate import PlanState
from qxedge.agent.tariff import LIGHT, MID, PEAK
from qxedge.hybrid.problems import scheduling

SEOUL = ZoneInfo("Asia/Seoul")
# hours 00-07 of a weekday: mid, peak, peak, mid, then light
TARIFF = {"weekday": {"00:00": MID, "01:00": PEAK, "03:00": MID, "04:00": LIGHT}}


def at(h: int, d: int = 1) -> str:
    return f"2026-06-{d:02d}T{h:02d}:00"


def epoch(h: int, d: int = 1) -> int:
    return int(datetime(2026, 6, d, h, tzinfo=SEOUL).timestamp())


def orders() -> list[Order]:
    return [
        Order(id="o-comp1", asset="l/comp1", runs=2, release=at(1), due=at(8), power_kw=30),  # type: ignore[arg-type]
        Order(id="o-comp2", asset="l/comp2", runs=2, release=at(1), due=at(8), power_kw=30),  # type: ignore[arg-type]
        Order(id="o-oven1", asset="l/oven1", runs=2, release=at(1), due=at(6), power_kw=45),  # type: ignore[arg-type]
    ]


def config(**kw: Any) -> PlanningConfig:
    doc: dict[str, Any] = {
        "timezone": "Asia/Seoul",
        "horizon_slots": 8,
        "cap_kw": 130,
        "tariff": TARIFF,
        "base_assets": ["l/pump*"],
        "margin_kw": 5,
        "forecast": {"method": "persistence"},
        "orders": orders(),
        **kw,
    }
    return PlanningConfig.model_validate(doc)


def planner(cfg: PlanningConfig | None = None) -> Planner:
    cfg = config() if cfg is None else cfg
    state = PlanState()
    merge_config(state.book, {o.id: o for o in cfg.orders})
    return Planner(cfg, cfg.grid(), state)


def slot(h: int, d: int = 1) -> Slot:
    return Slot(epoch(h, d), epoch(h, d) + 3600)


BASE = {("l/pump1", "power"): (0.0, 20.0), ("l/pump2", "power"): (0.0, 30.0), ("x/other", "power"): (0, 99.0)}


def test_problem_from_live_inputs() -> None:
    p = planner()
    p.observe({("l/comp1", "power"): (0.0, 33.4), ("l/comp2", "power"): (0.0, 0.6)})  # comp2 is off
    p.state.done["o-comp1"] = {epoch(1)}
    h = p.horizon(slot(2), BASE, {"l/oven1": 9.0})
    assert h is not None and [s.start for s in h.slots] == [epoch(t) for t in range(2, 10)]
    problem = h.problem
    assert problem.price == [PEAK, MID] + [LIGHT] * 6
    # cap minus the forecast: the matching base assets (50 kW), comp2's standby (0.6 kW), the margin (5)
    assert problem.cap_kw == [74] * 8
    comp1, comp2, oven = problem.assets
    assert comp1.name == "o-comp1" and comp1.power_kw == 35 and comp1.runs == 1  # 33.4 kW measured; 1 done
    assert comp2.power_kw == 30 and comp2.runs == 2  # never seen running: nameplate power
    assert oven.runs == 0 and p.held == {"l/oven1"}  # flagged by the anomaly model: held
    assert problem.window(oven) == range(0, 4)  # due at 06:00, re-indexed from 02:00
    assert problem.window(comp1) == range(0, 6)  # due at 08:00: the horizon reaches past it


def test_the_horizon_rolls_across_midnight_into_the_next_day_type() -> None:
    weekend = {"weekday": {"00:00": 1.0}, "weekend": {"00:00": 2.0}}
    friday = datetime(2026, 6, 5, 22, tzinfo=SEOUL).timestamp()  # Friday 22:00 -> Saturday
    cfg = config(
        orders=[
            Order(
                id="night",
                asset="l/comp1",
                runs=3,
                release="2026-06-05T22:00",
                due="2026-06-06T06:00",
                power_kw=30,
            )  # type: ignore[arg-type]
        ],
        tariff=weekend,
        horizon_slots=6,
    )
    p = planner(cfg)
    h = p.horizon(p.grid.slot_at(friday), BASE, {})
    assert h is not None and h.problem.price == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert p.grid.label(h.slots[2]) == "2026-06-06T00:00+09:00"


def test_power_rounding_tolerates_meter_noise() -> None:
    p = planner()
    p.observe({("l/comp1", "power"): (0.0, 30.3), ("l/comp2", "power"): (0.0, 31.0)})
    h = p.horizon(slot(0), BASE, {})
    assert h is not None and [a.power_kw for a in h.problem.assets[:2]] == [30, 35]


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


def test_orders_drop_out_when_done_past_or_cancelled() -> None:
    p = planner()
    h = p.horizon(slot(5), BASE, {})
    assert h is not None  # the oven's last hour: what still fits
    assert [(a.name, a.runs) for a in h.problem.assets] == [("o-comp1", 2), ("o-comp2", 2), ("o-oven1", 1)]
    h = p.horizon(slot(6), BASE, {})
    assert h is not None and [a.name for a in h.problem.assets] == ["o-comp1", "o-comp2"]
    p.state.done["o-comp2"] = {epoch(1), epoch(2)}
    p.state.book.cancelled.add("o-comp1")
    assert p.horizon(slot(6), BASE, {}) is None
    assert p.horizon(slot(8), BASE, {}) is None  # every window has passed


def test_optimum_beats_the_baseline_and_becomes_setpoints() -> None:
    p = planner()
    h = p.horizon(slot(0), BASE, {})
    assert h is not None
    best, best_cost = scheduling.brute_force(h.problem)
    assert best is not None
    plain = baseline(h.problem)
    assert scheduling.violations(h.problem, plain)  # everything at once in slots 1-2: over the cap
    assert best_cost < scheduling.cost(h.problem, plain)
    fixed, feasible = fix(h.problem, best)
    assert feasible and scheduling.cost(h.problem, fixed) == best_cost
    p.adopt(h, fixed)
    on = {o.asset for o in orders() if epoch(4) in p.state.plan.get(o.id, [])}
    assert p.setpoints(slot(4)) == {o.asset: (1.0, o.id) if o.asset in on else (0.0, None) for o in orders()}
    broken, feasible = fix(h.problem, {"o-comp1": [1, 2, 3]})
    assert not feasible and not scheduling.violations(h.problem, broken)  # repaired


def test_setpoints_follow_orders_that_come_and_go() -> None:
    p = planner()
    h = p.horizon(slot(0), BASE, {})
    assert h is not None
    p.adopt(h, scheduling.repair(h.problem, {}))
    ran = {o.id for o in orders() if epoch(4) in p.state.plan.get(o.id, [])}
    assert ran
    p.state.book.cancelled |= ran  # cancelled: its load stands by, it stays known to be switched
    assert all(v == (0.0, None) for v in p.setpoints(slot(4)).values())
    assert p.assets() == {"l/comp1", "l/comp2", "l/oven1"}


def test_improve_keeps_plans_feasible_and_never_costs_more() -> None:
    h = planner(config(cap_kw=150)).horizon(slot(0), BASE, {})
    assert h is not None
    p = h.problem
    for start in (scheduling.repair(p, {}), baseline(p)):
        feasible = start if not scheduling.violations(p, start) else scheduling.repair(p, start)
        better = scheduling.improve(p, feasible)
        assert scheduling.violations(p, better) == []
        assert scheduling.cost(p, better) <= scheduling.cost(p, feasible)
    assert scheduling.cost(p, scheduling.improve(p, baseline(p))) == scheduling.brute_force(p)[1]


def test_blocks_split_the_horizon_and_solve_to_a_feasible_plan() -> None:
    many = [
        Order(id=f"m{i}", asset=f"l/m{i}", runs=3, release=at(i), due=at(16), power_kw=20 + 5 * i)  # type: ignore[arg-type]
        for i in range(4)
    ]
    cfg = config(horizon_slots=16, orders=many, tariff={"weekday": {"00:00": MID, "08:00": LIGHT}})
    h = planner(cfg).horizon(slot(0), BASE, {})
    assert h is not None
    p = h.problem
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


def test_a_daylight_saving_slot_is_billed_for_its_real_hours() -> None:
    """Two-hour slots on Berlin's spring-forward day: the first lasts three real hours."""
    night = [
        Order(
            id="n", asset="l/comp1", runs=1, release="2026-03-29T00:00", due="2026-03-29T08:00", power_kw=30
        )
    ]  # type: ignore[arg-type]
    cfg = config(
        timezone="Europe/Berlin",
        slot_minutes=120,
        horizon_slots=3,
        tariff={"weekday": {"00:00": 10.0}, "holiday": {"00:00": 10.0}},
        orders=night,
    )
    p = planner(cfg)
    h = p.horizon(
        p.grid.slot_at(datetime(2026, 3, 29, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()), BASE, {}
    )
    assert h is not None and [s.hours for s in h.slots] == [3.0, 2.0, 2.0]
    assert h.problem.price == [15.0, 10.0, 10.0]  # x hours / nominal hours: the cost is per real hour


def test_bad_planning_config() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        config(orders=[Order(id="a", asset="a", runs=5, release=at(5), due=at(8), power_kw=1)])  # type: ignore[arg-type]
