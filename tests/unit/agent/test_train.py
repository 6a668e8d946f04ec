"""``qxedge train``: the historian's Parquet through the agent's own feature window, a calibrated model
and its manifest."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from qxedge.agent.cli import main
from qxedge.agent.config import WindowConfig
from qxedge.agent.models.history import read_history, windows
from qxedge.agent.replay import EPOCH, replay
from qxedge.connectors.simulator import SimulatorConfig
from qxedge.testing import EDGE_YAML
from qxedge.testing.training import simulated_history, write_history

RAW = yaml.safe_load(EDGE_YAML.read_text())
SIM = SimulatorConfig.model_validate({**RAW["simulator"], "faults": []})
WINDOW = WindowConfig.model_validate(RAW["window"])
INPUTS: list[str] = RAW["models"][0]["inputs"]
MIDNIGHT = 1767225600.0  # 2026-01-01T00:00:00Z: the history spans two date partitions


def test_history_features_are_the_agents_features(tmp_path: Path) -> None:
    """The same readings, read back from Parquet, give the very rows the agent's window gives live."""
    write_history(tmp_path, "s1", simulated_history(SIM, 120, EPOCH))
    frame = read_history(tmp_path, "s1", EPOCH, EPOCH + 121)
    assert frame.height == 120 * 10 * 24  # 10 readings/s of 24 signals
    got = windows(frame, WINDOW, INPUTS)
    live = replay(SIM, WINDOW, INPUTS, 120)
    full = got.times >= EPOCH + WINDOW.length_s  # replay keeps full windows only
    assert got.assets[-len(live.assets) :] == live.assets
    # (µs timestamps in Parquet: slopes near zero differ in the 10th digit)
    np.testing.assert_allclose(got.features[full], live.features, rtol=1e-5, atol=1e-6)


def test_the_range_and_the_partitions_are_respected(tmp_path: Path) -> None:
    paths = write_history(tmp_path, "s1", simulated_history(SIM, 60, MIDNIGHT - 30))
    assert [p.parent.name for p in paths] == ["date=2025-12-31", "date=2026-01-01"]
    frame = read_history(tmp_path, "s1", MIDNIGHT - 10, MIDNIGHT + 10)
    ts = frame.get_column("ts").to_numpy()
    assert ts.min() >= MIDNIGHT - 10 and ts.max() < MIDNIGHT + 10 and np.all(np.diff(ts) >= 0)
    assert len(ts) == 20 * 10 * 24


def test_train_writes_a_calibrated_model_and_its_manifest(tmp_path: Path) -> None:
    history, out = tmp_path / "history", tmp_path / "out"
    write_history(history, "gumi", simulated_history(SIM, 360, MIDNIGHT - 180))
    since, until = "2025-12-31T23:57:00+00:00", "2026-01-01T00:03:00+00:00"
    argv = ["train", "--site", "gumi", "--since", since, "--until", until, "--history", str(history)]
    assert main([*argv, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    data = (out / "model.onnx").read_bytes()
    assert manifest["model"] == {
        "file": "model.onnx",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert manifest["inputs"] == INPUTS and manifest["n_inputs"] == 8 and manifest["name"] == "anomaly"
    assert manifest["window"]["length_s"] == WINDOW.length_s and manifest["window"]["stats"] == WINDOW.stats
    training = manifest["training"]
    assert training["site"] == "gumi" and training["until"] - training["since"] == 360
    assert training["readings"] == (360 * 10 - 1) * 24  # (the reading at --until is not in the range)
    assert training["assets"] == ["line1/fan1", "line1/pump1", "line1/pump2", "line1/pump3"]
    assert training["train_windows"] + training["calibration_windows"] == training["windows"]
    assert manifest["calibration"]["windows"] == training["calibration_windows"] > 0
    # the score is calibrated on the held-back windows: at most 0.5 % of them above 1
    assert manifest["metrics"]["calibration_above_1"] <= 0.01
    assert "calibration_above_rule_derate-on-anomaly" in manifest["metrics"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[-1] == 8 and session.get_outputs()[0].name == "score"


def test_train_says_how_to_install_the_tools_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "skl2onnx" else real(name, *a)
    )
    argv = ["train", "--site", "s", "--since", "1d", "--history", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert "pip install 'qxedge[train]'" in capsys.readouterr().err


def test_train_refuses_too_little_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, "s", simulated_history(SIM, 20, EPOCH))
    argv = ["train", "--site", "s", "--since", str(EPOCH), "--until", str(EPOCH + 20)]
    assert main([*argv, "--history", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "too little history" in capsys.readouterr().err
    assert main([*argv, "--history", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "no folder site=s" in capsys.readouterr().err
