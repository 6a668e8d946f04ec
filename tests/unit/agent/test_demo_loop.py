"""``qxedge demo --loop``'s config and summary, without running it (tests/integration/test_demo_loop.py
runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.demo_loop import EVERY_S, format_loop, loop_config, loop_failed
from qxedge.agent.models.signing import keygen
from qxedge.core.errors import ConfigError, ModelError
from qxedge.testing import edge_config


def test_the_loop_runs_history_and_deploy_on_normal_operation(tmp_path: Path) -> None:
    _, public = keygen(tmp_path)
    base = edge_config("mqtt://127.0.0.1:1", planning=True)
    assert base.simulator is not None and base.simulator.faults  # the plain demo injects a fault
    cfg = loop_config(base, public)
    assert cfg.history.enabled and cfg.history.every_s == 1.0
    assert cfg.window.every_s == EVERY_S and cfg.window.length_s == base.window.length_s  # same features
    assert cfg.simulator is not None and not cfg.simulator.faults
    assert cfg.planning is None and cfg.offload is None and cfg.uplink is None
    assert (
        cfg.deploy is not None and cfg.deploy.promote == "auto" and cfg.deploy.public_key == public.resolve()
    )
    with pytest.raises(ConfigError, match="retrains a model"):
        loop_config(base.model_copy(update={"models": []}), public)


def summary(promoted: bool) -> dict[str, Any]:
    return {
        "site": "demo",
        "broker": "mqtt://127.0.0.1:1",
        "model_name": "anomaly",
        "duration_s": 40.0,
        "history": {
            "sent": 5784,
            "batches": 24,
            "bytes_per_reading": 10.2,
            "parquet_rows": 5784,
            "parquet_files": 24,
            "at_s": 25.0,
        },
        "training": {
            "windows": 324,
            "readings": 5784,
            "train_windows": 228,
            "calibration_windows": 96,
            "calibration_above_1": 0.0104,
            "seconds": 2.3,
            "at_s": 27.3,
        },
        "model": {
            "sha256": "9973bba04bc4" + "0" * 52,
            "bytes": 3422,
            "chunks": 1,
            "key_id": "75bcc2f365a916ee",
            "at_s": 27.3,
            "previous_sha256": "b29287093c45" + "0" * 52,
        },
        "shadow": {
            "evaluations": 20,
            "pairs": 80,
            "agreement": 1.0,
            "median_shift": 0.12,
            "threshold": 4.0,
            "latency_us": {"in_force": 393.0, "shadow": 65.0},
        },
        "promotion": {
            "promoted": promoted,
            "refused": None if promoted else "failed its shadow: agreement 80%",
            "at_s": 31.2 if promoted else None,
            "at_evaluation": 156 if promoted else None,
            "in_force_sha256": ("9973bba04bc4" if promoted else "b29287093c45") + "0" * 52,
            "inferences_after": 60 if promoted else 0,
            "evaluations_skipped": 0,
        },
    }


def test_the_summary_gives_each_step_and_says_when_nothing_was_promoted() -> None:
    text = format_loop(summary(True))
    assert "5,784 readings in 24 batches" in text and "agreement 100.0% at the rule threshold 4" in text
    assert "b29287093c45 -> 9973bba04bc4" in text and loop_failed(summary(True)) is None
    failed = summary(False)
    assert "NOT promoted:  failed its shadow: agreement 80%" in format_loop(failed)
    error = loop_failed(failed)
    assert isinstance(error, ModelError) and "not promoted" in str(error)
