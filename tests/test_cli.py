"""The ``qxedge`` command line as a user meets it: subprocesses, exit codes, stdout against stderr."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qxedge.connectors.embedded_broker import free_port

from .conftest import EDGE_YAML

QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]


def short_demo_config(tmp_path: Path) -> Path:
    """configs/edge.yaml without the production day (the demo then runs for --duration), pointed at a
    port where no broker listens, so the demo starts an embedded one of its own."""
    doc = yaml.safe_load(EDGE_YAML.read_text())
    del doc["planning"]
    doc["broker"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    doc["ops"]["port"] = 0
    doc["models"][0]["path"] = str(EDGE_YAML.parent / doc["models"][0]["path"])
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_demo_refuses_a_report_path_that_is_a_file_before_running(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    run = subprocess.run(
        [*QXEDGE, "demo", "--report", str(tmp_path / "taken")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert f"argument --report: {tmp_path / 'taken'} exists and is not a folder" in run.stderr
    assert "qxedge demo: broker" not in run.stderr  # refused before the demo started
    assert "Traceback" not in run.stderr


@pytest.mark.integration
def test_demo_prints_its_summary_even_when_the_report_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "report" / "summary.json").mkdir(parents=True)  # the folder is fine, the file is not
    config, report = short_demo_config(tmp_path), tmp_path / "report"
    run = subprocess.run(
        [*QXEDGE, "demo", "-c", str(config), "--duration", "1", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("qxedge demo: site demo")
    assert f"qxedge: error: cannot write the report: {tmp_path / 'report' / 'summary.json'}" in run.stderr
    assert "Traceback" not in run.stderr
