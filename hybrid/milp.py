"""The ``milp`` backend: HiGHS (through highspy) on a CQM written as a mixed-integer linear program.

Why HiGHS: it is open source (MIT), its branch-and-cut proves the optimum of the plant problems in
milliseconds, and it reports a proven bound and gap on what it has not finished; highspy is one wheel
with no service or licence to manage. OR-Tools CP-SAT would do too, at ten times the install size.

The model is linear or **linearisable**: binary and integer variables keep their bounds and integrality;
each product of two distinct binaries ``x·y`` (in the objective or a constraint) becomes a variable
``w`` in [0, 1] with the standard AND (McCormick) constraints ``w <= x``, ``w <= y``, ``w >= x + y - 1``,
exact at integral points. A quadratic term that involves an integer variable is not linearised: the
backend refuses the model (the penalty route takes it, :mod:`hybrid.constrained`).

HiGHS keeps the deadline: its ``time_limit`` is the time left less the hand-back, and its MIP
interrupt callback stops it when a cut brings the deadline forward. A proven optimum carries
``details["optimal"]`` (the portfolio then stops waiting for the others); every answer carries the
objective, HiGHS's ``bound`` and ``gap``, and its feasibility as dimod checks it on the rounded sample.
For a ``bqm`` job (a plain QUBO, by name only) the model is the BQM with no constraints.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import dimod
import numpy as np

from qxedge.hybrid.backends import Backend, Deadline, register
from qxedge.hybrid.candidate import finish, hand_back_seconds, timed_out, to_binary
from qxedge.hybrid.config import MilpConfig as MilpConfig
from qxedge.hybrid.wire import Candidate

if TYPE_CHECKING:
    from qxedge.hybrid.portfolio import SolversConfig


@dataclass(frozen=True, slots=True)
class Linear:
    """A CQM as a MILP: columns are the variables, then one per binary product."""

    labels: list[Hashable]
    integer: np.ndarray  # bool per variable (all are integral; True: a non-binary integer)
    cost: np.ndarray
    offset: float
    lower: np.ndarray
    upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    starts: np.ndarray  # CSR rows
    index: np.ndarray
    value: np.ndarray
    products: int

    @property
    def columns(self) -> int:
        return len(self.cost)


def linearise(cqm: dimod.ConstrainedQuadraticModel, max_variables: int) -> Linear | str:
    """The MILP of ``cqm``, or why it has none (a quadratic term with an integer variable, too large)."""
    labels = list(cqm.variables)
    at = {v: i for i, v in enumerate(labels)}
    n = len(labels)
    binary = np.array([cqm.vartype(v) is dimod.BINARY for v in labels], dtype=bool)
    product: dict[tuple[int, int], int] = {}

    def column(u: Hashable, v: Hashable, where: str) -> int:
        i, j = sorted((at[u], at[v]))
        if not (binary[i] and binary[j]) or i == j:
            name = u if not binary[at[u]] else v
            raise _NotLinear(f"{where} has the quadratic term {u!r}*{v!r} with integer variable {name!r}")
        key = (i, j)
        if key not in product:
            product[key] = n + len(product)
        return product[key]

    rows: list[tuple[dict[int, float], float, float]] = []
    try:
        cost: dict[int, float] = {}
        for v, b in cqm.objective.iter_linear():
            cost[at[v]] = cost.get(at[v], 0.0) + b
        for u, v, b in cqm.objective.iter_quadratic():
            c = column(u, v, "the objective")
            cost[c] = cost.get(c, 0.0) + b
        for label, con in cqm.constraints.items():
            coef: dict[int, float] = {}
            for v, b in con.lhs.iter_linear():
                if b:
                    coef[at[v]] = coef.get(at[v], 0.0) + b
            for u, v, b in con.lhs.iter_quadratic():
                c = column(u, v, f"constraint {label!r}")
                coef[c] = coef.get(c, 0.0) + b
            rhs = float(con.rhs) - float(con.lhs.offset)
            sense = con.sense.value
            rows.append((coef, rhs if sense != "<=" else -np.inf, rhs if sense != ">=" else np.inf))
    except _NotLinear as exc:
        return f"not linearisable: {exc}"[:300]
    if n + len(product) > max_variables:
        return f"{n + len(product)} MILP variables (with products) > milp.max_variables {max_variables}"
    for (i, j), w in product.items():  # w = x_i AND x_j
        rows.append(({w: 1.0, i: -1.0}, -np.inf, 0.0))
        rows.append(({w: 1.0, j: -1.0}, -np.inf, 0.0))
        rows.append(({w: 1.0, i: -1.0, j: -1.0}, -1.0, np.inf))
    columns = n + len(product)
    cost_vec = np.zeros(columns)
    for c, b in cost.items():
        cost_vec[c] += b
    lower = np.array([cqm.lower_bound(v) for v in labels] + [0.0] * len(product), dtype=np.float64)
    upper = np.array([cqm.upper_bound(v) for v in labels] + [1.0] * len(product), dtype=np.float64)
    starts = np.cumsum([0] + [len(r[0]) for r in rows[:-1]]) if rows else np.zeros(0)
    return Linear(
        labels=labels,
        integer=~binary,
        cost=cost_vec,
        offset=float(cqm.objective.offset),
        lower=lower,
        upper=upper,
        row_lower=np.array([r[1] for r in rows], dtype=np.float64),
        row_upper=np.array([r[2] for r in rows], dtype=np.float64),
        starts=np.asarray(starts, dtype=np.int32),
        index=np.array([c for r in rows for c in r[0]], dtype=np.int32),
        value=np.array([b for r in rows for b in r[0].values()], dtype=np.float64),
        products=len(product),
    )


class _NotLinear(Exception):
    pass


def refuses(cqm: dimod.ConstrainedQuadraticModel, cfg: MilpConfig) -> str | None:
    """Why the backend cannot take ``cqm``, or None."""
    found = linearise(cqm, cfg.max_variables)
    return found if isinstance(found, str) else None


def _highs(cfg: MilpConfig, time_limit: float, deadline: Deadline, hand_back: float) -> Any:
    import highspy
    from highspy import cb

    # the private core: highspy.Highs() prints a banner on stdout before any option can silence it
    h = highspy._core._Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", max(1e-3, time_limit))
    h.setOptionValue("threads", cfg.threads)
    h.setOptionValue("mip_rel_gap", cfg.mip_rel_gap)
    h.setOptionValue("mip_abs_gap", cfg.mip_abs_gap)

    def interrupt(kind: Any, message: str, data_out: Any, data_in: Any, user: Any) -> None:
        if kind == cb.HighsCallbackType.kCallbackMipInterrupt and deadline.left() < hand_back:
            data_in.user_interrupt = True

    h.setCallback(interrupt, None)
    h.startCallback(cb.HighsCallbackType.kCallbackMipInterrupt)
    return h


def solve_milp(cqm: dimod.ConstrainedQuadraticModel, deadline: Deadline, cfg: MilpConfig) -> Candidate:
    """HiGHS on ``cqm`` by ``deadline``: a candidate with feasibility, objective, bound and gap."""
    started = time.monotonic()
    model = linearise(cqm, cfg.max_variables)
    if isinstance(model, str):
        return Candidate(solver="milp", status="refused", reason=model)
    hand_back = hand_back_seconds(model.columns, len(model.index))
    left = deadline.left() - hand_back
    if left <= 0:
        return timed_out("milp", started, "no time left to run HiGHS")
    import highspy

    h = _highs(cfg, left, deadline, hand_back)
    none = np.zeros(0, dtype=np.int32)
    h.addCols(model.columns, model.cost, model.lower, model.upper, 0, none, none, np.zeros(0))
    h.changeColsIntegrality(
        len(model.labels),
        np.arange(len(model.labels), dtype=np.int32),
        np.array([highspy.HighsVarType.kInteger] * len(model.labels)),
    )
    if len(model.row_lower):
        h.addRows(
            len(model.row_lower), model.row_lower, model.row_upper, len(model.index),
            model.starts, model.index, model.value,
        )  # fmt: skip
    h.changeObjectiveOffset(model.offset)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    bound = _finite(info.mip_dual_bound)
    details: dict[str, Any] = {"highs_status": h.modelStatusToString(status), "products": model.products}
    if status == highspy.HighsModelStatus.kInfeasible:
        return Candidate(
            solver="milp",
            reason="HiGHS proved that no sample meets the constraints",
            seconds=round(time.monotonic() - started, 6),
            feasible=False,
            details={**details, "infeasible": True},
        )
    if info.primal_solution_status != 2:  # kSolutionStatusFeasible: no solution found
        if status in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kInterrupt):
            return timed_out("milp", started, "HiGHS found no solution by the deadline", bound=bound)
        return Candidate(
            solver="milp",
            status="error",
            reason=f"HiGHS: {h.modelStatusToString(status)}",
            seconds=round(time.monotonic() - started, 6),
        )
    values = np.rint(np.asarray(h.getSolution().col_value[: len(model.labels)])).astype(np.int64)
    sample = dict(zip(model.labels, values.tolist(), strict=True))
    feasible = bool(cqm.check_feasible(sample, atol=1e-6))
    objective = float(cqm.objective.energy(sample))
    optimal = status == highspy.HighsModelStatus.kOptimal and feasible
    gap = 0.0 if optimal else _finite(info.mip_gap)
    if optimal:
        details["optimal"] = True
    return Candidate(
        solver="milp",
        energy=objective,
        seconds=round(time.monotonic() - started, 6),
        sample={str(v): int(x) for v, x in sample.items()},
        feasible=feasible,
        objective=objective,
        bound=bound,
        gap=gap,
        details=details,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) and abs(value) < 1e300 else None


def solve_bqm(bqm: dimod.BinaryQuadraticModel, deadline: Deadline, cfg: MilpConfig) -> Candidate:
    """HiGHS on a plain BQM (a ``bqm`` job naming ``milp``): the QUBO linearised, no constraints."""
    started = time.monotonic()
    binary = to_binary(bqm)
    found = solve_milp(dimod.ConstrainedQuadraticModel.from_bqm(binary), deadline, cfg)
    if found.status != "ok" or found.sample is None:
        return found
    values = np.array([found.sample[str(v)] for v in binary.variables])
    details = {**found.details}
    return finish(bqm, "milp", values, started, details=details, bound=found.bound, gap=found.gap)


def _warm() -> None:
    import highspy  # noqa: F401


def _milp(config: SolversConfig) -> Backend:
    cfg = config.milp

    def too_many(n: int) -> str | None:
        return f"{n} variables > milp.max_variables {cfg.max_variables}" if n > cfg.max_variables else None

    return Backend("milp", partial(solve_bqm, cfg=cfg), too_many, _warm, preload=("highspy",))


register("milp", _milp)
