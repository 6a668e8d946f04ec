"""``qxedge install-service agent|solver``: what the systemd units need, from the installed package.

The files come from the wheel's package data (``qxedge.configs/systemd``), so a box with only the wheel
needs no checkout. In order, each step said on stdout (``--dry-run`` says them and does nothing):

1. ``qxedge.sysusers`` → ``/usr/lib/sysusers.d/qxedge.conf``, then ``systemd-sysusers``: the system user
   and group ``qxedge`` (home ``/var/lib/qxedge``, no login shell);
2. ``qxedge.tmpfiles`` → ``/usr/lib/tmpfiles.d/qxedge.conf``, then ``systemd-tmpfiles --create``:
   ``/etc/qxedge`` (0750 root:qxedge), ``/var/lib/qxedge`` and ``/var/cache/qxedge`` (0700 qxedge);
3. the unit → ``/etc/systemd/system/``, its ``ExecStart`` pointed at this install's ``qxedge``;
4. the config, only where there is none yet: ``/etc/qxedge/edge.yaml`` (from ``--config``, else the
   shipped ``plant.yaml``, in dry run, with its model in ``/etc/qxedge/models/``) or
   ``/etc/qxedge/datacenter.yaml``, 0640 root:qxedge, with
   ``state_dir: /var/lib/qxedge/qxedge`` (the unit's) so that ``qxedge audit --config`` and ``qxedge
   jobs --config`` read what the service writes;
5. ``systemctl daemon-reload`` (not with ``--root``). Enabling and starting are left to the operator,
   once the config is edited: the command prints how.

``--root DIR`` installs into an image or a test folder instead of ``/`` (``systemd-sysusers --root``).
Exit 0 when done, 1 when a step fails (not root, no systemd-sysusers), 2 for a bad ``--config``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qxedge.agent.config import default_config_path

EXEC = "/opt/qxedge/bin/qxedge"  # what the shipped units run
STATE_DIR = "/var/lib/qxedge/qxedge"  # the units' XDG_STATE_HOME (%S/qxedge) and qxedge's folder in it


@dataclass(frozen=True)
class Role:
    unit: str
    config: str  # its name in /etc/qxedge
    template: str  # the shipped config it starts from
    enable: str  # what to enable once the config is edited


ROLES = {
    "agent": Role("qxedge-agent.service", "edge.yaml", "plant.yaml", "qxedge-agent"),
    "solver": Role("qxedge-solver@.service", "datacenter.yaml", "datacenter.yaml", "qxedge-solver@1"),
}


def add_parser(sub: Any) -> None:
    """Register ``install-service`` on the CLI's subparsers."""
    p = sub.add_parser(
        "install-service",
        help="create the qxedge user, its folders, the systemd unit and its config (run as root)",
        description="Install what the systemd unit of the agent or of a solver worker needs, from this "
        "install's package data: the qxedge user (sysusers.d), /etc/qxedge, /var/lib/qxedge and "
        "/var/cache/qxedge (tmpfiles.d), the unit, and the config if there is none yet.",
    )
    p.add_argument("role", choices=sorted(ROLES), help="agent: the edge agent; solver: solver workers")
    p.add_argument("--config", "-c", type=Path, help="the config to install (default: the shipped one)")
    p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help="install under DIR")
    p.add_argument(
        "--qxedge",
        metavar="PATH",
        help="the qxedge the unit runs (default: this install's, next to its python)",
    )
    p.add_argument("--dry-run", action="store_true", help="say each step, do nothing")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    role = ROLES[args.role]
    root: Path = args.root
    local = root == Path("/")
    if local and not args.dry_run and os.geteuid() != 0:
        print(
            "qxedge: error: install-service creates a user and system folders: run it as root",
            file=sys.stderr,
        )
        return 1
    tools = [t for t in ("systemd-sysusers", "systemd-tmpfiles") if shutil.which(t) is None]
    if tools and not args.dry_run:
        print(
            f"qxedge: error: {', '.join(tools)} not found: this command needs systemd (docs/operations.md, "
            "systemd services, lists the steps to take by hand)",
            file=sys.stderr,
        )
        return 1
    source = args.config if args.config is not None else default_config_path(role.template)
    try:
        config_text = source.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"qxedge: error: --config {source}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    qxedge = args.qxedge or _this_qxedge()
    step = _Steps(root, args.dry_run)
    systemd = default_config_path("systemd")
    sysusers = step.copy(systemd / "qxedge.sysusers", "usr/lib/sysusers.d/qxedge.conf", 0o644)
    step.command("systemd-sysusers", *_root_flag(root), str(sysusers))
    tmpfiles = step.copy(systemd / "qxedge.tmpfiles", "usr/lib/tmpfiles.d/qxedge.conf", 0o644)
    step.command("systemd-tmpfiles", *_root_flag(root), "--create", str(tmpfiles))
    unit = (systemd / role.unit).read_text().replace(EXEC, qxedge)
    step.write(unit, f"etc/systemd/system/{role.unit}", 0o644)
    config = root / "etc" / "qxedge" / role.config
    if config.exists():
        step.say(f"keep {config} (there is one already)")
    else:
        step.write(_with_state_dir(config_text), f"etc/qxedge/{role.config}", 0o640, group="qxedge")
        if args.config is None and role.unit == "qxedge-agent.service":  # the shipped plant.yaml's model
            model = default_config_path("models/anomaly.onnx")
            step.write_bytes(model.read_bytes(), "etc/qxedge/models/anomaly.onnx", 0o640, group="qxedge")
    if local:
        step.command("systemctl", "daemon-reload")
    if step.failed:
        return 1
    final = Path("/etc/qxedge") / role.config
    print(
        f"next: edit {final} (`qxedge check-config {final}`), then `systemctl enable --now {role.enable}`"
        + (" (docs/operations.md: each instance's QXEDGE_OPS__PORT)" if role.enable.endswith("@1") else "")
    )
    return 0


def _this_qxedge() -> str:
    beside = Path(sys.executable).parent / "qxedge"  # the venv's (or the system's) console script
    return str(beside) if beside.exists() else shutil.which("qxedge") or EXEC


def _root_flag(root: Path) -> list[str]:
    return [] if root == Path("/") else [f"--root={root}"]


def _with_state_dir(text: str) -> str:
    """The config, with the units' ``state_dir`` unless it names one."""
    if re.search(r"^state_dir\s*:", text, re.M):
        return text
    return (
        text.rstrip("\n") + "\n\n# where the service keeps its state (the unit's XDG_STATE_HOME): "
        "`qxedge audit --config` reads it\n"
        f"state_dir: {STATE_DIR}\n"
    )


class _Steps:
    """Each step said on stdout, then done (unless a dry run); the first failure stops the rest."""

    def __init__(self, root: Path, dry_run: bool) -> None:
        self.root, self.dry_run, self.failed = root, dry_run, False

    def say(self, line: str) -> None:
        print(("would " if self.dry_run else "") + line, flush=True)

    def copy(self, source: Path, inside: str, mode: int) -> Path:
        return self.write(source.read_text(), inside, mode)

    def write(self, text: str, inside: str, mode: int, group: str | None = None) -> Path:
        return self.write_bytes(text.encode(), inside, mode, group)

    def write_bytes(self, data: bytes, inside: str, mode: int, group: str | None = None) -> Path:
        target = self.root / inside
        if self.failed:
            return target
        owner = f" root:{group}" if group else ""
        self.say(f"write {target} ({mode:04o}{owner})")
        if self.dry_run:
            return target
        try:
            gid = None if group is None else self._gid(group)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
            if gid is not None:
                os.chown(target, 0, gid)
                if target.parent.name == "models":  # a folder of its own: readable by the group too
                    os.chown(target.parent, 0, gid)
                    target.parent.chmod(0o750)
        except (OSError, LookupError) as exc:  # said like a failed command: exit 1, no traceback
            self.failed = True
            print(f"qxedge: error: cannot write {target}: {exc}", file=sys.stderr)
        return target

    def command(self, *argv: str) -> None:
        if self.failed:
            return
        self.say("run " + " ".join(argv))
        if self.dry_run:
            return
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:  # the program is missing
            self.failed = True
            print(f"qxedge: error: cannot run {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
            return
        if done.returncode != 0:
            self.failed = True
            print(
                f"qxedge: error: {argv[0]} failed: {done.stderr.strip() or done.returncode}", file=sys.stderr
            )

    def _gid(self, group: str) -> int:
        """The group's id in the root's /etc/group (made by systemd-sysusers)."""
        for line in (self.root / "etc" / "group").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == group:
                return int(fields[2])
        raise LookupError(f"no group {group} in {self.root / 'etc' / 'group'}")
