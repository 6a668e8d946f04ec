"""The outbox's config model (pydantic only: no MQTT client, no SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from qxedge.core.config import resolve_path
from qxedge.core.state import state_dir


class OutboxConfig(BaseModel):
    """The disk-backed outbox in front of the uplink (see :mod:`qxedge.connectors.outbox`)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="default: $XDG_STATE_HOME/qxedge/outbox-<site>.sqlite")
    max_messages: int = Field(100_000, ge=10, description="records kept on disk at most")
    overflow: Literal["drop_oldest", "refuse_new"] = Field(
        "drop_oldest", description="when full: delete the oldest records, or refuse new ones (counted)"
    )
    inflight: int = Field(100, ge=1, le=10_000, description="records published and not yet acknowledged")
    flush_ms: int = Field(50, ge=1, le=10_000, description="new records are committed this often")
    max_pending: int = Field(
        10_000, ge=1, description="records held in memory while the disk refuses writes; then refused"
    )
    drain_timeout_s: float = Field(5.0, ge=0, le=600, description="graceful stop: time to send the rest")
    confirm: Literal["broker", "upstream"] = Field(
        "broker",
        description="a record is done at the broker's PUBACK, or when the consumer confirms it on "
        "qx/v1/{site}/confirm (nothing lost when the broker crashes)",
    )
    confirm_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="confirm: upstream: a record acknowledged by the broker and not confirmed is sent "
        "again this long after records acknowledged after it were confirmed",
    )

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    def resolved(self, site: str) -> Path:
        if self.path is not None:
            return self.path
        return state_dir() / f"outbox-{site}.sqlite"
