"""Where the source checkout keeps its files, the example edge config pointed at a test broker, and a
compressed plant clock for its production day."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from qxedge.agent.clock import Clock
from qxedge.agent.config import EdgeConfig, load_config

ROOT = Path(__file__).resolve().parents[2]  # the source checkout (tests and benches run from one)
EDGE_YAML = ROOT / "configs" / "edge.yaml"


def edge_config(broker_url: str, *, planning: bool = False, **env: str) -> EdgeConfig:
    """configs/edge.yaml pointed at ``broker_url``, with QXEDGE_-style overrides (keys without prefix);
    without the production day unless ``planning`` (its setpoints would mix with what a test checks)."""
    env = {"ops__port": "0", **env}  # a free port for the metrics endpoint of every agent under test
    cfg = load_config(
        EDGE_YAML, environ={f"QXEDGE_{k.upper()}": v for k, v in env.items()}, broker_url=broker_url
    )
    return cfg if planning else cfg.model_copy(update={"planning": None})


def compressed(cfg: EdgeConfig, start: str, slot_real_s: float) -> Clock:
    """The plant clock of ``cfg``'s production day reading ``start`` (site time) now, a slot every
    ``slot_real_s`` seconds."""
    assert cfg.planning is not None
    grid = cfg.planning.grid()
    plant0 = datetime.fromisoformat(start).replace(tzinfo=grid.tz).timestamp()
    return Clock(grid, cfg.planning.slot_s / slot_real_s, anchor=(time.time(), plant0))
