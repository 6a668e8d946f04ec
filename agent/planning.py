"""Planning: the loads' schedule over a rolling horizon of the plant's clock, rebuilt every slot.

Slots are those of the site's wall clock (:mod:`qxedge.agent.clock`); production orders
(:mod:`qxedge.agent.orders`) say which on/off loads (compressors, ovens, chillers) must run how many
slots between their release and due times. The contracted peak ``cap_kw`` applies to the whole plant:
the loads share what the rest of the plant (the *base load*) leaves.

Every slot the planner builds :class:`hybrid.problems.scheduling.LoadSchedule` for the ``horizon_slots``
slots ahead (:meth:`Planner.problem`), one scheduled unit per live order (named by its id):

- **price**: the tariff at each slot's local start and day type, billed for the slot's real length;
- **power**: each load's measured running power (a moving average of its ``power`` readings while on,
  rounded up to ``power_step_kw`` unless within a tenth of a step above one: meter noise must not cost
  a whole step) replaces the order's nameplate ``power_kw`` once it has run;
- **forecast**: the base load of each slot ahead (:mod:`qxedge.agent.forecast`) plus the loads' standby
  draw plus ``margin_kw``; each slot's cap left to the loads is ``cap_kw`` minus that;
- **health**: a load the anomaly model flags (``score > flag_above``) is held in standby (``held``);
- **what already ran**: the runs done (kept on disk) are subtracted; an order whose window reaches
  past the horizon places what fits of its remaining runs inside it.

A decoded plan is repaired if infeasible and polished (:func:`hybrid.problems.scheduling.improve`), and
kept as the slots (by start) each order runs in. ``mode: baseline`` is the plain controller: every
order runs as soon as it is released, back to back.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping

from qxedge.agent.clock import Slot, SlotGrid
from qxedge.agent.forecast import BaseLoadForecast
from qxedge.agent.orders import Order
from qxedge.agent.planstate import PlanState
from qxedge.agent.safety import Latest
from qxedge.agent.settings import PlanningConfig as PlanningConfig
from qxedge.hybrid.problems.scheduling import (
    LoadSchedule,
    Plan,
    ScheduledAsset,
    improve,
    repair,
    violations,
)

__all__ = ["Horizon", "Planner", "PlanningConfig", "baseline", "blocks", "fix"]


class Horizon:
    """One problem over the slots ahead: the problem's slot ``i`` is ``slots[i]``."""

    def __init__(self, slots: list[Slot], problem: LoadSchedule, forecast_kw: list[float]) -> None:
        self.slots = slots
        self.problem = problem
        self.forecast_kw = forecast_kw

    def starts(self, plan: Plan) -> dict[str, list[int]]:
        return {name: [self.slots[t].start for t in ts] for name, ts in plan.items()}


class Planner:
    """What the planner knows: the state on disk (orders, runs done, the plan), measured powers, the
    base-load forecast."""

    def __init__(self, config: PlanningConfig, grid: SlotGrid, state: PlanState) -> None:
        self.config = config
        self.grid = grid
        self.state = state
        self.forecast = BaseLoadForecast(config.forecast, state.profile)
        self.measured_kw: dict[str, float] = {}
        self.standby_kw: dict[str, float] = {}
        self.held: set[str] = set()

    # --- what the orders need -------------------------------------------------------------------------
    def orders(self) -> list[Order]:
        return self.state.book.live()

    def assets(self) -> set[str]:
        """Every load the planner switches (also those of orders cancelled or finished, until pruned)."""
        return {o.asset for o in self.state.book.orders.values()}

    def remaining(self, order: Order) -> int:
        return max(0, order.runs - len(self.state.done.get(order.id, ())))

    def window(self, order: Order) -> tuple[float, float]:
        return order.window(self.grid.tz)

    # --- what was measured ----------------------------------------------------------------------------
    def observe(self, latest: Latest) -> None:
        """Learn each load's running power (readings while it is on) and standby draw (while off)."""
        nameplate = {o.asset: o.power_kw for o in self.state.book.orders.values()}
        for asset, rated in nameplate.items():
            power = latest.get((asset, self.config.power_signal))
            if power is None:
                continue
            learnt = self.measured_kw if power[1] > 0.5 * rated else self.standby_kw
            seen = learnt.get(asset)
            learnt[asset] = power[1] if seen is None else 0.8 * seen + 0.2 * power[1]

    def base_now(self, latest: Latest) -> float | None:
        """The base load now: every base asset's latest power (loads excluded); None without readings."""
        loads = self.assets()
        values = [
            value
            for (asset, signal), (_, value) in latest.items()
            if signal == self.config.power_signal
            and asset not in loads
            and any(fnmatch.fnmatchcase(asset, p) for p in self.config.base_assets)
        ]
        return sum(values) if values else None

    def base_forecast(self, slots: list[Slot], latest: Latest) -> list[float]:
        """Each slot's forecast base load, with the loads' standby draw and the margin."""
        extra = self.config.margin_kw + sum(self.standby_kw.values())
        keys = [self.grid.slot_of_day(s) for s in slots]
        base = self.forecast.predict(keys, self.base_now(latest)) or [0.0] * len(slots)
        return [b + extra for b in base]

    def held_now(self, scores: Mapping[str, float]) -> set[str]:
        return {a for a in self.assets() if scores.get(a, 0.0) > self.config.flag_above}

    # --- the problem and the plan ---------------------------------------------------------------------
    def horizon(self, first: Slot, latest: Latest, scores: Mapping[str, float]) -> Horizon | None:
        """The problem of the ``horizon_slots`` slots from ``first``; None when no order has a run to
        place in them."""
        cfg = self.config
        slots = self.grid.slots(first, cfg.horizon_slots)
        self.held = self.held_now(scores)
        assets = []
        for o in self.orders():
            release, due = self.window(o)
            inside = [i for i, s in enumerate(slots) if s.start >= release and s.end <= due]
            left = self.remaining(o)
            if not inside or not left:
                continue
            runs = 0 if o.asset in self.held else min(left, len(inside))
            step = cfg.power_step_kw
            kw = self.measured_kw.get(o.asset, o.power_kw)
            assets.append(
                ScheduledAsset(
                    name=o.id,
                    # up to the next step, but meter noise (a tenth of a step) must not cost a whole step
                    power_kw=max(step, step * math.ceil(kw / step - 0.1)),
                    runs=runs,
                    earliest=inside[0],
                    latest=inside[-1] + 1,
                )
            )
        if not assets:
            return None
        forecast = self.base_forecast(slots, latest)
        # a slot of another length (a daylight-saving day) is billed for its real hours: in the price
        nominal = cfg.slot_hours
        price = [cfg.tariff.price(self.grid.local(s.start)) * s.hours / nominal for s in slots]
        problem = LoadSchedule(
            assets=assets,
            cap_kw=[max(0, math.floor(cfg.cap_kw - f)) for f in forecast],
            price=price,
            slot_hours=nominal,
        )
        return Horizon(slots, problem, forecast)

    def adopt(self, horizon: Horizon, plan: Plan) -> None:
        """Take a (feasible, see :func:`fix`) plan for the horizon: what was planned before it stays."""
        first = horizon.slots[0].start
        kept = {i: [t for t in ts if t < first] for i, ts in self.state.plan.items()}
        for name, starts in horizon.starts(plan).items():
            kept[name] = sorted({*kept.get(name, []), *starts})
        live = {o.id for o in self.orders()}
        self.state.plan = {i: ts for i, ts in kept.items() if ts and i in live}

    def adopt_nothing(self, first: Slot) -> None:
        """Nothing to run from ``first`` on: the plan ahead is dropped."""
        ahead = {i: [t for t in ts if t < first.start] for i, ts in self.state.plan.items()}
        self.state.plan = {i: ts for i, ts in ahead.items() if ts}

    def setpoints(self, slot: Slot) -> dict[str, tuple[float, str | None]]:
        """Run (1.0) or standby (0.0) for every load in ``slot``, with the order it runs for."""
        out: dict[str, tuple[float, str | None]] = {a: (0.0, None) for a in self.assets()}
        for o in self.orders():
            if (
                slot.start in self.state.plan.get(o.id, ())
                and o.asset not in self.held
                and (slot.start in self.state.done.get(o.id, ()) or self.remaining(o) > 0)
            ):
                release, due = self.window(o)
                if slot.start >= release and slot.end <= due:
                    out[o.asset] = (1.0, o.id)
        return out


def fix(problem: LoadSchedule, plan: Plan) -> tuple[Plan, bool]:
    """A decoded plan repaired when infeasible, then polished; and whether it was feasible as found."""
    feasible = not violations(problem, plan)
    return improve(problem, plan if feasible else repair(problem, plan)), feasible


def baseline(problem: LoadSchedule) -> Plan:
    """The plain controller: every order runs from its release, back to back (the cap ignored)."""
    return {a.name: list(range(a.earliest, a.earliest + a.runs)) for a in problem.assets}


def blocks(problem: LoadSchedule, max_variables: int) -> list[tuple[int, LoadSchedule]]:
    """Split ``problem`` into blocks of consecutive slots, each with at most ``max_variables`` plan
    variables (slack bits come on top): each asset's runs are allocated to the cheapest slots with room
    first (the greedy repair of an empty plan), then counted per block. Returns (first slot, block)."""
    per_slot = max(1, sum(1 for a in problem.assets if a.runs))  # held or finished loads get no variables
    size = max(1, max_variables // per_slot)
    allocation = repair(problem, {})
    out = []
    for first in range(0, problem.slots, size):
        last = min(problem.slots, first + size)
        assets = [
            ScheduledAsset(
                name=a.name,
                power_kw=a.power_kw,
                runs=sum(1 for t in allocation[a.name] if first <= t < last),
                earliest=max(a.earliest, first) - first,
                latest=min(last, problem.window(a).stop) - first,
            )
            for a in problem.assets
            if max(a.earliest, first) < min(last, problem.window(a).stop)
            and any(first <= t < last for t in allocation[a.name])
        ]
        if not assets:
            continue
        block = LoadSchedule(
            assets=assets,
            cap_kw=problem.cap_kw[first:last],
            price=problem.price[first:last],
            slot_hours=problem.slot_hours,
        )
        out.append((first, block))
    return out
