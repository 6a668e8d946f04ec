"""Planning: the agent's periodic optimisation, offloaded to the data center with a deadline.

The first plan is small on purpose, to carry the offload path end to end while the plant problems of
the next issue (load scheduling, staging, assignment) take shape: choose which ``running`` assets stay
in service, avoiding those the anomaly model worries about. As a QUBO over x_a (1 = keep running):

    minimise  sum_a log(1 + score_a) x_a  +  A (sum_a x_a - running)^2,   A = 1 + sum_a log(1 + score_a)

A is larger than the whole objective, so no infeasible choice ever beats a feasible one.
"""

from __future__ import annotations

import math

import dimod
from pydantic import BaseModel, ConfigDict, Field


class PlanningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every_s: float = Field(5.0, ge=0.1, description="one plan per period")
    model: str = Field(description="the model whose scores rank the assets")
    running: int = Field(ge=1, description="assets that must stay in service")


def running_set_bqm(scores: dict[str, float], running: int) -> dimod.BinaryQuadraticModel:
    costs = {asset: math.log1p(max(score, 0.0)) for asset, score in scores.items()}
    bqm = dimod.BinaryQuadraticModel(costs, {}, 0.0, dimod.BINARY)
    bqm.add_linear_equality_constraint(
        [(asset, 1.0) for asset in costs],
        lagrange_multiplier=1.0 + sum(costs.values()),
        constant=-float(running),
    )
    return bqm


def in_service(sample: dict[str, int]) -> list[str]:
    return sorted(asset for asset, x in sample.items() if x == 1)
