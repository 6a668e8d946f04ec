"""Compressor / chiller staging: which units run in each slot to cover the forecast demand at minimal
energy cost, with minimum up and down times.

y[u@t] = 1 when unit u runs in slot t. A unit that starts must stay on ``min_up`` slots, one that
stops must stay off ``min_down`` slots (within the horizon; ``on_before`` is its state before slot 0).
Start and stop indicators are auxiliary variables tied to y by the standard quadratic penalty for
z = a AND NOT b, so every constraint stays quadratic:

    minimise  sum_u,t cost_u y[u@t]
    subject   sum_u kW_u y[u@t] >= demand_t                        (slack bits, penalty A)
              start[u@t] = y[u@t] (1 - y[u@t-1]),  stop[u@t] = y[u@t-1] (1 - y[u@t])
              start[u@t] <= y[u@t+k]      for 0 < k < min_up       (penalty A start (1 - y))
              stop[u@t]  <= 1 - y[u@t+k]  for 0 < k < min_down     (penalty A stop y)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import dimod
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.hybrid.cqm_wire import empty_cqm
from qxedge.hybrid.problems._penalty import penalty_weight

Plan = dict[str, list[int]]  # unit -> 0/1 per slot


class Unit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    capacity_kw: int = Field(ge=1, description="cooling / air it delivers when on")
    cost: float = Field(ge=0, description="energy cost per slot on")
    min_up: int = Field(1, ge=1)
    min_down: int = Field(1, ge=1)
    on_before: bool = False


class Staging(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: list[Unit] = Field(min_length=1)
    demand_kw: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Staging:
        if len({u.name for u in self.units}) != len(self.units):
            raise ValueError("unit names must be unique")
        return self

    @property
    def slots(self) -> int:
        return len(self.demand_kw)


def y(u: str, t: int) -> str:
    return f"{u}@{t}"


def _and_not(
    bqm: dimod.BinaryQuadraticModel, z: str, a: str, b: str | None, b_value: int, weight: float
) -> None:
    """Penalise z != a AND NOT b (b a variable, or the constant b_value when b is None):
    weight (a - ab - 2az + 2bz + z) is 0 when z = a (1 - b), at least weight otherwise."""
    if b is None:
        if b_value:  # z = 0: penalise z
            bqm.add_linear(z, weight)
        else:  # z = a: weight (a + z - 2az)
            bqm.add_linear(a, weight)
            bqm.add_linear(z, weight)
            bqm.add_quadratic(a, z, -2 * weight)
        return
    bqm.add_linear(a, weight)
    bqm.add_quadratic(a, b, -weight)
    bqm.add_quadratic(a, z, -2 * weight)
    bqm.add_quadratic(b, z, 2 * weight)
    bqm.add_linear(z, weight)


def build(p: Staging) -> dimod.BinaryQuadraticModel:
    linear = {y(u.name, t): u.cost for u in p.units for t in range(p.slots)}
    weight = penalty_weight(linear.values())
    bqm = dimod.BinaryQuadraticModel(linear, {}, 0.0, dimod.BINARY)
    for t, demand in enumerate(p.demand_kw):
        if demand <= 0:
            continue  # nothing to cover
        bqm.add_linear_inequality_constraint(
            [(y(u.name, t), -u.capacity_kw) for u in p.units],
            lagrange_multiplier=weight,
            label=f"cover@{t}",
            ub=-demand,
        )
    for u in p.units:
        for t in range(p.slots):
            prev = y(u.name, t - 1) if t else None
            if u.min_up > 1 and any(t + k < p.slots for k in range(1, u.min_up)):
                start = f"start:{u.name}@{t}"
                _and_not(bqm, start, y(u.name, t), prev, int(u.on_before), weight)
                for k in range(1, u.min_up):
                    if t + k < p.slots:  # start <= y[t+k]: weight * start * (1 - y[t+k])
                        bqm.add_linear(start, weight)
                        bqm.add_quadratic(start, y(u.name, t + k), -weight)
            if u.min_down > 1 and any(t + k < p.slots for k in range(1, u.min_down)):
                stop = f"stop:{u.name}@{t}"
                if prev is None and u.on_before:  # stop = 1 - y[0]: weight (1 - stop - y + 2 stop y)
                    bqm.offset += weight
                    bqm.add_linear(stop, -weight)
                    bqm.add_linear(y(u.name, t), -weight)
                    bqm.add_quadratic(stop, y(u.name, t), 2 * weight)
                elif prev is None:  # off before: no stop at slot 0
                    bqm.add_linear(stop, weight)
                else:
                    _and_not(bqm, stop, prev, y(u.name, t), 0, weight)
                for k in range(1, u.min_down):
                    if t + k < p.slots:  # stop <= 1 - y[t+k]: weight * stop * y[t+k]
                        bqm.add_quadratic(stop, y(u.name, t + k), weight)
    return bqm


def build_cqm(p: Staging) -> dimod.ConstrainedQuadraticModel:
    """The same problem as a constrained model, with no auxiliary variables: the running cost as the
    objective, each slot's cover (``cover@{t}``, >=) and the minimum up and down times as linear
    constraints on y alone (y[u@-1] is ``on_before``):

        y[u@t+k] >= y[u@t] - y[u@t-1]          for 0 < k < min_up     (``up:{u}@{t}+{k}``)
        y[u@t+k] <= 1 - (y[u@t-1] - y[u@t])    for 0 < k < min_down   (``down:{u}@{t}+{k}``)
    """
    cqm = empty_cqm()
    for u in p.units:
        for t in range(p.slots):
            cqm.add_variable("BINARY", y(u.name, t))
    cqm.set_objective([(y(u.name, t), u.cost) for u in p.units for t in range(p.slots)])
    for t, demand in enumerate(p.demand_kw):
        if demand > 0:
            terms = [(y(u.name, t), u.capacity_kw) for u in p.units]
            cqm.add_constraint_from_iterable(terms, ">=", demand, label=f"cover@{t}")
    for u in p.units:
        before = int(u.on_before)
        for t in range(p.slots):
            # the switch at t: y[t] - y[t-1], with y[-1] the constant on_before
            switch: list[tuple[str, int]] = [(y(u.name, t), 1)] + ([(y(u.name, t - 1), -1)] if t else [])
            constant = 0 if t else -before
            for k in range(1, u.min_up):
                if t + k < p.slots:  # y[t+k] - switch >= 0
                    terms = [(y(u.name, t + k), 1)] + [(v, -c) for v, c in switch]
                    cqm.add_constraint_from_iterable(terms, ">=", constant, label=f"up:{u.name}@{t}+{k}")
            for k in range(1, u.min_down):
                if t + k < p.slots:  # y[t+k] - switch <= 1
                    terms = [(y(u.name, t + k), 1)] + [(v, -c) for v, c in switch]
                    cqm.add_constraint_from_iterable(
                        terms, "<=", 1 + constant, label=f"down:{u.name}@{t}+{k}"
                    )
    return cqm


def decode(p: Staging, sample: Mapping[str, int]) -> Plan:
    return {u.name: [int(sample.get(y(u.name, t), 0)) for t in range(p.slots)] for u in p.units}


def cost(p: Staging, plan: Plan) -> float:
    return sum(u.cost * sum(plan[u.name]) for u in p.units)


def violations(p: Staging, plan: Plan) -> list[str]:
    out = []
    for t, demand in enumerate(p.demand_kw):
        supplied = sum(u.capacity_kw * plan[u.name][t] for u in p.units)
        if supplied < demand:
            out.append(f"slot {t}: {supplied} kW for a demand of {demand}")
    for u in p.units:
        states = [int(u.on_before), *plan[u.name]]
        for t in range(1, len(states)):
            if states[t] != states[t - 1]:
                need = u.min_up if states[t] else u.min_down
                if any(
                    state != states[t] for state in states[t : t + need]
                ):  # cut short by the horizon end: fine
                    what = "starts" if states[t] else "stops"
                    out.append(f"{u.name} {what} in slot {t - 1} for less than {need} slots")
    return out


def repair(p: Staging, plan: Plan) -> Plan:
    """Greedy: cover each slot's shortfall with the cheapest units per kW that are off, then switch
    units on to fill any gap shorter than their minimum down time (running longer is always allowed
    for coverage) and extend runs shorter than their minimum up time."""
    fixed = {name: list(states) for name, states in plan.items()}
    by_value = sorted(p.units, key=lambda u: u.cost / u.capacity_kw)
    for t, demand in enumerate(p.demand_kw):
        for u in by_value:
            if sum(v.capacity_kw * fixed[v.name][t] for v in p.units) >= demand:
                break
            fixed[u.name][t] = 1
    for u in p.units:
        states = fixed[u.name]
        for t in range(p.slots):
            prev = states[t - 1] if t else int(u.on_before)
            if states[t] == 1 and prev == 0:  # a start: keep it on for min_up
                for k in range(t, min(p.slots, t + u.min_up)):
                    states[k] = 1
            if states[t] == 0 and prev == 1:  # a stop: if it restarts within min_down, bridge the gap
                restart = next((k for k in range(t, min(p.slots, t + u.min_down)) if states[k] == 1), None)
                if restart is not None:
                    for k in range(t, restart):
                        states[k] = 1
    return fixed


def brute_force(p: Staging) -> tuple[Plan | None, float]:
    best: tuple[Plan | None, float] = (None, float("inf"))
    for bits in itertools.product((0, 1), repeat=len(p.units) * p.slots):
        plan = {u.name: list(bits[i * p.slots : (i + 1) * p.slots]) for i, u in enumerate(p.units)}
        if (c := cost(p, plan)) < best[1] and not violations(p, plan):
            best = (plan, c)
    return best


def setpoints(p: Staging, plan: Plan, slot: int) -> dict[str, float]:
    return {u.name: float(plan[u.name][slot]) for u in p.units}
