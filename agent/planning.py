"""Planning: the production day's load schedule, rebuilt from live data every slot and offloaded.

The day is ``slots`` slots of ``slot_s`` seconds (3600 in a plant; 2.5 in the demo's compressed day).
Production orders say which on/off loads (compressors, ovens, chillers) must run how many slots between
their release and their due slot. The contracted peak ``cap_kw`` applies to the whole plant: the loads
share what the rest of the plant (the *base load*) leaves.

Each slot, the planner builds :class:`hybrid.problems.scheduling.LoadSchedule` for the slots still ahead
from what the agent measured and inferred (:meth:`DayPlanner.problem`):

- **power**: each load's measured running power (a moving average of its ``power`` readings while it was
  on, rounded up to ``power_step_kw`` unless it is within a tenth of a step above one: meter noise must
  not cost a whole step) replaces the nameplate ``power_kw`` once it has run;
- **forecast**: the base load ahead is forecast by persistence from the features: the latest power of
  every base asset and the standby draw of every load, plus ``margin_kw`` for what it may still rise.
  The cap left to the loads is ``cap_kw - forecast``. The plan is rebuilt every slot, so the near
  slots always use a fresh forecast;
- **health**: a load the anomaly model flags (``score > flag_above``) is excluded: it gets no runs and is
  held in standby for maintenance (reported as ``held``);
- **what already ran**: runs done (and the slot being executed) are subtracted from each order.

The problem goes through the offload path (deadline, local fallback); the sample is decoded, repaired if
infeasible, polished by local moves of single runs to cheaper slots with room
(:func:`hybrid.problems.scheduling.improve`), and each slot's plan becomes run (1.0) / standby (0.0)
setpoints through the setpoint gate.
Instances with more than ``max_variables`` variables are decomposed into blocks of consecutive slots:
each order's remaining runs are first spread over the blocks by a greedy allocation (cheapest slots with
room first), then every block is solved as its own job, in parallel, small enough for the exact solver
or QAOA to hold.

The ``baseline`` mode is the plain controller a plant runs without optimisation: every order runs as
soon as it is released, back to back.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping

from qxedge.agent.safety import Latest
from qxedge.agent.settings import Order as Order
from qxedge.agent.settings import PlanningConfig as PlanningConfig
from qxedge.hybrid.problems.scheduling import (
    LoadSchedule,
    Plan,
    ScheduledAsset,
    improve,
    repair,
    violations,
)


class DayPlanner:
    """The state of one production day: what ran, what was measured, the current plan."""

    def __init__(self, config: PlanningConfig) -> None:
        self.config = config
        self.ran: dict[str, set[int]] = {o.asset: set() for o in config.orders}
        self.measured_kw: dict[str, float] = {}
        self.standby_kw: dict[str, float] = {}
        self.held: set[str] = set()
        self.plan: Plan = baseline_plan(config) if config.mode == "baseline" else {}

    def observe(self, latest: Latest) -> None:
        """Learn each load's running power (readings while it is on) and standby draw (while off)."""
        for o in self.config.orders:
            power = latest.get((o.asset, self.config.power_signal))
            if power is None:
                continue
            learnt = self.measured_kw if power[1] > 0.5 * o.power_kw else self.standby_kw
            seen = learnt.get(o.asset)
            learnt[o.asset] = power[1] if seen is None else 0.8 * seen + 0.2 * power[1]

    def base_forecast(self, latest: Latest) -> float:
        loads = {o.asset for o in self.config.orders}
        return (
            self.config.margin_kw
            + sum(self.standby_kw.values())
            + sum(
                value
                for (asset, signal), (_, value) in latest.items()
                if signal == self.config.power_signal
                and asset not in loads
                and any(fnmatch.fnmatchcase(asset, p) for p in self.config.base_assets)
            )
        )

    def problem(self, first: int, latest: Latest, scores: Mapping[str, float]) -> LoadSchedule | None:
        """The schedule of slots ``first..`` (re-indexed from 0) from live data; None when none are left."""
        cfg = self.config
        if first >= cfg.slots:
            return None
        forecast = self.base_forecast(latest)
        self.held = {o.asset for o in cfg.orders if scores.get(o.asset, 0.0) > cfg.flag_above}
        assets = []
        for o in cfg.orders:
            start, due = max(o.release, first), cfg.due(o)
            if start >= due:  # its window has passed
                continue
            done = sum(1 for t in self.ran[o.asset] if o.release <= t < due)
            runs = 0 if o.asset in self.held else max(0, min(o.runs - done, due - start))
            step = cfg.power_step_kw
            kw = self.measured_kw.get(o.asset, o.power_kw)
            assets.append(
                ScheduledAsset(
                    name=o.asset,
                    # up to the next step, but meter noise (a tenth of a step) must not cost a whole step
                    power_kw=max(step, step * math.ceil(kw / step - 0.1)),
                    runs=runs,
                    earliest=start - first,
                    latest=due - first,
                )
            )
        if not assets:
            return None
        return LoadSchedule(
            assets=assets,
            cap_kw=[max(0, math.floor(c - forecast)) for c in cfg.caps()[first:]],
            price=cfg.prices()[first:],
            slot_hours=cfg.slot_hours,
        )

    def adopt(self, first: int, problem: LoadSchedule, plan: Plan) -> bool:
        """Take a (decoded) plan for slots ``first..``; repaired when infeasible. Returns whether it was
        feasible as found."""
        feasible = not violations(problem, plan)
        fixed = improve(problem, plan if feasible else repair(problem, plan))
        self.plan = {
            o.asset: sorted(
                {t for t in self.plan.get(o.asset, []) if t < first}
                | {t + first for t in fixed.get(o.asset, [])}
            )
            for o in self.config.orders
        }
        return feasible

    def setpoints(self, slot: int) -> dict[str, float]:
        """Run (1.0) or standby (0.0) for every load in ``slot``."""
        return {
            o.asset: 1.0 if slot in self.plan.get(o.asset, []) and o.asset not in self.held else 0.0
            for o in self.config.orders
        }


def baseline_plan(cfg: PlanningConfig) -> Plan:
    """The plain controller: every order runs from its release, back to back."""
    return {o.asset: list(range(o.release, o.release + o.runs)) for o in cfg.orders}


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
