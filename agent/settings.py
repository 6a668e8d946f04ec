"""Config models of the agent's heavier modules, kept apart so that loading a config imports neither
Polars (``telemetry``) nor dimod (``planning``). Those modules re-export them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TelemetryConfig(BaseModel):
    """Records upstream on ``qx/v1/{site}/telemetry`` through the outbox."""

    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(5.0, ge=0.01, le=3600, description="one record per asset this often")
    assets: list[str] = Field(["*"], min_length=1, description="glob patterns of the assets reported")
    readings: bool = Field(True, description="include the newest reading of each signal")
    features: bool = Field(True, description="include the window statistics (`signal.stat`)")


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset: str = Field(pattern=r"^[A-Za-z0-9_./-]+$", description="the on/off load, e.g. line1/comp1")
    runs: int = Field(ge=1, description="slots it must run in")
    release: int = Field(0, ge=0, description="first slot it may run in")
    due: int | None = Field(
        None, ge=1, description="it must be done before this slot (default: the day's end)"
    )
    power_kw: float = Field(gt=0, description="nameplate power; the measured running power replaces it")


class PlanningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["optimised", "baseline"] = Field(
        "optimised", description="baseline: every order runs as soon as it is released"
    )
    slots: int = Field(24, ge=1, le=1000)
    slot_s: float = Field(3600.0, ge=0.2, description="wall-clock length of a slot")
    slot_hours: float = Field(1.0, gt=0, description="the hours one slot bills")
    cap_kw: float | list[float] = Field(
        description="contracted peak (average kW over a slot), or one per slot"
    )
    price: list[float] | None = Field(None, description="price per kWh per slot; default: Korean ToU")
    base_assets: list[str] = Field(["*"], description="assets whose power is the base load (orders excluded)")
    power_signal: str = "power"
    margin_kw: float = Field(5.0, ge=0, description="added to the base-load forecast")
    power_step_kw: int = Field(
        5, ge=1, description="load powers are rounded to this step (coarser: fewer slack bits in the cap)"
    )
    model: str | None = Field(None, description="the anomaly model whose scores flag loads")
    flag_above: float = Field(4.0, description="a load scored above this is held for maintenance")
    max_variables: int | None = Field(None, ge=8, description="decompose larger instances into slot blocks")
    orders: list[Order] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PlanningConfig:
        if isinstance(self.cap_kw, list) and len(self.cap_kw) != self.slots:
            raise ValueError(f"cap_kw: one value per slot ({self.slots}), got {len(self.cap_kw)}")
        if self.price is not None and len(self.price) != self.slots:
            raise ValueError(f"price: one value per slot ({self.slots}), got {len(self.price)}")
        if len({o.asset for o in self.orders}) != len(self.orders):
            raise ValueError("orders: one order per asset")
        for i, o in enumerate(self.orders):
            due = self.slots if o.due is None else o.due
            if due > self.slots or o.release >= due or o.runs > due - o.release:
                raise ValueError(
                    f"orders[{i}]: {o.runs} runs do not fit between release {o.release} and due {due} "
                    f"in a day of {self.slots} slots"
                )
        return self

    def caps(self) -> list[float]:
        return list(self.cap_kw) if isinstance(self.cap_kw, list) else [self.cap_kw] * self.slots

    def prices(self) -> list[float]:
        if self.price is not None:
            return self.price
        from qxedge.hybrid.problems.scheduling import korean_tou  # dimod: only where a day is planned

        return korean_tou(self.slots)

    def due(self, o: Order) -> int:
        return self.slots if o.due is None else o.due
