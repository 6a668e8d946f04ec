"""Model manifests, their signatures, chunks, the shadow's comparison (pure logic, no broker)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from qxedge.agent.config import WindowConfig
from qxedge.agent.models.chunks import assemble, cut, missing
from qxedge.agent.models.config import ShadowConfig
from qxedge.agent.models.manifest import FileDoc, Manifest, ModelRefused, SignedManifest
from qxedge.agent.models.shadow import Comparison
from qxedge.agent.models.signing import keygen, load_private_key, load_public_key, sign, verify
from qxedge.core.errors import ModelError
from qxedge.testing.training import linear_model, model_dir

INPUTS = ["temp.mean", "temp.std", "power.mean"]


def _manifest(tmp_path: Path) -> Manifest:
    folder = model_dir(tmp_path / "m", "anomaly", linear_model(3), INPUTS, WindowConfig())
    return Manifest.parse((folder / "manifest.json").read_text(), "test")


def test_a_signed_manifest_verifies_with_its_key_only(tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "k1")
    _, other_public = keygen(tmp_path / "k2")
    assert private.stat().st_mode & 0o777 == 0o600
    manifest = _manifest(tmp_path)
    signed = SignedManifest.parse(sign(manifest, load_private_key(private)).payload(), "t")
    assert verify(signed, load_public_key(public), "t") == manifest
    with pytest.raises(ModelRefused, match=r"signed with key .* trusts key"):
        verify(signed, load_public_key(other_public), "t")


def test_a_tampered_manifest_fails_its_signature(tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "k")
    signed = sign(_manifest(tmp_path), load_private_key(private))
    text = signed.manifest.replace('"n_inputs": 3', '"n_inputs": 3 ')
    forged = signed.model_copy(update={"manifest": text})
    with pytest.raises(ModelRefused, match="bad signature"):
        verify(forged, load_public_key(public), "t")


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    keygen(tmp_path)
    with pytest.raises(ModelError, match="exists"):
        keygen(tmp_path)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not a signed manifest"),
        (b'{"v": 1, "manifest": "{}"}', "signature"),
        (b"\xff\xfe", "not a signed manifest"),
    ],
)
def test_a_payload_that_is_not_a_signed_manifest_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ModelRefused, match=reason):
        SignedManifest.parse(payload, "qx/v1/s/models/m")


def test_a_manifest_whose_counts_disagree_is_refused(tmp_path: Path) -> None:
    doc = json.loads(_manifest(tmp_path).text())
    doc["n_inputs"] = 4
    with pytest.raises(ModelRefused, match="n_inputs is 4 but 3 inputs"):
        Manifest.parse(json.dumps(doc), "t")


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_chunks_put_the_file_back_together(size: int) -> None:
    data = bytes(range(256)) * 3
    parts, doc = cut(data, size)
    manifest_file = _file_doc(data)
    held = dict(enumerate(parts))
    assert all(len(p) <= size for p in parts) and assemble(held, doc, manifest_file) == data
    if len(parts) > 1:
        held[1] = b"another version's chunk"
        assert assemble(held, doc, manifest_file) is None and missing(held, doc) == 1
        del held[1]
        assert assemble(held, doc, manifest_file) is None


def _file_doc(data: bytes) -> FileDoc:
    return FileDoc(file="model.onnx", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_the_comparison_judges_agreement_shift_and_non_finite_scores() -> None:
    bounds = ShadowConfig(min_agreement=0.9, max_median_shift=0.5, max_latency_ratio=None)
    same = Comparison(threshold=4.0)
    for _ in range(10):
        a = np.array([0.5, 1.0, 5.0])
        same.add(a, a + 0.1, 1e-5, 1e-5)
    assert same.failure(bounds) is None and same.agreement == 1.0 and same.evaluations == 10
    flipped = Comparison(threshold=4.0)
    flipped.add(np.array([0.5, 1.0, 5.0]), np.array([5.0, 5.0, 5.0]), 1e-5, 1e-5)
    assert "agreement 33.3%" in (flipped.failure(bounds) or "")
    shifted = Comparison(threshold=4.0)
    shifted.add(np.array([0.5, 1.0, 1.5]), np.array([3.0, 3.5, 3.9]), 1e-5, 1e-5)
    assert "median score moved by +0.62" in (shifted.failure(bounds) or "")
    broken = Comparison(threshold=4.0)
    broken.add(np.array([0.5]), np.array([np.nan]), 1e-5, 1e-5)
    assert "not finite" in (broken.failure(bounds) or "")
    assert "scored no asset" in (Comparison(4.0).failure(bounds) or "")
