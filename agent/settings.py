"""Config models of the agent's heavier modules, kept apart so that loading a config imports neither
Polars (``telemetry``) nor dimod (``planning``). Those modules re-export them. The planning section's
clock, tariff and orders are pure modules of their own (``clock``, ``tariff``, ``orders``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from qxedge.agent.clock import SlotGrid
from qxedge.agent.orders import Order as Order
from qxedge.agent.tariff import TariffConfig
from qxedge.core.config import resolve_path
from qxedge.core.state import state_dir


class TelemetryConfig(BaseModel):
    """Records upstream on ``qx/v1/{site}/telemetry`` through the outbox."""

    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(5.0, ge=0.01, le=3600, description="one record per asset this often")
    assets: list[str] = Field(["*"], min_length=1, description="glob patterns of the assets reported")
    readings: bool = Field(True, description="include the newest reading of each signal")
    features: bool = Field(True, description="include the window statistics (`signal.stat`)")


class DemoClockConfig(BaseModel):
    """The demo's compressed day: honoured by ``qxedge demo`` only (a plant plans on the wall clock)."""

    model_config = ConfigDict(extra="forbid")
    speed: float = Field(1440.0, gt=1, le=1_000_000, description="plant seconds per real second")
    start: datetime = Field(description="the local time at which the demo's day starts")
    slots: int = Field(24, ge=1, le=1000, description="the slots the demo runs and measures")


class ForecastConfig(BaseModel):
    """The base-load forecast: what the rest of the plant will draw in each slot of the horizon."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["blend", "persistence"] = Field(
        "blend", description="blend: per slot of day, smoothed over days, plus today's level; or persistence"
    )
    alpha: float = Field(0.5, gt=0, le=1, description="weight of the newest day in the per-slot profile")
    damping: float = Field(
        0.9, ge=0, le=1, description="per slot ahead, how much of today's deviation from the profile lasts"
    )
    base_kw: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="the base load assumed until readings arrive"
    )
    wait_s: float = Field(
        30.0, ge=0, le=3600, description="without base_kw, the first plan waits this long for readings"
    )
    samples_per_slot: int = Field(12, ge=1, le=3600, description="base-load samples averaged per slot")


class PlanningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["optimised", "baseline"] = Field(
        "optimised", description="baseline: every order runs as soon as it is released"
    )
    timezone: str = Field("UTC", description="the site's IANA time zone, e.g. Asia/Seoul")
    slot_minutes: int = Field(60, ge=1, le=1440, description="slot length; it divides a day (15, 30, 60 ...)")
    horizon_slots: int = Field(24, ge=1, le=2000, description="the rolling horizon planned every slot")
    cap_kw: float = Field(gt=0, description="contracted peak (average kW over a slot), whole plant")
    tariff: TariffConfig = Field(default_factory=TariffConfig, description="price by local time and day")
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    base_assets: list[str] = Field(["*"], description="assets whose power is the base load (orders excluded)")
    power_signal: str = "power"
    margin_kw: float = Field(5.0, ge=0, description="added to the base-load forecast")
    power_step_kw: int = Field(
        5, ge=1, description="load powers are rounded to this step (coarser: fewer slack bits in the cap)"
    )
    model: str | None = Field(None, description="the anomaly model whose scores flag loads")
    flag_above: float = Field(4.0, description="a load scored above this is held for maintenance")
    route: Literal["cqm", "bqm"] = Field(
        "cqm",
        description="cqm: each horizon as one constrained model (the data center's MILP proves its optimum; "
        "HiGHS locally when it does not answer); bqm: penalty QUBOs for QUBO-only backends",
    )
    max_variables: int | None = Field(
        None, ge=8, description="route bqm: decompose larger instances into slot blocks"
    )
    state_path: Path | None = Field(
        None, description="plan state (orders, runs done); default $XDG_STATE_HOME/qxedge/plan-<site>.json"
    )
    demo_clock: DemoClockConfig | None = Field(
        None, description="qxedge demo only: the compressed day (needs a simulator: section)"
    )
    orders: list[Order] = Field(
        default_factory=list, description="orders from the config (more arrive on the orders topic)"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        from qxedge.agent.clock import zone

        zone(name)
        return name

    @field_validator("state_path")
    @classmethod
    def _state_path(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _check(self) -> PlanningConfig:
        from qxedge.agent.orders import check_order, overlap

        if 1440 % self.slot_minutes:
            raise ValueError(f"slot_minutes: {self.slot_minutes} does not divide a day (1440 minutes)")
        odd = sorted(m for m in self.tariff.period_starts() if m % self.slot_minutes)
        if odd:
            raise ValueError(
                f"tariff: a period starts at {odd[0] // 60:02d}:{odd[0] % 60:02d}, not on a slot boundary "
                f"({self.slot_minutes}-minute slots)"
            )
        if len({o.id for o in self.orders}) != len(self.orders):
            raise ValueError("orders: order ids must be unique")
        grid = self.grid()
        for i, o in enumerate(self.orders):
            problem = check_order(o, grid) or overlap(o, self.orders[:i], grid.tz)
            if problem is not None:
                raise ValueError(f"orders[{i}] ({o.id}): {problem}")
        return self

    @property
    def slot_s(self) -> int:
        return self.slot_minutes * 60

    @property
    def slot_hours(self) -> float:
        return self.slot_minutes / 60

    def grid(self) -> SlotGrid:
        return SlotGrid(self.timezone, self.slot_s)

    def resolved_state(self, site: str) -> Path:
        return self.state_path if self.state_path is not None else state_dir() / f"plan-{site}.json"
