"""The wheel: one top-level package, ``qxedge``, with every module of the checkout and its package data.

Builds the wheel as a user's ``pip install`` would (pip, setuptools' package-dir mapping) and runs the
CLI from the unpacked wheel, outside the repository.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qxedge.testing import ROOT

MAPPED = {  # where each package's modules are in the wheel: the folders they come from
    "qxedge": "qxedge",
    "qxedge/agent": "agent",
    "qxedge/connectors": "connectors",
    "qxedge/hybrid": "hybrid",
}

pytestmark = pytest.mark.integration


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
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
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
