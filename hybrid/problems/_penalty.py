"""The penalty rule every problem module uses (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable


def penalty_weight(objective_coefficients: Iterable[float]) -> float:
    """``A = 1 + sum of |objective coefficients|``: a violated constraint costs more than the whole
    range of the objective."""
    return 1.0 + sum(abs(c) for c in objective_coefficients)
