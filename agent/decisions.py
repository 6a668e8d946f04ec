"""Local decisions: rules that turn model scores into setpoint proposals with their provenance.

A :class:`DerateRule` keeps one small state per asset: it proposes ``derate_to`` once the score has been
above ``above`` for ``consecutive`` evaluations, and ``restore_to`` once it has been below
``clear_below`` as long (hysteresis, so a noisy score does not make the setpoint flap). It proposes only
on a change of state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qxedge.agent._jsonbytes import dumps
from qxedge.agent.config import RuleConfig


@dataclass(frozen=True, slots=True)
class Setpoint:
    """A proposed setpoint; ``payload()`` is the JSON of ``qx/v1/{site}/setpoints/{asset}``."""

    asset: str
    value: float
    ts: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> bytes:
        return dumps({"asset": self.asset, "value": self.value, "ts": self.ts, "provenance": self.provenance})


@dataclass(slots=True)
class _AssetState:
    derated: bool = False
    streak: int = 0


@dataclass(frozen=True, slots=True)
class Scored:
    """One model's score for one asset, with what it was computed from."""

    asset: str
    score: float
    model: str
    model_sha256: str
    provider: str
    window: tuple[float, float]


class DerateRule:
    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._states: dict[str, _AssetState] = {}

    def adopt(self, old: DerateRule) -> None:
        """Carry on from ``old`` (the same rule before a config reload): which assets are derated."""
        self._states = old._states

    def evaluate(self, scored: Scored, now: float) -> Setpoint | None:
        cfg = self.config
        state = self._states.setdefault(scored.asset, _AssetState())
        crossing = scored.score < cfg.clear_below if state.derated else scored.score > cfg.above
        state.streak = state.streak + 1 if crossing else 0
        if state.streak < cfg.consecutive:
            return None
        state.derated = not state.derated
        state.streak = 0
        value = cfg.derate_to if state.derated else cfg.restore_to
        reason = (
            f"{scored.model} score above {cfg.above} for {cfg.consecutive} evaluations"
            if state.derated
            else f"{scored.model} score below {cfg.clear_below} for {cfg.consecutive} evaluations"
        )
        return Setpoint(
            scored.asset,
            value,
            now,
            {
                "rule": cfg.name,
                "reason": reason,
                "score": round(scored.score, 4),
                "model": scored.model,
                "model_sha256": scored.model_sha256,
                "provider": scored.provider,
                "window": list(scored.window),
            },
        )
