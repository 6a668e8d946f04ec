"""The learning loop's models: trained at the data center, signed, deployed to the edge in shadow.

- :mod:`.manifest`: the manifest (inputs, window, training, calibration, metrics, sha256) and its
  signed envelope; ``ModelRefused``, the reason a model is refused;
- :mod:`.signing`: Ed25519 keys (``qxedge models keygen``), signing and verifying manifests;
- :mod:`.chunks`: the model file cut into retained chunks and put back together (pure);
- :mod:`.config`: the agent's ``deploy:`` section (pydantic only);
- :mod:`.history` and :mod:`.training`: ``qxedge train`` from the historian's Parquet, through the
  agent's own feature window (the ``train`` extra: scikit-learn, skl2onnx, onnx);
- :mod:`.publish`: ``qxedge models publish`` and the operator commands;
- :mod:`.shadow` and :mod:`.deploy`: the agent's side: verify, shadow, promote, refuse, roll back.

Names load their module on first use: ``from qxedge.agent.models import DeployConfig`` imports neither
``cryptography`` nor ONNX Runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.agent.models.config import DeployConfig, ShadowConfig
    from qxedge.agent.models.deploy import ModelDeployer, ModelHost, ModelLifecycle
    from qxedge.agent.models.manifest import Manifest, ModelRefused, SignedManifest
    from qxedge.agent.models.publish import publish_model, send_command
    from qxedge.agent.models.shadow import Comparison, Shadow
    from qxedge.agent.models.signing import keygen, sign, verify
    from qxedge.agent.models.training import TrainRequest, train

_HOME = {
    "Comparison": ".shadow",
    "DeployConfig": ".config",
    "Manifest": ".manifest",
    "ModelDeployer": ".deploy",
    "ModelHost": ".deploy",
    "ModelLifecycle": ".deploy",
    "ModelRefused": ".manifest",
    "Shadow": ".shadow",
    "ShadowConfig": ".config",
    "SignedManifest": ".manifest",
    "TrainRequest": ".training",
    "keygen": ".signing",
    "publish_model": ".publish",
    "send_command": ".publish",
    "sign": ".signing",
    "train": ".training",
    "verify": ".signing",
}
__all__ = [  # what _HOME maps, spelled out for the tools
    "Comparison",
    "DeployConfig",
    "Manifest",
    "ModelDeployer",
    "ModelHost",
    "ModelLifecycle",
    "ModelRefused",
    "Shadow",
    "ShadowConfig",
    "SignedManifest",
    "TrainRequest",
    "keygen",
    "publish_model",
    "send_command",
    "sign",
    "train",
    "verify",
]

__getattr__ = lazy_exports(__name__, _HOME)
