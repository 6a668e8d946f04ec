"""Config models of the hybrid layer that the agent's config embeds, without the solvers behind them.

Pydantic only: loading an agent config imports neither dimod nor PennyLane.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SolverName = Literal["auto", "exact", "sa", "tabu", "qaoa"]
SOLVERS: tuple[str, ...] = SolverName.__args__  # type: ignore[attr-defined]


class OffloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline_ms: int = Field(
        1500, ge=50, le=600_000, description="the decision is due this long after submit"
    )
    solver: SolverName = "auto"
    fallback: Literal["tabu", "sa"] = "tabu"
    fallback_ms: int = Field(250, ge=10, description="kept at the end of the deadline for the local fallback")
