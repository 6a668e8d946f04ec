"""Config models of the hybrid layer that the agent's config embeds, without the solvers behind them.

Pydantic only: loading an agent config imports neither dimod nor PennyLane.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from qxedge.hybrid.backends import known_solver

SolverName = Annotated[str, AfterValidator(known_solver)]  # auto or a backend of hybrid.backends


class OffloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline_ms: int = Field(
        1500, ge=50, le=600_000, description="the decision is due this long after submit"
    )
    solver: SolverName = "auto"
    fallback: Literal["tabu", "sa"] = "tabu"
    fallback_ms: int = Field(250, ge=10, description="kept at the end of the deadline for the local fallback")
    alarm_after: int = Field(
        3,
        ge=1,
        description="this many offloads in a row falling back locally raise the alarm 'the data center is "
        "not answering' (alarms topic, log, metric qxedge_datacenter_silent)",
    )
