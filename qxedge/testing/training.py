"""The historian's Parquet layout written from the simulated plant, and small ONNX models: for the
tests and benches of ``qxedge train`` and model deployment."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, helper, numpy_helper

from qxedge.agent.config import WindowConfig
from qxedge.agent.models.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    CalibrationDoc,
    FileDoc,
    Manifest,
    WindowDoc,
)
from qxedge.agent.replay import EPOCH
from qxedge.connectors.readings import ReadingBatch
from qxedge.connectors.simulator import PlantModel, SimulatorConfig


def simulated_history(sim: SimulatorConfig, seconds: float, start: float = EPOCH) -> pl.DataFrame:
    """The plant's readings for ``seconds`` from ``start`` (epoch s), stepped as ``replay`` steps it:
    asset, signal, ts (UTC timestamp, µs), value, seq (per asset and signal, from 0)."""
    plant = PlantModel(sim)
    plant.warm_up()
    batch = ReadingBatch()
    for k in range(round(seconds / sim.period_s)):
        t = (k + 1) * sim.period_s
        plant.step(t, batch, ts=start + t)
    frame = pl.DataFrame(
        {"asset": batch.assets, "signal": batch.signals, "ts": batch.ts, "value": batch.values},
        schema={"asset": pl.String, "signal": pl.String, "ts": pl.Float64, "value": pl.Float64},
    )
    return frame.with_columns(
        (pl.col("ts") * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us", "UTC")),
        pl.int_range(pl.len()).over("asset", "signal").cast(pl.Int64).alias("seq"),
    )


def write_history(root: Path, site: str, frame: pl.DataFrame) -> list[Path]:
    """``frame`` as the historian writes it: ``{root}/site={site}/date={YYYY-MM-DD}/part-0.parquet``."""
    out = []
    dated = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d").alias("date"))
    for (day,), part in dated.group_by("date", maintain_order=True):
        folder = root / f"site={site}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "part-0.parquet"
        part.drop("date").write_parquet(path, compression="zstd")
        out.append(path)
    return out


def linear_model(n: int, weight: float = 1.0, bias: float = 0.0) -> bytes:
    """An ONNX model ``features (rows, n) -> score (rows, 1) = weight * mean(features) + bias``."""
    nodes = [
        helper.make_node("ReduceMean", ["features"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["mean", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qxedge_test_linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [
            numpy_helper.from_array(np.array([weight], np.float32), "w"),
            numpy_helper.from_array(np.array([bias], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def relabelled(path: Path, label: str) -> bytes:
    """The ONNX model at ``path`` with another doc string: the same scores, another sha256."""
    model = onnx.load_model_from_string(path.read_bytes())
    model.doc_string = label
    return bytes(model.SerializeToString())


def model_dir(folder: Path, name: str, data: bytes, inputs: list[str], window: WindowConfig) -> Path:
    """``folder`` holding ``data`` and its manifest, as ``qxedge train`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(data)
    manifest = Manifest(
        name=name,
        created_at=time.time(),
        inputs=inputs,
        n_inputs=len(inputs),
        window=WindowDoc(
            length_s=window.length_s,
            every_s=window.every_s,
            stats=list(window.stats),
            min_samples=window.min_samples,
            min_coverage=window.min_coverage,
        ),
        calibration=CalibrationDoc(quantile=0.995, error=1.0, windows=1),
        model=FileDoc(file=MODEL_FILE, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()),
    )
    (folder / MANIFEST_FILE).write_text(manifest.text())
    return folder
