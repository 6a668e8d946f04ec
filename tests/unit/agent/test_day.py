"""Production on a fast plant clock, with a gate that accepts everything: every slot executed once
across a daylight-saving change, across midnight, and across a restart (no run repeated or lost)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from qxedge.agent.clock import Clock, Slot
from qxedge.agent.day import ProductionDay
from qxedge.agent.orders import Order
from qxedge.agent.planning import PlanningConfig
from qxedge.agent.safety import Latest, Proposal, Verdict
from qxedge.testing import wait_until

BERLIN = ZoneInfo("Europe/Berlin")


class Gate:
    """Accepts every proposal and remembers it."""

    def __init__(self) -> None:
        self.proposals: list[Proposal] = []

    async def propose(self, p: Proposal, now: float | None = None) -> Verdict:
        self.proposals.append(p)
        return Verdict("accepted", p.value)

    async def record_decision(self, kind: str, provenance: dict[str, Any]) -> None:
        pass

    def runs(self, asset: str) -> set[str]:
        """The slots (local start) in which the asset was switched on."""
        return {p.provenance["slot"] for p in self.proposals if p.asset == asset and p.value == 1.0}


def inputs() -> tuple[Latest, dict[str, float], float]:
    now = time.time()
    return (
        {
            ("l/comp1", "power"): (now, 0.6),
            ("l/comp2", "power"): (now, 0.6),
            ("l/pump1", "power"): (now, 20.0),
        },
        {},
        now,
    )


def config(state: Path, orders: list[Order]) -> PlanningConfig:
    return PlanningConfig.model_validate(
        {
            "mode": "baseline",
            "timezone": "Europe/Berlin",
            "horizon_slots": 6,
            "cap_kw": 100,
            "base_assets": ["l/pump*"],
            "forecast": {"base_kw": 20},
            "state_path": state,
            "orders": orders,
        }
    )


def clock_from(cfg: PlanningConfig, start: str, slot_real_s: float) -> Clock:
    begin = datetime.fromisoformat(start).replace(tzinfo=BERLIN).timestamp()
    speed = cfg.slot_s / slot_real_s
    return Clock(cfg.grid(), speed, anchor=(time.time(), begin))


async def run_until(day: ProductionDay, plant_ts: float) -> None:
    """Run ``day`` until it has executed the slot starting at ``plant_ts``, then stop it (abruptly)."""
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(day.run())
        assert await wait_until(lambda: day.executed is not None and day.executed.start >= plant_ts, 60)
        task.cancel()


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def test_every_slot_once_across_the_fall_back_night(tmp_path: Path) -> None:
    night = Order.model_validate(
        {
            "id": "n",
            "asset": "l/comp1",
            "runs": 4,
            "release": "2026-10-25T01:00",
            "due": "2026-10-25T06:00",
            "power_kw": 30,
        }
    )
    cfg = config(tmp_path / "plan.json", [night])
    day = ProductionDay(cfg, "t", Gate(), None, inputs, clock_from(cfg, "2026-10-24T23:40", 0.3))
    await run_until(day, epoch("2026-10-25T06:00:00+01:00"))
    executed = [slot for slot, _ in day.history]
    assert all(a.end == b.start for a, b in itertools.pairwise(executed)), "a gap or a double"
    labels = [day.grid.label(s) for s in executed]
    assert labels[:7] == [
        "2026-10-25T00:00+02:00",
        "2026-10-25T01:00+02:00",
        "2026-10-25T02:00+02:00",
        "2026-10-25T02:00+01:00",  # the repeated hour: a slot of its own
        "2026-10-25T03:00+01:00",
        "2026-10-25T04:00+01:00",
        "2026-10-25T05:00+01:00",
    ]
    assert len(day.state.done["n"]) == 4  # 01:00 to 06:00 holds five slots that night: four ran


async def test_a_restart_mid_way_neither_repeats_nor_loses_a_run(tmp_path: Path) -> None:
    orders = [
        Order.model_validate(
            {
                "id": "a",
                "asset": "l/comp1",
                "runs": 5,
                "release": "2026-06-01T22:00",
                "due": "2026-06-02T06:00",
                "power_kw": 30,
            }
        ),
        Order.model_validate(
            {
                "id": "b",
                "asset": "l/comp2",
                "runs": 3,
                "release": "2026-06-01T23:00",
                "due": "2026-06-02T08:00",
                "power_kw": 30,
            }
        ),
    ]
    cfg = config(tmp_path / "plan.json", orders)
    clock = clock_from(cfg, "2026-06-01T21:30", 0.3)
    first, second = Gate(), Gate()
    day = ProductionDay(cfg, "t", first, None, inputs, clock)
    await run_until(day, epoch("2026-06-02T00:00:00+02:00"))  # across midnight, then killed
    assert 0 < len(day.state.done["a"]) < 5 and (tmp_path / "plan.json").exists()
    again = ProductionDay(cfg, "t", second, None, inputs, clock)  # the state on disk, the same clock
    assert again.state.executed == day.state.executed  # (its runs may not all be on disk yet)
    await run_until(again, epoch("2026-06-02T08:00:00+02:00"))
    for order in orders:
        ran = first.runs(order.asset) | second.runs(order.asset)
        assert len(ran) == order.runs, (order.id, sorted(ran))  # none repeated, none lost
        assert len(again.state.done[order.id]) == order.runs
    resumed = {p.provenance["slot"] for p in second.proposals} & {
        p.provenance["slot"] for p in first.proposals
    }
    assert len(resumed) <= 1  # at most the slot it was killed in is asserted again (and counted once)


async def test_an_order_on_the_topic_is_planned_before_the_next_boundary(tmp_path: Path) -> None:
    cfg = config(tmp_path / "plan.json", [])
    clock = clock_from(cfg, "2026-06-01T07:00", 1.5)
    gate = Gate()
    day = ProductionDay(cfg, "t", gate, None, inputs, clock)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(day.run())
        assert await wait_until(lambda: day.executed is not None, 30)
        now = day.grid.local(clock.now())
        release = now.replace(minute=0, second=0, microsecond=0).timestamp() + 3600
        doc = {
            "op": "add",
            "order": {
                "id": "mes-1",
                "asset": "l/comp2",
                "runs": 1,
                "release": datetime.fromtimestamp(release, BERLIN).isoformat(),
                "due": datetime.fromtimestamp(release + 3 * 3600, BERLIN).isoformat(),
                "power_kw": 30,
            },
        }
        await day.on_order("qx/v1/t/orders", json.dumps(doc).encode())
        assert day.order_log == {"added": 1}
        assert await wait_until(lambda: gate.runs("l/comp2"), 30)
        task.cancel()
    slot = Slot(int(release), int(release) + 3600)
    assert gate.runs("l/comp2") == {day.grid.label(slot)}  # in the first slot it may run in
    assert day.state.done["mes-1"] == {slot.start}
