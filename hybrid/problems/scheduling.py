"""Peak-capped load scheduling: which assets run in which slot of the horizon.

Assets have a rated power, a required number of run slots and the window of slots they may run in
(a production order released at ``earliest``, due before ``latest``); each slot has a contracted peak
cap and a time-of-use price. Minimise the energy cost, meet every asset's runs exactly, stay under the
cap in every slot. x[a@t] = 1 when asset a runs in slot t; only slots in the asset's window get a
variable. :func:`build` writes the constraints as penalties (a BQM, for QUBO-only backends);
:func:`build_cqm` keeps them as constraints (a CQM: the ``milp`` backend proves its optimum).

    minimise  sum_a,t price_t * hours * kW_a * x[a@t]
    subject   sum_t x[a@t] = runs_a                 (equality, penalty A)
              sum_a kW_a * x[a@t] <= cap_t          (inequality with slack bits, penalty A)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import dimod
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.hybrid.cqm_wire import empty_cqm
from qxedge.hybrid.problems._penalty import penalty_weight

Plan = dict[str, list[int]]  # asset -> the slots it runs in


def korean_tou(slots: int = 24, light: float = 94.0, mid: float = 145.0, peak: float = 211.0) -> list[float]:
    """KRW/kWh per hourly slot of a day, after the industrial light/mid/peak periods (summer weekday):
    light 22-08, peak 11-12 and 13-18, mid otherwise. Prices are indicative; pass the contract's own."""
    by_hour = [light if h >= 22 or h < 8 else peak if h == 11 or 13 <= h < 18 else mid for h in range(24)]
    return [by_hour[(t * 24) // slots] for t in range(slots)]


class ScheduledAsset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    power_kw: int = Field(ge=1)
    runs: int = Field(ge=0, description="slots it must run in over the horizon")
    earliest: int = Field(0, ge=0, description="first slot it may run in")
    latest: int | None = Field(None, ge=1, description="it must be done before this slot (default: the end)")


class LoadSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assets: list[ScheduledAsset] = Field(min_length=1)
    cap_kw: list[int] = Field(min_length=1, description="contracted peak per slot")
    price: list[float] = Field(min_length=1, description="price per kWh per slot")
    slot_hours: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> LoadSchedule:
        if len(self.cap_kw) != len(self.price):
            raise ValueError("cap_kw and price need one entry per slot")
        for a in self.assets:
            if a.runs > len(self.window(a)):
                raise ValueError(f"{a.name} needs {a.runs} runs in a window of {len(self.window(a))} slots")
        if len({a.name for a in self.assets}) != len(self.assets):
            raise ValueError("asset names must be unique")
        return self

    @property
    def slots(self) -> int:
        return len(self.price)

    def window(self, a: ScheduledAsset) -> range:
        return range(a.earliest, min(self.slots, self.slots if a.latest is None else a.latest))


def var(asset: str, slot: int) -> str:
    return f"{asset}@{slot}"


def cost(p: LoadSchedule, plan: Plan) -> float:
    kw = {a.name: a.power_kw for a in p.assets}
    return sum(p.price[t] * p.slot_hours * kw[a] for a, ts in plan.items() for t in ts)


def build(p: LoadSchedule) -> dimod.BinaryQuadraticModel:
    linear = {var(a.name, t): p.price[t] * p.slot_hours * a.power_kw for a in p.assets for t in p.window(a)}
    weight = penalty_weight(linear.values())
    bqm = dimod.BinaryQuadraticModel(linear, {}, 0.0, dimod.BINARY)
    for a in p.assets:
        if not a.runs:  # nothing to run: every slot of its window is off
            bqm.add_linear_equality_constraint(
                [(var(a.name, t), 1.0) for t in p.window(a)], lagrange_multiplier=weight, constant=0.0
            )
            continue
        bqm.add_linear_equality_constraint(
            [(var(a.name, t), 1.0) for t in p.window(a)],
            lagrange_multiplier=weight,
            constant=-float(a.runs),
        )
    for t in range(p.slots):
        terms = [(var(a.name, t), a.power_kw) for a in p.assets if t in p.window(a)]
        if sum(kw for _, kw in terms) > p.cap_kw[t]:  # a slot that cannot exceed its cap needs no slack
            # in units of the greatest common divisor of the powers: fewer slack bits, same constraint
            unit = math.gcd(*(kw for _, kw in terms))
            bqm.add_linear_inequality_constraint(
                [(v, kw // unit) for v, kw in terms],
                lagrange_multiplier=weight,
                label=f"cap@{t}",
                ub=p.cap_kw[t] // unit,
            )
    return bqm


def build_cqm(p: LoadSchedule) -> dimod.ConstrainedQuadraticModel:
    """The same problem as a constrained model: the energy cost as the objective, each asset's runs
    (``runs@{asset}``, ==) and each slot's cap (``cap@{slot}``, <=) as explicit constraints."""
    cqm = empty_cqm()
    for a in p.assets:
        for t in p.window(a):
            cqm.add_variable("BINARY", var(a.name, t))
    cqm.set_objective(
        [(var(a.name, t), p.price[t] * p.slot_hours * a.power_kw) for a in p.assets for t in p.window(a)]
    )
    for a in p.assets:
        cqm.add_constraint_from_iterable(
            [(var(a.name, t), 1) for t in p.window(a)], "==", a.runs, label=f"runs@{a.name}"
        )
    for t in range(p.slots):
        terms = [(var(a.name, t), a.power_kw) for a in p.assets if t in p.window(a)]
        if terms:
            cqm.add_constraint_from_iterable(terms, "<=", p.cap_kw[t], label=f"cap@{t}")
    return cqm


def decode(p: LoadSchedule, sample: Mapping[str, int]) -> Plan:
    return {a.name: [t for t in range(p.slots) if sample.get(var(a.name, t), 0) == 1] for a in p.assets}


def load(p: LoadSchedule, plan: Plan) -> list[int]:
    kw = {a.name: a.power_kw for a in p.assets}
    per_slot = [0] * p.slots
    for a, ts in plan.items():
        for t in ts:
            per_slot[t] += kw[a]
    return per_slot


def violations(p: LoadSchedule, plan: Plan) -> list[str]:
    out = [
        f"{a.name} runs {len(plan.get(a.name, []))} slots, needs {a.runs}"
        for a in p.assets
        if len(plan.get(a.name, [])) != a.runs
    ]
    out += [
        f"{a.name} runs outside its window [{p.window(a).start}, {p.window(a).stop})"
        for a in p.assets
        if any(t not in p.window(a) for t in plan.get(a.name, []))
    ]
    out += [
        f"slot {t}: {kw} kW over the cap of {p.cap_kw[t]}"
        for t, kw in enumerate(load(p, plan))
        if kw > p.cap_kw[t]
    ]
    return out


def repair(p: LoadSchedule, plan: Plan) -> Plan:
    """Greedy: drop each asset's dearest surplus runs, move runs out of slots over the cap to the
    cheapest slot with room, then add missing runs in the cheapest slots with room. The cap comes
    first: runs that still do not fit under it are dropped (and reported unmet by ``violations``)."""
    windows = {a.name: p.window(a) for a in p.assets}
    fixed = {a.name: sorted(t for t in set(plan.get(a.name, [])) if t in windows[a.name]) for a in p.assets}
    kw = {a.name: a.power_kw for a in p.assets}
    for a in p.assets:
        while len(fixed[a.name]) > a.runs:
            fixed[a.name].remove(max(fixed[a.name], key=lambda t: p.price[t]))
    per_slot = load(p, fixed)

    def room(name: str) -> list[int]:
        free = [t for t in windows[name] if t not in fixed[name] and per_slot[t] + kw[name] <= p.cap_kw[t]]
        return sorted(free, key=lambda t: (p.price[t], t))

    for t in range(p.slots):
        for name in sorted(fixed, key=lambda n: -kw[n]):
            if per_slot[t] <= p.cap_kw[t]:
                break
            if t in fixed[name] and (target := room(name)):
                fixed[name].remove(t)
                fixed[name].append(target[0])
                per_slot[t] -= kw[name]
                per_slot[target[0]] += kw[name]
    for a in p.assets:
        while len(fixed[a.name]) < a.runs and (target := room(a.name)):
            fixed[a.name].append(target[0])
            per_slot[target[0]] += kw[a.name]
    for t in range(p.slots):  # the cap before the runs: what still does not fit is left unmet
        for name in sorted(fixed, key=lambda n: -kw[n]):
            if per_slot[t] <= p.cap_kw[t]:
                break
            if t in fixed[name]:
                fixed[name].remove(t)
                per_slot[t] -= kw[name]
    return {name: sorted(ts) for name, ts in fixed.items()}


def improve(p: LoadSchedule, plan: Plan) -> Plan:
    """Local search on a feasible plan: move single runs to cheaper slots of their window that have room,
    dearest first, until no move saves anything (the polish after a heuristic or a repaired sample)."""
    fixed = {name: sorted(ts) for name, ts in plan.items()}
    kw = {a.name: a.power_kw for a in p.assets}
    windows = {a.name: p.window(a) for a in p.assets}
    per_slot = load(p, fixed)
    moved = True
    while moved:
        moved = False
        runs = sorted(((p.price[t] * kw[n], n, t) for n, ts in fixed.items() for t in ts), reverse=True)
        for _, name, t in runs:
            room = [
                u
                for u in windows[name]
                if u not in fixed[name] and p.price[u] < p.price[t] and per_slot[u] + kw[name] <= p.cap_kw[u]
            ]
            if room:
                u = min(room, key=lambda u: (p.price[u], u))
                fixed[name] = sorted([*(x for x in fixed[name] if x != t), u])
                per_slot[t] -= kw[name]
                per_slot[u] += kw[name]
                moved = True
                break
    return fixed


def brute_force(p: LoadSchedule) -> tuple[Plan | None, float]:
    """The optimum by enumeration (small instances only); (None, inf) when infeasible."""
    best: tuple[Plan | None, float] = (None, float("inf"))
    choices = [list(itertools.combinations(p.window(a), a.runs)) for a in p.assets]
    for combo in itertools.product(*choices):
        plan = {a.name: list(ts) for a, ts in zip(p.assets, combo, strict=True)}
        if all(kw <= cap for kw, cap in zip(load(p, plan), p.cap_kw, strict=True)):
            c = cost(p, plan)
            if c < best[1]:
                best = (plan, c)
    return best


def setpoints(p: LoadSchedule, plan: Plan, slot: int) -> dict[str, float]:
    """Run (1.0) or stand by (0.0) for every asset in ``slot``."""
    return {a.name: 1.0 if slot in plan.get(a.name, []) else 0.0 for a in p.assets}
