"""The agent's ``deploy:`` section: which key signs models, where they are kept, how a shadow is judged.

pydantic only: loading a config imports neither ``cryptography`` nor ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from qxedge.core.config import resolve_path
from qxedge.core.state import state_dir


class ShadowConfig(BaseModel):
    """How long a new model runs in shadow, and the bounds it must stay within to pass."""

    model_config = ConfigDict(extra="forbid")
    evaluations: int = Field(30, ge=1, description="evaluations in which the shadow scored, at least")
    seconds: float = Field(0.0, ge=0, description="and at least this long (0: no time bound)")
    min_agreement: float = Field(
        0.95, ge=0, le=1, description="share of scores on the same side of the rule threshold as the model's"
    )
    max_median_shift: float | None = Field(
        0.5, ge=0, description="|median score change| at most this fraction of the threshold (null: any)"
    )
    max_latency_ratio: float | None = Field(
        10.0, gt=0, description="the shadow's mean time per run at most this many times the model's"
    )


class DeployConfig(BaseModel):
    """Models deployed from the data center on ``qx/v1/{site}/models/{name}`` (a configured name)."""

    model_config = ConfigDict(extra="forbid")
    public_key: Path = Field(description="Ed25519 public key (PEM) the manifests must be signed with")
    store: Path | None = Field(None, description="where received models are kept; default: the state dir")
    promote: Literal["auto", "manual"] = Field(
        "auto", description="auto: promote a shadow that passes; manual: wait for an operator's approve"
    )
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    same_inputs: bool = Field(
        True, description="a deployed model takes exactly the configured model's features"
    )
    max_model_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="bigger models are refused")
    chunk_timeout_s: float = Field(60.0, gt=0, description="every chunk must arrive within this")

    @field_validator("public_key")
    @classmethod
    def _exists(cls, path: Path, info: ValidationInfo) -> Path:
        resolved = resolve_path(path, info)
        assert resolved is not None
        if not resolved.is_file():
            raise ValueError(f"file not found ({resolved})")
        return resolved.resolve()

    @field_validator("store")
    @classmethod
    def _store(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    def resolved_store(self, site: str) -> Path:
        return self.store if self.store is not None else state_dir() / f"models-{site}"
