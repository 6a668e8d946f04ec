"""Config models of the hybrid layer that the agent's config embeds, without the solvers behind them
(and the ``milp`` backend's, which the agent's local fallback for ``cqm`` jobs uses).

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


class MilpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_variables: int = Field(100_000, ge=1, description="variables of the linearised model (with products)")
    threads: int = Field(1, ge=1, le=64, description="HiGHS threads (one per solver process)")
    mip_rel_gap: float = Field(0.0, ge=0, description="stop at this relative gap; 0: prove the optimum")
    mip_abs_gap: float = Field(1e-6, ge=0, description="and at this absolute gap")
