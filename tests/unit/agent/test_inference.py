from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from qxedge.agent.config import ModelConfig, load_config
from qxedge.agent.inference import OnnxModel, choose_providers
from qxedge.agent.replay import replay
from qxedge.connectors.simulator import SimFault
from qxedge.core.errors import ModelError
from qxedge.testing import EDGE_YAML

CFG = load_config(EDGE_YAML, environ={})


def test_provider_preference_falls_back_to_what_the_build_offers() -> None:
    preferred = [
        "QNNExecutionProvider",
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(preferred, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(preferred, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider"], ["AzureExecutionProvider"]) == ["CPUExecutionProvider"]


def test_model_records_the_provider_actually_used_and_its_hash() -> None:
    model = OnnxModel(CFG.models[0])
    assert model.provider in ort.get_available_providers()
    assert model.provider == (
        "CPUExecutionProvider"
        if ort.get_available_providers() == ["CPUExecutionProvider"]
        else model.provider
    )
    assert len(model.sha256) == 64
    scores = model.score(np.zeros((3, len(model.inputs)), np.float32))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert model.score(np.empty((0, len(model.inputs)), np.float32)).shape == (0,)


def test_model_that_does_not_fit_its_config_is_refused(tmp_path: Path) -> None:
    base = CFG.models[0].model_dump()
    with pytest.raises(ModelError, match="expects 8 features per row, config lists 2"):
        OnnxModel(ModelConfig.model_validate({**base, "inputs": ["temp.mean", "temp.std"]}))
    with pytest.raises(ModelError, match="no output 'nope'"):
        OnnxModel(ModelConfig.model_validate({**base, "output": "nope"}))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxModel(ModelConfig.model_validate({**base, "path": tmp_path / "junk.onnx"}))


@pytest.mark.parametrize("kind", ["bearing", "overheat"])
def test_anomaly_score_rises_on_injected_faults(kind: str) -> None:
    """The shipped model, fed by the agent's own windows over the simulator: faults stand out."""
    assert CFG.simulator is not None
    victim = CFG.simulator.assets[2].name
    sim = CFG.simulator.model_copy(
        update={
            "seed": 99,  # not a training seed
            "faults": [SimFault(asset=victim, kind=kind, at_s=120, ramp_s=20)],
        }
    )
    run = replay(sim, CFG.window, CFG.models[0].inputs, 480)
    scores = OnnxModel(CFG.models[0]).score(run.features)
    on_victim = np.array([a == f"{sim.line}/{victim}" for a in run.assets])
    normal = scores[~on_victim | (run.times < 120)]
    faulty = scores[on_victim & (run.times > 120 + 20 + CFG.window.length_s)]
    rule = CFG.rules[0]
    assert np.quantile(normal, 0.99) < rule.clear_below, "normal operation stays below the clear threshold"
    assert np.median(faulty) > rule.above, f"{kind}: the fault drives the score over the rule's threshold"
    assert np.median(faulty) > 5 * np.quantile(normal, 0.99)
