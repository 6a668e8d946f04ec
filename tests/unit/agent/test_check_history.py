"""``qxedge check-config`` says what an agent ``kill -9`` would lose of the plant's MQTT readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from qxedge.agent.cli import main

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_plant_config_loses_no_reading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CONFIGS / "plant.yaml")]) == 0
    assert "QoS 1 on a persistent session, each acknowledged once on disk" in capsys.readouterr().out


def test_a_clean_session_is_said_to_lose_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (CONFIGS / "plant.yaml").read_text().replace("persistent_session: true      # QoS", "# QoS")
    config = tmp_path / "plant.yaml"
    config.write_text(text.replace("models/anomaly.onnx", str(CONFIGS / "models" / "anomaly.onnx")))
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "an agent kill -9 loses the MQTT readings" in out and "broker.persistent_session: true" in out
