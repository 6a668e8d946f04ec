"""Config of a worker's job transport: ``transport: {kind: mqtt | nats | rabbitmq, url: ...}``.

Pydantic only (no nats-py, aio-pika or paho imported). Every problem is a ``ValueError`` naming the
field, so ``qxedge check-config`` prints it with its path (``transport.url: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from yarl import URL

from qxedge.core.config import read_secret, resolve_path, split_service_url

TransportKind = Literal["mqtt", "nats", "rabbitmq"]
SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    "nats": (("nats", "tls"), "nats://host[:port] or tls://host[:port]"),
    "rabbitmq": (("amqp", "amqps"), "amqp://host[:port][/vhost] or amqps://host[:port][/vhost]"),
}
DEFAULT_PORTS = {"nats": 4222, "tls": 4222, "amqp": 5672, "amqps": 5671}


class ProbeConfig(BaseModel):
    """The start-up proof that jobs reach this worker: a probe job sent over MQTT, as agents send jobs,
    on ``qx/v1/{site}/jobs``; it must come back to this worker through its transport and its answer
    back over MQTT within ``timeout_s``, else the worker exits 1 naming what is missing."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="false skips the probe (the worker then cannot tell)")
    site: str = Field(
        "qx-probe",
        pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="the site name the probes use (no real site may have it; the ACLs let the "
        "workers' user publish its jobs and read its results)",
    )
    timeout_s: float = Field(15.0, gt=0, le=600, description="how long the probe may take in all")


class TransportConfig(BaseModel):
    """Where a worker takes jobs from and how it sends results back (docs/offload.md, Transports)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: TransportKind = Field(
        "mqtt",
        description="mqtt: a shared subscription on the broker (`subscription`); nats: a JetStream "
        "work queue fed by NATS's MQTT; rabbitmq: a quorum queue bound to the MQTT plugin's exchange",
    )
    url: str | None = Field(
        None,
        description="nats://host:4222 or amqp://host:5672/vhost; none for mqtt (it uses `broker`); nats: "
        "several servers of one cluster comma-separated (nats://a:4222,nats://b:4222), tried in turn",
    )
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="a file holding the password (first line)")
    queue: str = Field(
        "qx-solvers",
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="nats: the durable consumer's name; rabbitmq: the quorum queue's",
    )
    stream: str = Field("QX_JOBS", pattern=r"^[A-Za-z0-9_-]{1,200}$", description="nats: the stream's name")
    exchange: str = Field(
        "amq.topic", min_length=1, description="rabbitmq: the MQTT plugin's exchange (its mqtt.exchange)"
    )
    ack_wait_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="nats: a job not acknowledged this long after its delivery (the worker died) goes to "
        "another worker; a living worker extends it while it solves",
    )
    max_deliver: int = Field(5, ge=1, le=1000, description="nats: deliveries of one job at most")
    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="nats: copies of the stream and its consumer on a JetStream cluster (3 on three nodes: "
        "queued jobs and acks survive the loss of one node); an existing stream keeps its own",
    )
    prefetch: int | None = Field(
        None, ge=1, le=10_000, description="jobs held unacknowledged at once; default max_concurrent_jobs + 1"
    )

    @field_validator("password_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _check(self) -> TransportConfig:
        if self.kind == "mqtt":
            if self.url is not None or self.username is not None or self.password is not None:
                raise ValueError(
                    "kind mqtt takes no url or credentials here: the worker uses `broker` "
                    "(url, username, password, tls) and `subscription`"
                )
            return self
        if self.url is None:
            raise ValueError(f"kind {self.kind} needs a url ({SCHEMES[self.kind][1]})")
        schemes, expected = SCHEMES[self.kind]
        for url in self.servers:
            split_service_url(url, schemes, f"for kind {self.kind} {expected}", "transport url")
        if self.kind != "nats" and len(self.servers) > 1:
            raise ValueError("several comma-separated urls are for kind nats (the servers of one cluster)")
        if self.kind != "nats" and self.replicas != 1:
            raise ValueError("replicas is for kind nats (a rabbitmq quorum queue has its cluster's replicas)")
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            self.password = read_secret(self.password_file)
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self

    @property
    def servers(self) -> list[str]:
        """The url's servers: one, or (nats) the comma-separated servers of a cluster."""
        return [part.strip() for part in (self.url or "").split(",") if part.strip()]

    @property
    def secret(self) -> str | None:
        return self.password.get_secret_value() if self.password is not None else None

    def amqp_url(self) -> URL:
        """rabbitmq: the url with the username and password in it (aio-pika takes them so)."""
        url = URL(self.url or "")
        return url if self.username is None else url.with_user(self.username).with_password(self.secret)
