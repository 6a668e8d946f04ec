"""Where the source checkout keeps its files, and the example edge config pointed at a test broker."""

from __future__ import annotations

from pathlib import Path

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
