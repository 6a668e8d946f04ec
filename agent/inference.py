"""Local inference with ONNX Runtime on the best execution provider the box has.

A model's config lists providers in order of preference (``auto`` = TensorRT, CUDA, QNN, VitisAI,
OpenVINO, CoreML, DirectML, CPU). The session is created with those of them that this onnxruntime
build offers (``get_available_providers()``), CPU always last; the provider that actually runs the
model (``session.get_providers()[0]``) is recorded and reported. Runtimes without an ONNX Runtime
provider can be added as another class with the same ``score`` method.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qxedge.agent._patterns import AssetFilter
from qxedge.agent.config import ModelConfig
from qxedge.core.errors import ModelError

log = logging.getLogger(__name__)


def choose_providers(preferred: list[str], available: list[str]) -> list[str]:
    """The preferred providers this build has, in order, ending with CPU."""
    chosen = [p for p in preferred if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class OnnxModel:
    """One ONNX Runtime session scoring a (rows, features) float32 matrix into one score per row."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.inputs = config.inputs
        self.sha256 = sha256_of(config.path)
        self.covers = AssetFilter(config.assets)  # whether the model scores an asset
        where = f"model {config.name!r} ({config.path})"
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = choose_providers(config.providers, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(config.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{where}: cannot load: {exc}") from exc
        self.provider = self._session.get_providers()[0]
        model_inputs = self._session.get_inputs()
        if len(model_inputs) != 1:
            raise ModelError(f"{where} must have one input tensor, has {len(model_inputs)}")
        self._input = model_inputs[0].name
        width = model_inputs[0].shape[-1] if model_inputs[0].shape else None
        if isinstance(width, int) and width != len(config.inputs):
            raise ModelError(f"{where} expects {width} features per row, config lists {len(config.inputs)}")
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = config.output or outputs[0]
        # passed to every run: without it each call makes its own (~10 % of a one-row call, 20 µs of
        # ~200 after the process idled 10 ms; bench/inference.py)
        self._run_options = ort.RunOptions()
        if self._output not in outputs:
            raise ModelError(f"{where} has no output {self._output!r} (it has {outputs})")
        log.info("model %s (sha256 %s…) runs on %s", self.name, self.sha256[:12], self.provider)

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """One float score per row."""
        if matrix.shape[0] == 0:
            return np.empty(0, np.float32)
        (out,) = self._session.run([self._output], {self._input: matrix}, self._run_options)
        return np.asarray(out, dtype=np.float32).reshape(matrix.shape[0], -1)[:, 0]
