"""The config of the history upstream (pydantic only: loading a config imports no Polars)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HistoryConfig(BaseModel):
    """Every accepted reading upstream on ``qx/v1/{site}/history`` in compressed columnar batches,
    through the disk outbox, kept there until the historian confirms it (see docs/history.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: no history upstream")
    stream: str = Field(
        "history", pattern=r"^[A-Za-z0-9_.-]{1,200}$", description="the outbox stream; seq counts its batches"
    )
    every_s: float = Field(5.0, ge=0.05, le=3600, description="a batch is cut this often ...")
    max_readings: int = Field(
        20_000, ge=1, le=1_000_000, description="... or once it holds this many readings"
    )
    include: list[str] = Field(["*"], min_length=1, description="glob patterns of the assets sent")
    exclude: list[str] = Field([], description="glob patterns of assets not sent (wins over include)")
