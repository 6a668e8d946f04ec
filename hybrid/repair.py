"""Repair and polish of a sample against a ConstrainedQuadraticModel's own constraints.

A sample from the penalty route (a BQM solver's best, decoded back to the CQM's variables) may break
constraints: a penalty only discourages a violation. :func:`repair` makes it feasible and then better,
within a deadline, in two greedy phases:

1. **repair**: while some constraint is violated, take the move that lowers the total violation most
   (ties: the objective): a single-variable move (a binary flip; an integer one step up or down, or to
   the value that meets one violated constraint exactly), else a pair of such moves on two variables
   that share a constraint (moving a job from a full machine to another one). It stops when nothing
   lowers the violation (the sample stays infeasible and says so).
2. **polish** (feasible samples only): the 1-flip (one-variable) move, then the pair move, that lowers
   the objective most while every constraint stays met, until none does: a local optimum for those moves.

Violation of ``lhs <= rhs`` is ``max(0, lhs - rhs)``, of ``>=`` the mirror, of ``==`` ``|lhs - rhs|``;
a constraint counts as met within :data:`TOLERANCE`. Works on any CQM :mod:`hybrid.cqm_wire` accepts
(binary and integer variables, linear and quadratic expressions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import dimod

TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Compiled:
    """A CQM as plain lists for move evaluation: expression 0 is the objective, ``1 + k`` constraint k."""

    labels: list[Hashable]
    lower: list[int]
    upper: list[int]
    binary: list[bool]
    senses: list[str]  # per constraint
    rhs: list[float]
    offsets: list[float]  # per expression
    linear: list[list[tuple[int, float]]]  # per variable: (expression, bias)
    quadratic: list[list[tuple[int, int, float]]]  # per variable: (expression, other variable, bias)
    neighbours: list[list[int]]  # per variable: the variables sharing a constraint with it
    members: list[list[int]]  # per constraint: its variables


def compile_cqm(cqm: dimod.ConstrainedQuadraticModel) -> Compiled:
    labels = list(cqm.variables)
    index = {v: i for i, v in enumerate(labels)}
    n = len(labels)
    linear: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    quadratic: list[list[tuple[int, int, float]]] = [[] for _ in range(n)]
    expressions = [cqm.objective, *(c.lhs for c in cqm.constraints.values())]
    members: list[list[int]] = []
    for e, expr in enumerate(expressions):
        for v, bias in expr.iter_linear():
            if bias:
                linear[index[v]].append((e, float(bias)))
        for u, v, bias in expr.iter_quadratic():
            i, j = index[u], index[v]
            quadratic[i].append((e, j, float(bias)))
            if i != j:
                quadratic[j].append((e, i, float(bias)))
        if e:
            members.append(sorted(index[v] for v in expr.variables))
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for group in members:
        for i in group:
            neighbours[i].update(group)
    return Compiled(
        labels=labels,
        lower=[int(cqm.lower_bound(v)) for v in labels],
        upper=[int(cqm.upper_bound(v)) for v in labels],
        binary=[cqm.vartype(v) is dimod.BINARY for v in labels],
        senses=[c.sense.value for c in cqm.constraints.values()],
        rhs=[float(c.rhs) for c in cqm.constraints.values()],
        offsets=[float(expr.offset) for expr in expressions],
        linear=linear,
        quadratic=quadratic,
        neighbours=[sorted(s - {i}) for i, s in enumerate(neighbours)],
        members=members,
    )


def _violation(sense: str, lhs: float, rhs: float) -> float:
    if sense == "<=":
        return max(0.0, lhs - rhs)
    if sense == ">=":
        return max(0.0, rhs - lhs)
    return abs(lhs - rhs)


@dataclass
class State:
    """A sample and the value of every expression at it, updated move by move."""

    model: Compiled
    x: list[int]
    values: list[float] = field(default_factory=list)  # per expression

    def __post_init__(self) -> None:
        m = self.model
        values = list(m.offsets)
        for i, xi in enumerate(self.x):
            for e, bias in m.linear[i]:
                values[e] += bias * xi
            for e, j, bias in m.quadratic[i]:
                if j == i:
                    values[e] += bias * xi * xi
                elif j > i:
                    values[e] += bias * xi * self.x[j]
        self.values = values

    @property
    def objective(self) -> float:
        return self.values[0]

    def violation(self, k: int) -> float:
        v = _violation(self.model.senses[k], self.values[k + 1], self.model.rhs[k])
        return v if v > TOLERANCE else 0.0

    def total_violation(self) -> float:
        return sum(self.violation(k) for k in range(len(self.model.rhs)))

    def assign(self, i: int, value: int) -> int:
        """Give variable ``i`` a new value; returns the old one."""
        old = self.x[i]
        d = value - old
        if d:
            for e, bias in self.model.linear[i]:
                self.values[e] += bias * d
            for e, j, bias in self.model.quadratic[i]:
                self.values[e] += bias * (value * value - old * old) if j == i else bias * d * self.x[j]
            self.x[i] = value
        return old

    def touched(self, i: int) -> set[int]:
        """The constraints (by number) that variable ``i`` is in."""
        m = self.model
        return {e - 1 for e, _ in m.linear[i] if e} | {e - 1 for e, _, _ in m.quadratic[i] if e}

    def options(self, i: int) -> list[int]:
        """The values worth trying for variable ``i``: a flip, a step, or one that meets a violated
        constraint exactly through its linear bias."""
        m, xi = self.model, self.x[i]
        if m.binary[i]:
            return [1 - xi]
        out = {xi - 1, xi + 1}
        for e, bias in m.linear[i]:
            if e and bias and self.violation(e - 1):
                k = e - 1
                lhs, rhs = self.values[e], m.rhs[k]
                target = xi + (rhs - lhs) / bias
                out.update({int(target // 1), int(-(-target // 1))})
        return sorted(v for v in out if m.lower[i] <= v <= m.upper[i] and v != xi)


def _score(state: State, constraints: set[int]) -> float:
    return sum(state.violation(k) for k in constraints)


Move = tuple[tuple[int, int], ...]  # (variable, new value) pairs


def _try(state: State, move: Move, constraints: set[int]) -> tuple[float, float]:
    """(change of violation over ``constraints``, change of objective) if ``move`` were made."""
    before_v, before_f = _score(state, constraints), state.objective
    old = [(i, state.assign(i, v)) for i, v in move]
    after_v, after_f = _score(state, constraints), state.objective
    for i, v in reversed(old):
        state.assign(i, v)
    return after_v - before_v, after_f - before_f


def _best_move(
    state: State,
    variables: list[int],
    pairs: bool,
    accept: Callable[[float, float], bool],
    left: Callable[[], bool],
) -> Move | None:
    """The move that ``accept``s best (lowest violation change, then objective), or None."""
    best: tuple[float, float] | None = None
    chosen: Move | None = None
    for i in variables:
        if not left():
            break
        for a in state.options(i):
            moves: list[Move] = [((i, a),)]
            if pairs:
                old = state.assign(i, a)
                seconds = [(j, b) for j in state.model.neighbours[i] for b in state.options(j)]
                state.assign(i, old)
                moves = [((i, a), (j, b)) for j, b in seconds if j > i or j not in variables]
            for move in moves:
                constraints: set[int] = set().union(*(state.touched(j) for j, _ in move))
                dv, df = _try(state, move, constraints)
                if accept(dv, df) and (best is None or (dv, df) < best):
                    best, chosen = (dv, df), move
    return chosen


@dataclass(frozen=True, slots=True)
class Repaired:
    values: list[int]
    feasible: bool
    objective: float
    repair_moves: int
    polish_moves: int
    complete: bool  # False when the deadline stopped it


def repair(model: Compiled, x: list[int], until: float) -> Repaired:
    """Repair ``x`` (values in ``model.labels`` order) to feasibility, then polish it, by ``until``
    (epoch s); see the module docstring."""
    state = State(model, [min(max(v, lo), hi) for v, lo, hi in zip(x, model.lower, model.upper, strict=True)])

    def left() -> bool:
        return time.time() < until

    repairs = polishes = 0
    complete = True
    while (total := state.total_violation()) > 0:
        if not left():
            complete = False
            break
        violated = sorted({i for k in range(len(model.rhs)) if state.violation(k) for i in model.members[k]})
        move = _best_move(state, violated, False, lambda dv, df: dv < -TOLERANCE, left)
        if move is None:
            move = _best_move(state, violated, True, lambda dv, df: dv < -TOLERANCE, left)
        if move is None:
            break
        for i, v in move:
            state.assign(i, v)
        repairs += 1
        if state.total_violation() >= total:  # cannot happen with exact sums; guards float noise
            break
    feasible = state.total_violation() == 0
    everything = list(range(len(model.labels)))
    while feasible and complete:
        keeps = lambda dv, df: dv <= 0 and df < -TOLERANCE * max(1.0, abs(state.objective))  # noqa: E731
        move = _best_move(state, everything, False, keeps, left) or _best_move(
            state, everything, True, keeps, left
        )
        if not left():
            complete = False
        if move is None:
            break
        for i, v in move:
            state.assign(i, v)
        polishes += 1
    return Repaired(list(state.x), feasible, state.objective, repairs, polishes, complete)


def values_of(model: Compiled, sample: Mapping[Hashable, float]) -> list[int]:
    """A sample keyed by the model's labels → values in ``model.labels`` order (missing: lower bound)."""
    return [round(sample.get(v, lo)) for v, lo in zip(model.labels, model.lower, strict=True)]
