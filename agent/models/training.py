"""``qxedge train``: the anomaly model from the historian's Parquet, calibrated, exported, described.

    pip install 'qxedge[train]'     # scikit-learn, skl2onnx, onnx: the data center only, never the edge

1. the site's readings in ``[since, until)`` go through the agent's feature window (:mod:`.history`);
2. the windows are split by time: the latest ``holdout`` share is held back for calibration;
3. an autoencoder (scikit-learn MLPRegressor, tanh) learns to reproduce the standardised features of
   the rest; the exported graph outputs ``score = mean((standardise(x) - reconstruction)^2) / error``
   where ``error`` is the ``quantile`` (0.995) of that reconstruction error on the *held-back* windows:
   1.0 is the edge of normal operation, as the rule thresholds expect;
4. ``model.onnx`` and ``manifest.json`` (inputs, window, training range and counts, calibration,
   metrics, sha256) are written to the output folder.

configs/models/build_anomaly_model.py builds the shipped model with the same :func:`export`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qxedge.agent.config import EdgeConfig, ModelConfig, RuleConfig, WindowConfig
from qxedge.agent.models.history import HistoryWindows, read_history, windows
from qxedge.agent.models.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    CalibrationDoc,
    FileDoc,
    Manifest,
    TrainingDoc,
    WindowDoc,
)
from qxedge.core.errors import ConfigError, ModelError, Problem

INSTALL = "pip install 'qxedge[train]' (scikit-learn, skl2onnx, onnx; ./run model installs them too)"
MIN_WINDOWS = 50  # fewer feature rows than this, for training or calibration: refused


class TrainingToolsMissing(ModelError):
    """scikit-learn, skl2onnx or onnx is not installed (the ``train`` extra)."""


def training_tools() -> None:
    """TrainingToolsMissing, saying how to install them, when the ``train`` extra is absent."""
    import importlib.util

    absent = [m for m in ("sklearn", "skl2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if absent:
        raise TrainingToolsMissing(f"training needs {', '.join(absent)}, not installed here: {INSTALL}")


def export(scaler: Any, mlp: Any, error: float, n: int, meta: dict[str, str]) -> Any:
    """The ONNX graph ``features -> score``: standardise, reconstruct (the MLP), mean squared error,
    divided by ``error`` (the calibration). Returns an ``onnx.ModelProto``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    core = convert_sklearn(mlp, initial_types=[("xs", FloatTensorType([None, n]))], target_opset=17)
    g = core.graph
    recon = g.output[0].name
    consts = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "qx_mean"),
        numpy_helper.from_array(scaler.scale_.astype(np.float32), "qx_scale"),
        numpy_helper.from_array(np.array([error], np.float32), "qx_q995"),
        numpy_helper.from_array(np.array([-1, n], np.int64), "qx_shape"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "qx_mean"], ["qx_centered"]),
        helper.make_node("Div", ["qx_centered", "qx_scale"], ["xs"]),
        *g.node,
        # skl2onnx flattens a multi-output regressor's output: give it back its rows.
        helper.make_node("Reshape", [recon, "qx_shape"], ["qx_recon"]),
        helper.make_node("Sub", ["xs", "qx_recon"], ["qx_err"]),
        helper.make_node("Mul", ["qx_err", "qx_err"], ["qx_sq"]),
        helper.make_node("ReduceMean", ["qx_sq"], ["qx_mse"], axes=[1], keepdims=1),
        helper.make_node("Div", ["qx_mse", "qx_q995"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qxedge_anomaly_autoencoder",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [*g.initializer, *consts],
    )
    model = helper.make_model(graph, opset_imports=core.opset_import, producer_name="qxedge")
    model.ir_version = core.ir_version
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def fit_autoencoder(x: np.ndarray, hidden: Sequence[int], seed: int) -> tuple[Any, Any]:
    """(scaler, mlp): the autoencoder of the standardised rows of ``x``."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    mlp = MLPRegressor(
        hidden_layer_sizes=tuple(hidden),
        activation="tanh",
        max_iter=400,
        early_stopping=len(x) >= 100,
        random_state=seed,
        tol=1e-5,
    )
    mlp.fit(xs, xs)
    return scaler, mlp


def reconstruction_error(scaler: Any, mlp: Any, x: np.ndarray) -> np.ndarray:
    xs = scaler.transform(x)
    return np.asarray(((xs - mlp.predict(xs)) ** 2).mean(axis=1))


@dataclass(frozen=True, slots=True)
class TrainRequest:
    site: str
    since: float
    until: float
    history: Path
    out: Path
    model: ModelConfig  # the model it replaces: name, inputs, assets
    window: WindowConfig
    rules: Sequence[RuleConfig] = ()  # the rules on that model: their thresholds go into the metrics
    holdout: float = 0.2
    quantile: float = 0.995
    hidden: Sequence[int] = (16, 4, 16)
    seed: int = 1000


def request_for(
    cfg: EdgeConfig,
    model: str | None,
    *,
    site: str,
    since: float,
    until: float,
    history: Path,
    out: Path,
    holdout: float = 0.2,
    hidden: Sequence[int] = (16, 4, 16),
    seed: int = 1000,
) -> TrainRequest:
    """The request ``qxedge train`` (and ``qxedge demo --loop``) makes of an agent config: the model
    named ``model`` (None: the config's first), the agent's window and the thresholds of its rules."""
    found = next((m for m in cfg.models if model is None or m.name == model), None)
    if found is None:
        what = "no model in the config" if model is None else f"no model named {model!r}"
        raise ConfigError([Problem("models", f"{what} to train")])
    return TrainRequest(
        site=site,
        since=since,
        until=until,
        history=history,
        out=out,
        model=found,
        window=cfg.window,
        rules=[r for r in cfg.rules if r.model == found.name],
        holdout=holdout,
        hidden=hidden,
        seed=seed,
    )


def _split(data: HistoryWindows, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and the held-back rows of the latest evaluations (by time, never interleaved)."""
    cut_time = np.quantile(data.times, 1 - holdout, method="lower")
    late = data.times > cut_time
    return data.features[~late], data.features[late]


def train(req: TrainRequest, progress: Any = print) -> Manifest:
    """Train, calibrate and write ``model.onnx`` and ``manifest.json`` into ``req.out``."""
    training_tools()
    if not req.since < req.until:
        raise ModelError(f"--since must be before --until ({req.since} >= {req.until})")
    frame = read_history(req.history, req.site, req.since, req.until)
    progress(f"history: {frame.height} readings of site {req.site} in range")
    data = windows(frame, req.window, req.model.inputs, req.model.assets)
    progress(f"feature windows: {len(data.features)} rows of {len(req.model.inputs)} features")
    train_x, calib_x = _split(data, req.holdout) if len(data.features) else (data.features, data.features)
    if len(train_x) < MIN_WINDOWS or len(calib_x) < MIN_WINDOWS:
        raise ModelError(
            f"too little history: {len(train_x)} training and {len(calib_x)} calibration windows, "
            f"{MIN_WINDOWS} of each at least (a longer --since/--until range, or assets matching "
            f"{req.model.assets} with every input {req.model.inputs})"
        )
    scaler, mlp = fit_autoencoder(train_x, req.hidden, req.seed)
    train_err = reconstruction_error(scaler, mlp, train_x)
    calib_err = reconstruction_error(scaler, mlp, calib_x)
    error = float(np.quantile(calib_err, req.quantile))
    if not error > 0:
        raise ModelError("the held-back windows reconstruct perfectly: nothing to calibrate a score on")
    calib_score = calib_err / error
    metrics: dict[str, float] = {
        "train_error_p50": float(np.median(train_err)),
        f"train_error_q{req.quantile:g}": float(np.quantile(train_err, req.quantile)),
        "calibration_score_p50": float(np.median(calib_score)),
        "calibration_score_max": float(calib_score.max()),
        "calibration_above_1": float((calib_score > 1).mean()),
    }
    for rule in req.rules:  # the false-alarm share at each rule's threshold, on held-back normal data
        metrics[f"calibration_above_rule_{rule.name}"] = float((calib_score > rule.above).mean())
    model = export(
        scaler,
        mlp,
        error,
        len(req.model.inputs),
        {
            "qxedge.inputs": ",".join(req.model.inputs),
            "qxedge.score": f"reconstruction MSE / its q{req.quantile:g} on held-back normal windows",
            "qxedge.training": f"site {req.site}, {req.since:.0f}..{req.until:.0f} (seed {req.seed})",
        },
    )
    data_bytes = model.SerializeToString()
    req.out.mkdir(parents=True, exist_ok=True)
    (req.out / MODEL_FILE).write_bytes(data_bytes)
    w = req.window
    manifest = Manifest(
        name=req.model.name,
        created_at=time.time(),
        inputs=list(req.model.inputs),
        n_inputs=len(req.model.inputs),
        window=WindowDoc(
            length_s=w.length_s,
            every_s=w.every_s,
            stats=list(w.stats),
            min_samples=w.min_samples,
            min_coverage=w.min_coverage,
        ),
        training=TrainingDoc(
            site=req.site,
            since=req.since,
            until=req.until,
            history=str(req.history),
            readings=data.readings,
            windows=len(data.features),
            train_windows=len(train_x),
            calibration_windows=len(calib_x),
            assets=sorted(set(data.assets)),
            seed=req.seed,
            hidden=list(req.hidden),
        ),
        calibration=CalibrationDoc(quantile=req.quantile, error=error, windows=len(calib_x)),
        metrics=metrics,
        model=FileDoc(file=MODEL_FILE, bytes=len(data_bytes), sha256=hashlib.sha256(data_bytes).hexdigest()),
    )
    (req.out / MANIFEST_FILE).write_text(manifest.text())
    progress(
        f"wrote {req.out / MODEL_FILE} ({len(data_bytes)} bytes) and {MANIFEST_FILE}: "
        f"{len(train_x)} training windows, calibrated on {len(calib_x)} held-back "
        f"(score > 1 on {metrics['calibration_above_1']:.2%} of them)"
    )
    return manifest


def read_model_dir(folder: Path) -> tuple[Manifest, bytes]:
    """The manifest and model file ``qxedge train`` wrote, checked against each other."""
    try:
        text = (folder / MANIFEST_FILE).read_text()
    except OSError as exc:
        raise ModelError(
            f"{folder}: no {MANIFEST_FILE} ({exc.strerror or exc}): `qxedge train` writes it"
        ) from exc
    manifest = Manifest.parse(text, str(folder / MANIFEST_FILE))
    try:
        data = (folder / manifest.model.file).read_bytes()
    except OSError as exc:
        raise ModelError(f"{folder}: the model file {manifest.model.file}: {exc.strerror or exc}") from exc
    if hashlib.sha256(data).hexdigest() != manifest.model.sha256 or len(data) != manifest.model.bytes:
        raise ModelError(f"{folder}: {manifest.model.file} is not the file the manifest describes (sha256)")
    return manifest, data
