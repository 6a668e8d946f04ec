"""The model manifest (what ``qxedge train`` writes beside the ONNX file) and its signed envelope.

A manifest says what a model is and how it was made: its inputs (``signal.stat`` features, in model
order, and their count), the feature window it was trained on (which must be the agent's), the training
data (site, time range, readings and windows), the threshold calibration, metrics, and the model file's
size and sha256. ``qxedge models publish`` adds how the file is cut into chunks (each chunk's sha256)
and signs the manifest's exact bytes with Ed25519; the signed envelope is the retained payload of
``qx/v1/{site}/models/{name}``::

    {"v": 1, "manifest": "<the manifest JSON text>", "signature": "<base64>", "key_id": "<16 hex>"}

The manifest travels as text so that the bytes signed are the bytes verified (no canonical JSON).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qxedge.core.errors import ModelError

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
_NAME = r"^[A-Za-z0-9_.-]+$"
_SHA256 = r"^[0-9a-f]{64}$"


class ModelRefused(ModelError):
    """A deployed model is refused; the message is the reason (audited, alarmed)."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowDoc(_Doc):
    """The feature window the model's features were computed with (the agent's WindowConfig)."""

    length_s: float = Field(gt=0)
    every_s: float = Field(gt=0)
    stats: list[str] = Field(min_length=1)
    min_samples: int = Field(ge=1)
    min_coverage: float = Field(ge=0, le=1)


class TrainingDoc(_Doc):
    site: str
    since: float = Field(description="epoch seconds, included")
    until: float = Field(description="epoch seconds, excluded")
    history: str = Field(description="the historian root the readings came from")
    readings: int = Field(ge=0)
    windows: int = Field(ge=0, description="feature rows, train + calibration")
    train_windows: int = Field(ge=0)
    calibration_windows: int = Field(ge=0)
    assets: list[str]
    seed: int
    hidden: list[int]


class CalibrationDoc(_Doc):
    method: Literal["quantile"] = "quantile"
    quantile: float = Field(gt=0, lt=1)
    error: float = Field(gt=0, description="reconstruction error at that quantile: the score's unit")
    windows: int = Field(ge=1, description="held-back windows it was computed on (the latest by time)")


class FileDoc(_Doc):
    file: str
    bytes: int = Field(ge=1)
    sha256: str = Field(pattern=_SHA256)


class ChunksDoc(_Doc):
    size: int = Field(ge=1, description="bytes per chunk (the last may be shorter)")
    count: int = Field(ge=1)
    sha256: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _counted(self) -> ChunksDoc:
        if len(self.sha256) != self.count:
            raise ValueError(f"chunks.count is {self.count} but {len(self.sha256)} chunk hashes are listed")
        return self


class Manifest(_Doc):
    v: Literal[1] = 1
    name: str = Field(pattern=_NAME)
    kind: Literal["anomaly"] = "anomaly"
    created_at: float
    inputs: list[str] = Field(min_length=1, description="features in model order, each `signal.stat`")
    n_inputs: int = Field(ge=1)
    input: str = "features"
    output: str = "score"
    window: WindowDoc
    training: TrainingDoc | None = None
    calibration: CalibrationDoc
    metrics: dict[str, float] = Field(default_factory=dict)
    model: FileDoc
    chunks: ChunksDoc | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.n_inputs != len(self.inputs):
            raise ValueError(f"n_inputs is {self.n_inputs} but {len(self.inputs)} inputs are listed")
        if self.chunks is not None and self.chunks.size * self.chunks.count < self.model.bytes:
            raise ValueError("the chunks do not cover the model file")
        return self

    def text(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> Manifest:
        """The manifest in ``text``; ModelRefused naming every problem."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()
            )
            raise ModelRefused(f"{where}: invalid manifest: {problems}") from None


class SignedManifest(_Doc):
    """The retained payload of ``qx/v1/{site}/models/{name}``."""

    v: Literal[1] = 1
    manifest: str = Field(description="the manifest's JSON text, exactly as signed")
    signature: str = Field(description="base64 Ed25519 signature of the manifest text's UTF-8 bytes")
    key_id: str = Field(description="the first 16 hex digits of the public key's sha256")

    def payload(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, payload: bytes, where: str) -> SignedManifest:
        try:
            json.loads(payload)
            return cls.model_validate_json(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if isinstance(exc, ValidationError) else str(exc)
            if isinstance(exc, ValidationError):
                reason = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
                )
            raise ModelRefused(f"{where}: not a signed manifest: {reason}") from None
