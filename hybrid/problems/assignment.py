"""Job-to-machine assignment with processing and setup costs.

Every job goes to exactly one machine; a machine takes at most ``capacity`` jobs. Processing a job
costs ``processing[j][m]``; two jobs ``j, k`` on the same machine cost ``setup[j][k]`` more (a
changeover between product families). x[j@m] = 1 when job j runs on machine m.

    minimise  sum_j,m processing[j][m] x[j@m] + sum_j<k sum_m setup[j][k] x[j@m] x[k@m]
    subject   sum_m x[j@m] = 1                     (one-hot, penalty A)
              sum_j x[j@m] <= capacity_m           (inequality with slack bits, penalty A)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import dimod
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qxedge.hybrid.cqm_wire import empty_cqm
from qxedge.hybrid.problems._penalty import penalty_weight

Plan = dict[str, str | None]  # job -> machine (None: unassigned)


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[str] = Field(min_length=1)
    machines: list[str] = Field(min_length=1)
    processing: list[list[float]] = Field(description="processing[j][m]: cost of job j on machine m")
    setup: list[list[float]] = Field(description="setup[j][k]: extra cost of j and k on one machine")
    capacity: list[int] = Field(description="jobs each machine takes at most")

    @model_validator(mode="after")
    def _check(self) -> Assignment:
        nj, nm = len(self.jobs), len(self.machines)
        if len(self.processing) != nj or any(len(row) != nm for row in self.processing):
            raise ValueError("processing must be jobs x machines")
        if len(self.setup) != nj or any(len(row) != nj for row in self.setup):
            raise ValueError("setup must be jobs x jobs")
        if len(self.capacity) != nm or any(c < 0 for c in self.capacity):
            raise ValueError("capacity needs one non-negative entry per machine")
        if len(set(self.jobs)) != nj or len(set(self.machines)) != nm:
            raise ValueError("job and machine names must be unique")
        return self


def var(job: str, machine: str) -> str:
    return f"{job}@{machine}"


def build(p: Assignment) -> dimod.BinaryQuadraticModel:
    linear = {var(j, m): p.processing[a][b] for a, j in enumerate(p.jobs) for b, m in enumerate(p.machines)}
    quadratic = {
        (var(j, m), var(k, m)): p.setup[a][c] + p.setup[c][a]
        for (a, j), (c, k) in itertools.combinations(enumerate(p.jobs), 2)
        for m in p.machines
        if p.setup[a][c] + p.setup[c][a]
    }
    weight = penalty_weight([*linear.values(), *quadratic.values()])
    bqm = dimod.BinaryQuadraticModel(linear, quadratic, 0.0, dimod.BINARY)
    for j in p.jobs:
        bqm.add_linear_equality_constraint([(var(j, m), 1.0) for m in p.machines], weight, -1.0)
    for b, m in enumerate(p.machines):
        if p.capacity[b] < len(p.jobs):
            bqm.add_linear_inequality_constraint(
                [(var(j, m), 1) for j in p.jobs],
                lagrange_multiplier=weight,
                label=f"cap@{m}",
                ub=p.capacity[b],
            )
    return bqm


def build_cqm(p: Assignment) -> dimod.ConstrainedQuadraticModel:
    """The same problem as a constrained model: processing and setup costs as the (quadratic)
    objective, one machine per job (``one@{job}``, ==) and each machine's capacity (``cap@{machine}``,
    <=) as explicit constraints."""
    cqm = empty_cqm()
    for j in p.jobs:
        for m in p.machines:
            cqm.add_variable("BINARY", var(j, m))
    terms: list[tuple[str, float] | tuple[str, str, float]] = [
        (var(j, m), p.processing[a][b]) for a, j in enumerate(p.jobs) for b, m in enumerate(p.machines)
    ]
    terms += [
        (var(j, m), var(k, m), p.setup[a][c] + p.setup[c][a])
        for (a, j), (c, k) in itertools.combinations(enumerate(p.jobs), 2)
        for m in p.machines
        if p.setup[a][c] + p.setup[c][a]
    ]
    cqm.set_objective(terms)
    for j in p.jobs:
        cqm.add_constraint_from_iterable([(var(j, m), 1) for m in p.machines], "==", 1, label=f"one@{j}")
    for b, m in enumerate(p.machines):
        cqm.add_constraint_from_iterable(
            [(var(j, m), 1) for j in p.jobs], "<=", p.capacity[b], label=f"cap@{m}"
        )
    return cqm


def decode(p: Assignment, sample: Mapping[str, int]) -> Plan:
    plan: Plan = {}
    for j in p.jobs:
        chosen = [m for m in p.machines if sample.get(var(j, m), 0) == 1]
        plan[j] = chosen[0] if len(chosen) == 1 else None
    return plan


def cost(p: Assignment, plan: Plan) -> float:
    jobs, machines = {j: a for a, j in enumerate(p.jobs)}, {m: b for b, m in enumerate(p.machines)}
    total = sum(p.processing[jobs[j]][machines[m]] for j, m in plan.items() if m is not None)
    for j, k in itertools.combinations(p.jobs, 2):
        if plan.get(j) is not None and plan.get(j) == plan.get(k):
            total += p.setup[jobs[j]][jobs[k]] + p.setup[jobs[k]][jobs[j]]
    return total


def violations(p: Assignment, plan: Plan) -> list[str]:
    out = [f"job {j} is not on exactly one machine" for j in p.jobs if plan.get(j) is None]
    for b, m in enumerate(p.machines):
        n = sum(1 for j in p.jobs if plan.get(j) == m)
        if n > p.capacity[b]:
            out.append(f"machine {m} has {n} jobs, capacity {p.capacity[b]}")
    return out


def repair(p: Assignment, plan: Plan) -> Plan:
    """Greedy: unassign jobs beyond a machine's capacity (the dearest first), then place every
    unassigned job where it adds the least cost among machines with room."""
    fixed = {j: plan.get(j) for j in p.jobs}
    caps = dict(zip(p.machines, p.capacity, strict=True))
    for m in p.machines:
        on = [j for j in p.jobs if fixed[j] == m]
        while len(on) > caps[m]:
            worst = max(on, key=lambda j: cost(p, fixed) - cost(p, {**fixed, j: None}))
            fixed[worst] = None
            on.remove(worst)
    for j in p.jobs:
        if fixed[j] is None:
            free = [m for m in p.machines if sum(1 for k in p.jobs if fixed[k] == m) < caps[m]]
            if free:
                fixed[j] = min(free, key=lambda m: cost(p, {**fixed, j: m}))
    return fixed


def brute_force(p: Assignment) -> tuple[Plan | None, float]:
    best: tuple[Plan | None, float] = (None, float("inf"))
    for combo in itertools.product(p.machines, repeat=len(p.jobs)):
        plan: Plan = dict(zip(p.jobs, combo, strict=True))
        if not violations(p, plan) and (c := cost(p, plan)) < best[1]:
            best = (plan, c)
    return best


def setpoints(p: Assignment, plan: Plan) -> dict[str, float]:
    """Each machine's planned utilisation: its jobs over its capacity."""
    return {
        m: sum(1 for j in p.jobs if plan.get(j) == m) / max(1, c)
        for m, c in zip(p.machines, p.capacity, strict=True)
    }
