"""Constrained (``cqm``) jobs in the portfolio: the penalty route, its repair, and the best answer.

The ``milp`` backend (:mod:`hybrid.milp`) takes the CQM as it is. Every other backend takes a BQM: the
**penalty route** turns the CQM into one (:func:`penalty_model`), solves it with the backend, maps the
sample back and repairs it against the CQM's constraints (:mod:`hybrid.repair`).

**Penalty rule.** Integer variables are shifted to start at 0 and written in dimod's bounded binary
encoding (:func:`dimod.cqm_to_bqm`); each linear constraint becomes ``λ (lhs - rhs)²`` (equalities) or
``λ (lhs + slack - rhs)²`` with binary slack (inequalities), with one multiplier for all of them::

    λ = 1 + R,   R = Σ |linear bias| · span(v) + Σ |quadratic bias| · span(u) · span(v)

over the objective, where ``span`` is 1 for a binary variable and ``upper - lower`` for an integer one.
``R`` bounds the whole range of the objective, so when every constraint's coefficients and right-hand
side are integers (a violation then costs at least ``λ``), every feasible sample has a lower energy than
every infeasible one and the BQM's optimum is the CQM's (``exact`` on the BQM then proves it). It is the
rule of :mod:`hybrid.problems`, generalised to integers. dimod's default (ten times the largest bias)
guarantees neither. Quadratic constraints would become quartic penalties: they stay out of the BQM and
are left to the repair. A large ``λ`` flattens the landscape for heuristic solvers; the repair and
polish make up for what they leave.

The route's candidate is credited ``<backend>+repair`` when the repair or the polish changed the
backend's sample; its details keep the raw sample's objective and feasibility.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dimod
import numpy as np

from qxedge.hybrid.backends import Deadline, build
from qxedge.hybrid.cqm_wire import empty_cqm
from qxedge.hybrid.repair import Compiled, compile_cqm, repair, values_of
from qxedge.hybrid.wire import Candidate

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig

REPAIRED = "+repair"  # credit suffix of a penalty-route answer the repair or polish changed
NATIVE = "milp"  # the backend that takes the CQM itself
FLOOR = "greedy"


@dataclass(frozen=True, slots=True)
class PenaltyModel:
    """The CQM's penalty BQM and how to read a BQM sample back (:func:`penalty_model`)."""

    bqm: dimod.BinaryQuadraticModel
    inverter: Any  # dimod's CQMToBQMInverter
    shifts: dict[Hashable, int]  # integer variables: their lower bound, added back
    lagrange: float
    left_to_repair: tuple[Hashable, ...]  # quadratic constraints, not in the BQM
    exact: bool  # whether the BQM's optimum is the CQM's (see the module docstring)

    def cqm_sample(self, bqm_sample: Mapping[Any, int]) -> dict[Hashable, int]:
        shifted = self.inverter(bqm_sample)
        return {v: round(x) + self.shifts.get(v, 0) for v, x in shifted.items()}


@dataclass(frozen=True, slots=True)
class ConstrainedJob:
    """What a ``cqm`` job's solvers receive (pickled once per job): the CQM and its penalty model, or
    why there is none."""

    cqm: dimod.ConstrainedQuadraticModel
    penalty: PenaltyModel | None
    why_no_penalty: str | None = None

    @property
    def num_interactions(self) -> int:
        """What it weighs, for the portfolio's pickling (the penalty BQM's interactions)."""
        return self.penalty.bqm.num_interactions if self.penalty is not None else 0

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """dimod's CQM does not pickle: it travels as its own file (written here from a model already
        checked, so dimod's reader may read it back)."""
        with self.cqm.to_file() as file:
            data = file.read()
        return _unpickle, (data, self.penalty, self.why_no_penalty)


def _unpickle(data: bytes, penalty: PenaltyModel | None, why: str | None) -> ConstrainedJob:
    return ConstrainedJob(dimod.ConstrainedQuadraticModel.from_file(data), penalty, why)


def _span(cqm: dimod.ConstrainedQuadraticModel, v: Hashable) -> float:
    return 1.0 if cqm.vartype(v) is dimod.BINARY else float(cqm.upper_bound(v) - cqm.lower_bound(v))


def lagrange_multiplier(cqm: dimod.ConstrainedQuadraticModel) -> float:
    """``λ = 1 + R`` of the module docstring."""
    obj = cqm.objective
    reach = sum(abs(b) * _span(cqm, v) for v, b in obj.iter_linear())
    reach += sum(abs(b) * _span(cqm, u) * _span(cqm, v) for u, v, b in obj.iter_quadratic())
    return 1.0 + float(reach)


def _integral(*values: float) -> bool:
    return all(float(v).is_integer() for v in values)


def penalty_model(cqm: dimod.ConstrainedQuadraticModel, max_interactions: int) -> PenaltyModel:
    """The penalty BQM of ``cqm`` (module docstring); ValueError, with the reason, when it cannot be
    built or would hold more than ``max_interactions`` interactions."""
    shifts = {
        v: int(cqm.lower_bound(v))
        for v in cqm.variables
        if cqm.vartype(v) is dimod.INTEGER and cqm.lower_bound(v) != 0
    }
    shifted = empty_cqm()
    for v in cqm.variables:
        if cqm.vartype(v) is dimod.BINARY:
            shifted.add_variable("BINARY", v)
        else:
            shifted.add_variable(
                "INTEGER", v, lower_bound=0, upper_bound=cqm.upper_bound(v) - cqm.lower_bound(v)
            )
    _shift_into(shifted.objective, cqm.objective, shifts)
    dropped, exact = [], True
    expected = cqm.objective.num_interactions
    for label, c in cqm.constraints.items():
        if not c.lhs.is_linear():
            dropped.append(label)
            continue
        size = c.lhs.num_variables
        expected += size * (size - 1) // 2
        shifted.add_constraint_from_iterable([], c.sense.value, c.rhs, label=label)
        lhs = shifted.constraints[label].lhs
        _shift_into(lhs, c.lhs, shifts)
        exact = exact and _integral(c.rhs, lhs.offset, *(b for _, b in lhs.iter_linear()))
    if expected > max_interactions:
        raise ValueError(f"the penalty BQM would hold ~{expected:,} interactions > {max_interactions:,}")
    lagrange = lagrange_multiplier(shifted)
    try:
        with warnings.catch_warnings():  # "constraint feasible with any value": nothing to penalise
            warnings.simplefilter("ignore", UserWarning)
            bqm, inverter = dimod.cqm_to_bqm(shifted, lagrange_multiplier=lagrange)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"no penalty BQM: {exc}") from exc
    return PenaltyModel(bqm, inverter, shifts, lagrange, tuple(dropped), exact and not dropped)


def _shift_into(target: Any, expr: Any, shifts: Mapping[Hashable, int]) -> None:
    """``target += expr`` with every shifted variable x written as y + shift."""
    offset = float(expr.offset)
    for v, b in expr.iter_linear():
        target.add_linear(v, b)
        offset += b * shifts.get(v, 0)
    for u, v, b in expr.iter_quadratic():
        su, sv = shifts.get(u, 0), shifts.get(v, 0)
        target.add_quadratic(u, v, b)
        if sv:
            target.add_linear(u, b * sv)
        if su:
            target.add_linear(v, b * su)
        offset += b * su * sv
    target.offset += offset


def constrained_job(cqm: dimod.ConstrainedQuadraticModel, max_interactions: int) -> ConstrainedJob:
    try:
        return ConstrainedJob(cqm, penalty_model(cqm, max_interactions))
    except ValueError as exc:
        return ConstrainedJob(cqm, None, str(exc)[:300])


def sample_of(model: Compiled, values: list[int]) -> dict[str, int]:
    """Values in ``model.labels`` order → a JSON-safe sample (string labels)."""
    return {str(v): int(x) for v, x in zip(model.labels, values, strict=True)}


def evaluate(cqm: dimod.ConstrainedQuadraticModel, sample: Mapping[Hashable, int]) -> tuple[bool, float]:
    """(feasible, objective) of a sample, by dimod."""
    feasible = bool(cqm.check_feasible(sample, atol=1e-6))
    return feasible, float(cqm.objective.energy(sample))


def repair_seconds(variables: int) -> float:
    """Kept before the deadline for the repair and polish of the penalty route's sample."""
    return 0.01 + 20e-6 * variables


def solve_penalty(name: str, cfg: SolversConfig, job: ConstrainedJob, deadline: Deadline) -> Candidate:
    """The penalty route with backend ``name``: solve the penalty BQM, map back, repair, polish."""
    started = time.monotonic()
    model = compile_cqm(job.cqm)
    if job.penalty is None:
        if name != FLOOR:
            return Candidate(solver=name, status="refused", reason=job.why_no_penalty)
        start = [0 if b else lo for b, lo in zip(model.binary, model.lower, strict=True)]  # the floor repairs
        return _repaired(name, job, model, start, None, started, deadline, {})
    bqm = job.penalty.bqm
    backend = build(name, cfg)
    why = backend.refuses(bqm.num_variables)
    if why is not None:
        return Candidate(solver=name, status="refused", reason=f"penalty BQM: {why}")
    inner_deadline = Deadline(deadline.due - repair_seconds(job.cqm.num_variables()), deadline.cut)
    inner = backend.solve(bqm, inner_deadline)
    if inner.status != "ok" or inner.sample is None:
        return inner
    labels = {str(v): v for v in bqm.variables}
    raw = job.penalty.cqm_sample({labels[k]: x for k, x in inner.sample.items()})
    details = {**inner.details, "penalty_energy": inner.energy, "lagrange": job.penalty.lagrange}
    if inner.raw_best_energy is not None:
        details["raw_best_energy"] = inner.raw_best_energy
    if job.penalty.left_to_repair:
        details["left_to_repair"] = len(job.penalty.left_to_repair)
    optimal = bool(inner.details.get("optimal")) and job.penalty.exact
    details.pop("optimal", None)
    return _repaired(inner.solver, job, model, values_of(model, raw), optimal, started, deadline, details)


def _repaired(
    solver: str,
    job: ConstrainedJob,
    model: Compiled,
    raw: list[int],
    optimal: bool | None,
    started: float,
    deadline: Deadline,
    details: dict[str, Any],
) -> Candidate:
    raw_sample = dict(zip(model.labels, raw, strict=True))
    raw_feasible, raw_objective = evaluate(job.cqm, raw_sample)
    fixed = repair(model, raw, deadline.at() - 0.002)
    sample = dict(zip(model.labels, fixed.values, strict=True))
    feasible, objective = evaluate(job.cqm, sample)
    changed = fixed.values != raw
    details.update(
        raw_objective=raw_objective,
        raw_feasible=raw_feasible,
        repair_moves=fixed.repair_moves,
        polish_moves=fixed.polish_moves,
    )
    if not fixed.complete:
        details["repair_cut_short"] = True
    if optimal and raw_feasible and not changed:
        details["optimal"] = True
    return Candidate(
        solver=solver + REPAIRED if changed else solver,
        energy=objective,
        seconds=round(time.monotonic() - started, 6),
        sample=sample_of(model, fixed.values),
        feasible=feasible,
        objective=objective,
        details=details,
    )


def solve_constrained(name: str, cfg: SolversConfig, job: ConstrainedJob, deadline: Deadline) -> Candidate:
    """Backend ``name`` on a ``cqm`` job: the MILP on the CQM itself, any other by the penalty route."""
    if name == NATIVE:
        from qxedge.hybrid.milp import solve_milp

        return solve_milp(job.cqm, deadline, cfg.milp)
    return solve_penalty(name, cfg, job, deadline)


def best_constrained(candidates: list[Candidate]) -> Candidate | None:
    """The best answer: feasible before infeasible, then the lowest objective; on a tie a backend the
    job ran beats the floor."""
    ok = [c for c in candidates if c.status == "ok" and c.sample is not None and c.objective is not None]
    return min(
        ok,
        key=lambda c: (not c.feasible, c.objective, c.solver.split("+")[0] == FLOOR),
        default=None,
    )


def unlabel(cqm: dimod.ConstrainedQuadraticModel, sample: Mapping[str, int]) -> dict[Hashable, int]:
    """A sample with JSON (string) labels → the model's labels; KeyError for a foreign label."""
    labels = {str(v): v for v in cqm.variables}
    return {labels[k]: x for k, x in sample.items()}


def in_bounds(cqm: dimod.ConstrainedQuadraticModel, sample: Mapping[Hashable, int]) -> bool:
    """Whether every value is an integer within its variable's bounds."""
    return all(
        isinstance(x, (int, np.integer)) and cqm.lower_bound(v) <= x <= cqm.upper_bound(v)
        for v, x in sample.items()
    )
