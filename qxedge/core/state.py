"""Where qxedge keeps what must survive a restart: ``$XDG_STATE_HOME/qxedge`` (``~/.local/state/qxedge``)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "qxedge"
