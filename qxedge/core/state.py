"""Where qxedge keeps what must survive a restart: the config's ``state_dir`` when it names one, else
``$XDG_STATE_HOME/qxedge`` (``~/.local/state/qxedge``).

A process that loaded a config calls :func:`use_state_dir` with its ``state_dir`` once, before anything
opens a file there: the service and an operator's ``qxedge audit --config`` then read and write the same
files, whatever their environments say.
"""

from __future__ import annotations

import os
from pathlib import Path

_chosen: Path | None = None


def use_state_dir(path: Path | None) -> None:
    """Make ``path`` this process's state directory (None: back to the environment's default)."""
    global _chosen
    _chosen = path


def state_dir() -> Path:
    if _chosen is not None:
        return _chosen
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "qxedge"
