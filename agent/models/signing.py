"""Ed25519 keys for model manifests (``cryptography``): the data center signs, the agent verifies.

``qxedge models keygen --out DIR`` writes ``model-signing.pem`` (the private key, PKCS#8, mode 0600:
keep it at the data center) and ``model-signing.pub.pem`` (the public key: the agent's
``deploy.public_key``). A key's id is the first 16 hex digits of the sha256 of its raw public bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from qxedge.agent.models.manifest import Manifest, ModelRefused, SignedManifest
from qxedge.core.errors import ModelError

PRIVATE_FILE = "model-signing.pem"
PUBLIC_FILE = "model-signing.pub.pem"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(folder: Path) -> tuple[Path, Path]:
    """A new key pair in ``folder`` (made if missing); ModelError rather than overwrite a key."""
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_FILE, folder / PUBLIC_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise ModelError(f"{path} exists: move it away first (a new key invalidates the agents' one)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{what} {path}: {exc.strerror or exc}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"private key {path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"private key {path}: not an Ed25519 key (`qxedge models keygen` makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError as exc:
        raise ModelError(f"public key {path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ModelError(f"public key {path}: not an Ed25519 key")
    return key


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> SignedManifest:
    text = manifest.text()
    signature = base64.b64encode(key.sign(text.encode())).decode("ascii")
    return SignedManifest(manifest=text, signature=signature, key_id=key_id(key.public_key()))


def verify(signed: SignedManifest, key: Ed25519PublicKey, where: str) -> Manifest:
    """The manifest, once its signature checks out against ``key``; ModelRefused saying why not."""
    expected = key_id(key)
    if signed.key_id != expected:
        raise ModelRefused(f"{where}: signed with key {signed.key_id}, the agent trusts key {expected} only")
    try:
        signature = base64.b64decode(signed.signature, validate=True)
        key.verify(signature, signed.manifest.encode())
    except (ValueError, InvalidSignature):
        raise ModelRefused(
            f"{where}: bad signature: the manifest is not the one key {expected} signed"
        ) from None
    return Manifest.parse(signed.manifest, where)
