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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.agent.safety import Latest
from qxedge.hybrid.problems.scheduling import (
    LoadSchedule,
    Plan,
    ScheduledAsset,
    improve,
    korean_tou,
    repair,
    violations,
)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset: str = Field(pattern=r"^[A-Za-z0-9_./-]+$", description="the on/off load, e.g. line1/comp1")
    runs: int = Field(ge=1, description="slots it must run in")
    release: int = Field(0, ge=0, description="first slot it may run in")
    due: int | None = Field(
        None, ge=1, description="it must be done before this slot (default: the day's end)"
    )
    power_kw: float = Field(gt=0, description="nameplate power; the measured running power replaces it")


class PlanningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["optimised", "baseline"] = Field(
        "optimised", description="baseline: every order runs as soon as it is released"
    )
    slots: int = Field(24, ge=1, le=1000)
    slot_s: float = Field(3600.0, ge=0.2, description="wall-clock length of a slot")
    slot_hours: float = Field(1.0, gt=0, description="the hours one slot bills")
    cap_kw: float | list[float] = Field(
        description="contracted peak (average kW over a slot), or one per slot"
    )
    price: list[float] | None = Field(None, description="price per kWh per slot; default: Korean ToU")
    base_assets: list[str] = Field(["*"], description="assets whose power is the base load (orders excluded)")
    power_signal: str = "power"
    margin_kw: float = Field(5.0, ge=0, description="added to the base-load forecast")
    power_step_kw: int = Field(
        5, ge=1, description="load powers are rounded to this step (coarser: fewer slack bits in the cap)"
    )
    model: str | None = Field(None, description="the anomaly model whose scores flag loads")
    flag_above: float = Field(4.0, description="a load scored above this is held for maintenance")
    max_variables: int | None = Field(None, ge=8, description="decompose larger instances into slot blocks")
    orders: list[Order] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PlanningConfig:
        if isinstance(self.cap_kw, list) and len(self.cap_kw) != self.slots:
            raise ValueError(f"cap_kw: one value per slot ({self.slots}), got {len(self.cap_kw)}")
        if self.price is not None and len(self.price) != self.slots:
            raise ValueError(f"price: one value per slot ({self.slots}), got {len(self.price)}")
        if len({o.asset for o in self.orders}) != len(self.orders):
            raise ValueError("orders: one order per asset")
        for i, o in enumerate(self.orders):
            due = self.slots if o.due is None else o.due
            if due > self.slots or o.release >= due or o.runs > due - o.release:
                raise ValueError(
                    f"orders[{i}]: {o.runs} runs do not fit between release {o.release} and due {due} "
                    f"in a day of {self.slots} slots"
                )
        return self

    def caps(self) -> list[float]:
        return list(self.cap_kw) if isinstance(self.cap_kw, list) else [self.cap_kw] * self.slots

    def prices(self) -> list[float]:
        return self.price if self.price is not None else korean_tou(self.slots)

    def due(self, o: Order) -> int:
        return self.slots if o.due is None else o.due


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
