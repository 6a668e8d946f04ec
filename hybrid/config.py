"""Config models of the hybrid layer that the agent's config embeds, without the solvers behind them
(and the ``milp`` backend's, which the agent's local fallback for ``cqm`` jobs uses).

Pydantic only: loading an agent config imports neither dimod nor PennyLane.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

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
    resend_after: float = Field(
        0.4,
        ge=0,
        lt=1,
        description="the part of the wait (deadline_ms less fallback_ms) after which a job with no valid "
        "result yet is published again, the same job (same job_id and deadline): a worker that died "
        "holding it is taken over through the job ledger; 0: never",
    )
    max_resends: int = Field(
        1,
        ge=0,
        le=5,
        description="re-sends of one job at most (at resend_after, then at 2 x resend_after of the wait...); "
        "0: never",
    )
    job_qos: Literal[0, 1] = Field(
        1,
        description="the MQTT QoS jobs are published at; 0 on a NATS cluster, whose MQTT closes a QoS 1 "
        "publisher's connection while its own message stream has no leader (seconds, after a node is "
        "lost): a job lost at QoS 0 is re-sent (resend_after), else falls back by its deadline",
    )
    alarm_after: int = Field(
        3,
        ge=1,
        description="this many offloads in a row falling back locally raise the alarm 'the data center is "
        "not answering' (alarms topic, log, metric qxedge_datacenter_silent)",
    )

    @model_validator(mode="after")
    def _resends_fit_the_wait(self) -> OffloadConfig:
        if self.resend_after > 0 and self.resend_after * self.max_resends >= 1:
            raise ValueError(
                f"resend_after {self.resend_after:g} x max_resends {self.max_resends} reaches the end of "
                "the wait: the last re-sends could never happen (lower either)"
            )
        return self

    def resend_times(self, wait_s: float) -> list[float]:
        """When, in seconds after the first send, a job waited for ``wait_s`` is sent again."""
        if self.resend_after <= 0:
            return []
        return [i * self.resend_after * wait_s for i in range(1, self.max_resends + 1)]


class MilpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_variables: int = Field(100_000, ge=1, description="variables of the linearised model (with products)")
    threads: int = Field(1, ge=1, le=64, description="HiGHS threads (one per solver process)")
    mip_rel_gap: float = Field(0.0, ge=0, description="stop at this relative gap; 0: prove the optimum")
    mip_abs_gap: float = Field(1e-6, ge=0, description="and at this absolute gap")
