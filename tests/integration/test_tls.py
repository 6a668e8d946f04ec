"""TLS, hostname verification and password authentication against a mosquitto of our own."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict

from qxedge.agent.config import load_model
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.core.errors import BrokerUnavailable, ConfigError

pytestmark = pytest.mark.integration


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path.with_suffix(".pem"), path.with_suffix(".key")


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for the name ``localhost`` only (not 127.0.0.1)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qxedge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, _ = _write(folder / "ca", ca_key, ca)
    cert, key_file = _write(folder / "server", key, server)
    assert ipaddress.ip_address("127.0.0.1")  # the certificate deliberately leaves the IP out
    return {"ca": ca_pem, "cert": cert, "key": key_file}


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, dict[str, Path]]]:
    pki = make_pki(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "gumi", "s3cret-01"], check=True)
    extra = (
        f"cafile {pki['ca']}\ncertfile {pki['cert']}\nkeyfile {pki['key']}\n"
        f"allow_anonymous false\npassword_file {passwords}\n"
    )
    with EmbeddedBroker(extra_config=extra, prefer="mosquitto") as broker:
        yield broker, pki


async def connects(cfg: BrokerConfig) -> bool:
    async with MqttClient(cfg, role="tls-test") as mqtt:
        return mqtt.connected


async def test_tls_with_verified_hostname_and_password(
    tls_broker: tuple[EmbeddedBroker, dict[str, Path]],
) -> None:
    broker, pki = tls_broker
    good = {
        "username": "gumi",
        "password": "s3cret-01",
        "tls": {"ca_file": pki["ca"]},
        "connect_timeout_s": 5,
    }
    assert await connects(BrokerConfig.model_validate({"url": f"mqtts://localhost:{broker.port}", **good}))
    with pytest.raises(BrokerUnavailable, match=r"(?i)certificate|hostname|IP address mismatch"):
        await connects(BrokerConfig.model_validate({"url": f"mqtts://127.0.0.1:{broker.port}", **good}))
    insecure = {**good, "tls": {"ca_file": pki["ca"], "verify_hostname": False}}
    assert await connects(
        BrokerConfig.model_validate({"url": f"mqtts://127.0.0.1:{broker.port}", **insecure})
    )
    for creds in ({"username": "gumi", "password": "wrong"}, {}):
        cfg = {
            "url": f"mqtts://localhost:{broker.port}",
            "tls": {"ca_file": pki["ca"]},
            "connect_timeout_s": 5,
            **creds,
        }
        with pytest.raises(BrokerUnavailable, match="refused"):
            await connects(BrokerConfig.model_validate(cfg))
    with pytest.raises(BrokerUnavailable):  # plain MQTT to a TLS listener
        await connects(BrokerConfig(url=f"mqtt://localhost:{broker.port}", connect_timeout_s=3))


def test_secrets_from_a_file_and_tls_files_checked_at_load(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "pw").write_text("from-a-file\n")
    (tmp_path / "bad.pem").write_text("not a certificate")
    (tmp_path / "dc.yaml").write_text(
        "broker:\n  url: mqtts://localhost:8883\n  username: gumi\n  password_file: pw\n"
        f"  tls: {{ca_file: {pki['ca'].name}}}\n"
    )
    cfg = load_model(BrokerConfigHolder, tmp_path / "dc.yaml", environ={})
    assert cfg.broker.password is not None and cfg.broker.password.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(cfg) and "from-a-file" not in cfg.model_dump_json()
    for url in ("mqtt://user:pw@host:1883", "mqtts://pw@host"):
        with pytest.raises(ValueError, match="not in the url"):
            BrokerConfig(url=url)
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        BrokerConfig(url="mqtt://h", password_file=tmp_path / "empty")
    (tmp_path / "bad.yaml").write_text("broker:\n  url: mqtts://h\n  tls: {ca_file: bad.pem}\n")
    with pytest.raises(ConfigError) as info:
        load_model(BrokerConfigHolder, tmp_path / "bad.yaml", environ={})
    assert info.value.problems[0].path == "broker.tls"
    assert "cannot load the TLS files" in info.value.problems[0].message


class BrokerConfigHolder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    broker: BrokerConfig
