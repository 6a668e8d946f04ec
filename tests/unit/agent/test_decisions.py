import json

from qxedge.agent.config import RuleConfig
from qxedge.agent.decisions import DerateRule, Scored


def scored(score: float, asset: str = "l1/p1") -> Scored:
    return Scored(asset, score, "anomaly", "ab" * 32, "CPUExecutionProvider", (1.0, 2.0))


def test_derate_needs_consecutive_highs_and_restores_with_hysteresis() -> None:
    rule = DerateRule(
        RuleConfig(name="r", model="anomaly", above=4, consecutive=2, clear_below=1.5, derate_to=0.6)
    )
    outputs = [rule.evaluate(scored(s), now=float(i)) for i, s in enumerate([5, 1, 5, 5, 9, 3, 1, 1.4, 0.2])]
    fired = [(i, sp.value) for i, sp in enumerate(outputs) if sp is not None]
    assert fired == [(3, 0.6), (7, 1.0)]
    sp = outputs[3]
    assert sp is not None
    doc = json.loads(sp.payload())
    assert doc["asset"] == "l1/p1" and doc["value"] == 0.6 and doc["ts"] == 3.0
    prov = doc["provenance"]
    assert prov["model"] == "anomaly" and prov["provider"] == "CPUExecutionProvider"
    assert prov["model_sha256"] == "ab" * 32 and prov["window"] == [1.0, 2.0] and prov["rule"] == "r"


def test_assets_are_independent() -> None:
    rule = DerateRule(RuleConfig(name="r", model="m", above=1, consecutive=1, clear_below=0, derate_to=0.5))
    assert rule.evaluate(scored(2, "a"), 0) is not None
    assert rule.evaluate(scored(0.5, "b"), 0) is None
    assert rule.evaluate(scored(2, "a"), 1) is None  # already derated
