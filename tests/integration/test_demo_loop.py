"""``qxedge demo --loop``: the learning loop end to end (history up, trained at the data center from the
historian's Parquet, signed, published, shadowed and promoted by the agent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_loop_demo_promotes_a_model_trained_from_the_history(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "qxedge.agent.cli", "demo", "--loop", "--json", "--history", "22"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    history, training, model = summary["history"], summary["training"], summary["model"]
    promotion, shadow = summary["promotion"], summary["shadow"]
    assert history["sent"] > 0 and history["parquet_rows"] == history["sent"]  # every reading up, once
    assert training["readings"] == history["parquet_rows"]  # trained from that Parquet
    assert training["train_windows"] >= 50 and training["calibration_windows"] >= 50
    assert promotion["promoted"], promotion
    assert promotion["in_force_sha256"] == model["sha256"] != model["previous_sha256"]  # the model changed
    assert shadow["evaluations"] >= 20 and shadow["agreement"] >= 0.95
    assert promotion["inferences_after"] > 0
    assert promotion["evaluations_skipped"] == 0
