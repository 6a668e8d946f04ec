"""Reference plant problems as binary quadratic models (work in progress toward the plant-problems issue).

Each module holds a pydantic input model, a BQM builder, a decoder back to domain terms, a feasibility
check, a greedy repair for infeasible samples, the plan's cost, a brute-force reference for small
instances, and the mapping of a plan to setpoints.

**Penalty rule** (the same everywhere, from the data, never tuned per instance): every constraint is
written with integer coefficients, so a violated constraint adds at least ``A`` to the energy, with

    A = 1 + sum of |objective coefficients|

which exceeds the whole range of the objective. So any feasible assignment has a lower energy than
any infeasible one, and every optimum of the BQM is feasible whenever the instance is. Quantities that
enter constraints (kW) are integers in the input models for that reason. A large ``A`` flattens the
landscape for heuristic solvers; the greedy repair makes up for what they leave infeasible.
"""

from __future__ import annotations

from qxedge.hybrid.problems import assignment, scheduling, staging
from qxedge.hybrid.problems._penalty import penalty_weight

__all__ = ["assignment", "penalty_weight", "scheduling", "staging"]
