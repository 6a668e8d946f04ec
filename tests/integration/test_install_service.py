"""``qxedge install-service``: the user, the folders, the unit and the config the systemd units need, from
the installed package, into a root folder (``--root``, as ``systemd-sysusers --root``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from qxedge.agent.cli import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not shutil.which("systemd-sysusers") or not shutil.which("systemd-tmpfiles") or os.geteuid() != 0,
        reason="needs systemd-sysusers, systemd-tmpfiles and root (it sets owners)",
    ),
]


def ids(root: Path, name: str) -> tuple[int, int]:
    user = next(line for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith(name))
    uid, gid = (int(n) for n in user.split(":")[2:4])
    return uid, gid


def test_the_agent_service_is_installed_ready_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert main(["install-service", "agent", "--root", str(root)]) == 0
    said = capsys.readouterr().out
    assert "systemctl enable --now qxedge-agent" in said
    uid, gid = ids(root, "qxedge:")
    for path, owner, mode in (
        ("var/lib/qxedge", (uid, gid), 0o700),
        ("var/cache/qxedge", (uid, gid), 0o700),
        ("etc/qxedge", (0, gid), 0o750),
        ("etc/qxedge/edge.yaml", (0, gid), 0o640),
        ("etc/qxedge/models/anomaly.onnx", (0, gid), 0o640),
    ):
        st = (root / path).stat()
        assert ((st.st_uid, st.st_gid), st.st_mode & 0o777) == (owner, mode), path
    unit = (root / "etc/systemd/system/qxedge-agent.service").read_text()
    here = Path(sys.executable).parent / "qxedge"
    assert f"ExecStart={here} --log-json run --config /etc/qxedge/edge.yaml" in unit
    assert "/opt/qxedge" not in unit
    config = root / "etc/qxedge/edge.yaml"
    assert config.read_text().endswith("state_dir: /var/lib/qxedge/qxedge\n")
    assert main(["check-config", str(config)]) == 0  # what the unit's ExecStartPre runs

    config.write_text(config.read_text() + "# edited\n")
    assert main(["install-service", "agent", "--root", str(root)]) == 0  # again: the config is kept
    assert f"keep {config}" in capsys.readouterr().out
    assert config.read_text().endswith("# edited\n")


def test_the_solver_service_and_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert main(["install-service", "solver", "--root", str(root), "--qxedge", "/srv/qx/bin/qxedge"]) == 0
    unit = (root / "etc/systemd/system/qxedge-solver@.service").read_text()
    assert "ExecStart=/srv/qx/bin/qxedge --log-json solver --config /etc/qxedge/datacenter.yaml" in unit
    assert "state_dir: /var/lib/qxedge/qxedge" in (root / "etc/qxedge/datacenter.yaml").read_text()
    capsys.readouterr()

    dry = tmp_path / "dry"
    assert main(["install-service", "agent", "--root", str(dry), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"would write {dry}/usr/lib/sysusers.d/qxedge.conf (0644)"
    assert all(line.startswith(("would ", "next: ")) for line in lines), lines
    assert not dry.exists()


def test_a_step_that_cannot_write_fails_with_exit_1_and_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target that cannot be written (here /usr/lib is a file in the root) was a traceback."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr").mkdir()
    (root / "usr" / "lib").write_text("not a folder")
    assert main(["install-service", "agent", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "qxedge: error: cannot write" in err and "usr/lib/sysusers.d" in err
