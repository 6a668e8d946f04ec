"""Certificates and keys of OPC UA security, checked when the config is loaded (``cryptography``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr


def load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _load_key(path: Path, password: SecretStr | None) -> Any:
    data = path.read_bytes()
    secret = password.get_secret_value().encode() if password is not None else None
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, secret)
    return serialization.load_der_private_key(data, secret)


def check_pair(cert_path: Path, key_path: Path, password: SecretStr | None, what: str) -> x509.Certificate:
    """Both files readable, the certificate parses, the key (RSA) opens and matches it."""
    try:
        cert = load_cert(cert_path)
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {cert_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{what}: {cert_path} is not a PEM or DER certificate ({exc})") from None
    try:
        key = _load_key(key_path, password)
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {key_path}: {exc.strerror}") from None
    except TypeError:
        raise ValueError(f"{what}: {key_path} is encrypted: set its password") from None
    except ValueError as exc:
        raise ValueError(f"{what}: cannot load the private key {key_path} ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{what}: OPC UA security needs an RSA key, {key_path} is not one")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{what}: {key_path} is not the key of {cert_path}")
    return cert


def san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))
