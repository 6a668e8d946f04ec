"""The wheel: one top-level package, ``qxedge``, with every module of the checkout and its package data.

Builds the wheel as a user's ``pip install`` would (pip, setuptools' package-dir mapping), runs the
CLI from the unpacked wheel, and the demo from the wheel installed in a fresh venv (the edge install:
no extra), both outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qxedge.testing import ROOT
from tests.integration.installs import closure, install_wheel, make_venv

MAPPED = {  # where each package's modules are in the wheel: the folders they come from
    "qxedge": "qxedge",
    "qxedge/agent": "agent",
    "qxedge/connectors": "connectors",
    "qxedge/hybrid": "hybrid",
}

pytestmark = pytest.mark.integration
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


def checkout_modules() -> set[str]:
    """Every tracked Python module of the packages, as its path inside the wheel."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    modules = set()
    for path in tracked:
        for inside, folder in MAPPED.items():
            if path.startswith(folder + "/"):
                modules.add(inside + path.removeprefix(folder))
    return modules


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(  # setuptools from the dev extra: no build environment to download
        [*PIP_WHEEL, "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("qxedge-*.whl")
    return built


def test_the_wheel_installs_only_qxedge_with_every_module_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "qxedge"
    }
    missing = checkout_modules() - set(names)
    assert not missing, f"modules left out of the wheel (pyproject.toml's package list): {missing}"
    for data in ("edge.yaml", "datacenter.yaml", "models/anomaly.onnx", "mosquitto/plant.acl"):
        assert f"qxedge/configs/{data}" in names
    for page in ("index.html", "console.js", "console.css"):  # the console: served from package data
        assert f"qxedge/agent/console/static/{page}" in names


def test_the_unpacked_wheel_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, qxedge.agent.cli as cli, qxedge.agent.pipeline, qxedge.hybrid.portfolio;"
        "from qxedge.agent.config import default_config_path;"
        f"assert cli.__file__.startswith({str(site)!r}), cli.__file__;"
        f"assert str(default_config_path()).startswith({str(site)!r});"
        "sys.argv = ['qxedge', 'check-config', str(default_config_path())];"
        "cli.main()"
    )
    run = subprocess.run(  # the wheel's packages come first on sys.path, before the editable install
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok" in run.stdout.lower(), run.stdout


def test_the_installed_wheel_runs_the_demo_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv with the edge install's packages (no ``datacenter`` extra) and the wheel installed
    by pip: the demo runs from a folder outside the repository, on the wheel's package data (the
    default config, the ONNX model), with its own private broker."""
    extras = () if shutil.which("mosquitto") else ("embedded-broker",)  # the demo's private broker
    python = make_venv(tmp_path / "venv", closure(extras) - {"qxedge"})
    install_wheel(python, wheel)
    site = python.parent.parent / "lib"
    where = subprocess.run(
        [str(python), "-c", "import qxedge.agent.cli as c; print(c.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QXEDGE_", "PYTHON"))},
        "QXEDGE_PLANNING__DEMO_CLOCK": '{speed: 2400, start: "2026-06-01T00:00", slots: 4}',
    }
    demo = subprocess.run(
        [str(python.parent / "qxedge"), "demo", "--duration", "3", "--json"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    summary = json.loads(demo.stdout)
    assert summary["broker_source"] in ("mosquitto", "amqtt"), summary["broker_source"]
    assert summary["readings"] > 0 and summary["inferences"] > 0, summary
    assert "no QAOA in this install" in demo.stderr
    assert not list(outside.iterdir()), "the demo left files where it ran"
