"""Config models of an MQTT link: the broker (URL, credentials, TLS, backoff) and the JSON reading source.

Pure pydantic: importing this module imports no paho client.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from qxedge.connectors.mqtt.topics import check_filter
from qxedge.connectors.readings import TopicPattern
from qxedge.core.config import read_secret, resolve_path, split_service_url

# the suffix of a non-persistent session's client id (``qxedge-<role>-<site>-<8 hex>``): a site id must
# not end like it, or one site's ids would be another's (the brokers bind ids to users by pattern)
SESSION_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


class TlsConfig(BaseModel):
    """TLS to the broker; checked when the config is loaded (files exist, certificates parse)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    ca_file: Path | None = Field(None, description="CA bundle (PEM); default: the system's CAs")
    cert_file: Path | None = Field(None, description="client certificate (PEM), for certificate auth")
    key_file: Path | None = Field(None, description="its private key (PEM)")
    key_password: SecretStr | None = Field(None, description="when the private key is encrypted")
    verify_hostname: bool = Field(True, description="check the broker's name against its certificate")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _check(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        context = ssl.create_default_context()
        try:
            if self.ca_file is not None:
                context.load_verify_locations(cafile=str(self.ca_file))
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file), self._key_password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self

    def _key_password(self) -> str:
        """Never let OpenSSL prompt on a terminal for an encrypted key."""
        if self.key_password is None:
            raise ValueError("the private key is encrypted: set tls.key_password")
        return self.key_password.get_secret_value()

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file), self._key_password)
        context.check_hostname = self.verify_hostname
        return context


class BrokerConfig(BaseModel):
    """How to reach an MQTT broker. Secrets: ``password`` (e.g. from ``QXEDGE_BROKER__PASSWORD``) or
    ``password_file``; neither is ever logged or printed (nor is the input of a field that failed)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host[:port] (mqtts:// for TLS)")
    client_id: str | None = Field(None, description="default: qxedge-<role>-<random>")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="a file holding the password (first line)")
    tls: TlsConfig | None = Field(None, description="TLS settings; mqtts:// with none uses the system CAs")
    keepalive_s: int = Field(15, ge=5, le=3600)
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    reconnect_min_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    max_queued_messages: int = Field(10_000, ge=1, description="QoS>0 publishes held while disconnected")
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1",
        description="MQTT protocol version: 3.1.1 (every broker) or 5 (message expiry, response topic and "
        "correlation data on jobs, results and setpoints; mosquitto, EMQX, HiveMQ, VerneMQ)",
    )
    persistent_session: bool = Field(
        False,
        description="clean_session=False with a stable client id (qxedge-<role>): the broker keeps the "
        "subscriptions and queued QoS 1 messages across reconnects and its own restarts (needs "
        "`persistence true` on the broker)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        split_url(url)
        return url

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: object) -> object:
        """``protocol: 5`` in YAML is a number; ``3.1.1`` a string: both name a version."""
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("password_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _secret(self) -> BrokerConfig:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            self.password = read_secret(self.password_file)
        if self.tls is not None and split_url(self.url)[0] != "mqtts":
            raise ValueError("tls settings need an mqtts:// url")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def host(self) -> str:
        return split_url(self.url)[1]

    @property
    def port(self) -> int:
        return split_url(self.url)[2]


class MqttSourceConfig(BaseModel):
    """Readings in the JSON reading format from topics of the plant broker."""

    model_config = ConfigDict(extra="forbid")

    topics: list[str] = Field(["plant/#"], min_length=1, description="topic filters to subscribe to")
    topic_pattern: str = Field(
        "plant/{line}/{asset}/{signal}",
        description="maps a topic to an asset (the placeholders before {signal}) and a signal",
    )
    qos: Literal[0, 1] = 0
    max_payload_bytes: int = Field(65_536, ge=16, le=16 * 1024 * 1024)
    max_ahead_s: float = Field(300.0, gt=0, description="readings stamped further in the future are rejected")

    @field_validator("topic_pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        TopicPattern(pattern)
        return pattern

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: list[str]) -> list[str]:
        for t in topics:
            check_filter(t)
        return topics


def split_url(url: str) -> tuple[Literal["mqtt", "mqtts"], str, int]:
    """``mqtt://host:port`` → ``("mqtt", host, port)``; ValueError with the reason (and the url, its
    password masked) otherwise."""
    kind, host, port = split_service_url(url, ("mqtt", "mqtts"), "mqtt://host[:port] or mqtts://host[:port]")
    scheme: Literal["mqtt", "mqtts"] = "mqtts" if kind == "mqtts" else "mqtt"
    return scheme, host, port or (8883 if scheme == "mqtts" else 1883)
