"""Config models of the OPC UA connector: server, security, identity, monitored nodes, setpoints.

Pydantic and :mod:`.nodes` only: importing this module imports no asyncua (and certificates are read
with ``cryptography`` only when the config names some).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qxedge.connectors.opcua.nodes import check_name, node_key, parse_node
from qxedge.core.config import read_secret, resolve_path, split_service_url

if TYPE_CHECKING:
    from qxedge.connectors.opcua._connector import OpcUaConnector


def _node(node: str) -> str:
    parse_node(node)
    return node.strip()


NodeRef = Annotated[str, AfterValidator(_node)]  # a node id or a browse path, checked without asyncua
AssetName = Annotated[str, AfterValidator(lambda asset: check_name(asset, "asset", allow_slash=True))]
SignalName = Annotated[str, AfterValidator(lambda signal: check_name(signal, "signal", allow_slash=False))]

VariantName = Literal[
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double"
]


class OpcUaNode(BaseModel):
    """One monitored node and the reading it becomes."""

    model_config = ConfigDict(extra="forbid")

    node: NodeRef = Field(
        description="node id (ns=2;s=Line1.Pump1.Temp) or browse path (0:Objects/2:Line1/...)"
    )
    asset: AssetName = Field(description="the agent's asset id, e.g. line1/pump1")
    signal: SignalName = Field(description="the signal name, e.g. temp")
    sampling_interval_ms: float | None = Field(None, ge=0, description="default: the connector's")


class OpcUaSetpoint(BaseModel):
    """Where an asset's setpoint is written, and the reading its read-back becomes."""

    model_config = ConfigDict(extra="forbid")

    node: NodeRef = Field(description="node id or browse path of the variable written")
    type: VariantName = Field("Double", description="OPC UA variant type of the written value")
    scale: float = Field(1.0, description="written = setpoint x scale (e.g. 100 for a percent register)")
    readback_signal: SignalName = Field(
        "load_cap", description="signal on which the value read back is delivered"
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: float) -> float:
        if not math.isfinite(scale) or scale == 0:
            raise ValueError("scale must be a finite number other than 0")
        return scale


class OpcUaSecurity(BaseModel):
    """Secure channel: policy and mode, the client's application instance certificate, the server's."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = Field(None, description="client application instance certificate (PEM/DER)")
    private_key: Path | None = Field(None, description="its RSA private key (PEM/DER)")
    private_key_password: SecretStr | None = Field(None, description="when the private key is encrypted")
    server_certificate: Path | None = Field(
        None, description="pin the server's certificate; default: the one its endpoint list presents"
    )
    application_uri: str | None = Field(
        None, description="default: the URI in the client certificate's subjectAltName"
    )

    @field_validator("certificate", "private_key", "server_certificate")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @model_validator(mode="after")
    def _check(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                f"policy {self.policy} with mode {self.mode}: policy None goes with mode None, "
                "Basic256Sha256 with mode Sign or SignAndEncrypt"
            )
        if self.policy == "None":
            if self.certificate or self.private_key or self.server_certificate:
                raise ValueError("certificates are only used with policy Basic256Sha256")
            return self
        if self.certificate is None or self.private_key is None:
            raise ValueError(f"policy {self.policy} needs certificate and private_key (the client's)")
        from qxedge.connectors.opcua._pki import check_pair, load_cert, san_uris

        cert = check_pair(self.certificate, self.private_key, self.private_key_password, "security")
        if self.application_uri is None:
            uris = san_uris(cert)
            if not uris:
                raise ValueError(
                    f"{self.certificate} has no URI in its subjectAltName: set security.application_uri"
                )
            self.application_uri = uris[0]
        if self.server_certificate is not None:
            try:
                load_cert(self.server_certificate)
            except OSError as exc:
                raise ValueError(f"server_certificate: cannot read it: {exc.strerror}") from None
            except ValueError as exc:
                raise ValueError(f"server_certificate: not a PEM or DER certificate ({exc})") from None
        return self


class OpcUaConfig(BaseModel):
    """An OPC UA server: nodes read through a subscription, setpoints written with read-back."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    endpoint: str = Field(description="opc.tcp://host[:port][/path]")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = Field(None, description="user name identity (else anonymous)")
    password: SecretStr | None = Field(None, description="e.g. from QXEDGE_CONNECTORS__0__OPCUA__PASSWORD")
    password_file: Path | None = Field(None, description="a file holding the password (first line)")
    user_certificate: Path | None = Field(None, description="X.509 user identity certificate (PEM/DER)")
    user_private_key: Path | None = Field(None, description="its RSA private key")
    user_private_key_password: SecretStr | None = None
    nodes: list[OpcUaNode] = Field(default_factory=list, description="monitored nodes → (asset, signal)")
    setpoints: dict[str, OpcUaSetpoint] = Field(
        default_factory=dict, description="asset → the node its setpoint is written to"
    )
    sampling_interval_ms: float = Field(100.0, ge=0, description="how often the server samples each node")
    publishing_interval_ms: float = Field(250.0, gt=0, description="how often it sends what changed")
    queue_size: int = Field(10, ge=1, le=10_000, description="changes kept per node between two publishes")
    keepalive_s: float = Field(5.0, gt=0, le=600, description="the server answers at least this often")
    request_timeout_s: float = Field(5.0, gt=0, le=300)
    session_timeout_s: float = Field(60.0, ge=1, le=86_400)
    reconnect_min_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    max_ahead_s: float = Field(300.0, gt=0, description="readings stamped further in the future are dropped")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, url: str) -> str:
        split_endpoint(url)
        return url

    @field_validator("password_file", "user_certificate", "user_private_key")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @field_validator("setpoints")
    @classmethod
    def _assets(cls, setpoints: dict[str, OpcUaSetpoint]) -> dict[str, OpcUaSetpoint]:
        for asset in setpoints:
            check_name(asset, "asset", allow_slash=True)
        return setpoints

    @model_validator(mode="after")
    def _check(self) -> OpcUaConfig:
        if not self.nodes and not self.setpoints:
            raise ValueError("give nodes to monitor, setpoints to write, or both")
        seen: dict[str, int] = {}
        pairs: dict[tuple[str, str], int] = {}
        for i, n in enumerate(self.nodes):
            key = node_key(n.node)
            if key in seen:
                raise ValueError(f"nodes[{i}]: node {n.node!r} is already nodes[{seen[key]}]")
            seen[key] = i
            if (n.asset, n.signal) in pairs:
                raise ValueError(
                    f"nodes[{i}]: {n.asset}/{n.signal} is already read from nodes[{pairs[n.asset, n.signal]}]"
                )
            pairs[n.asset, n.signal] = i
        targets: dict[str, str] = {}
        for asset, sp in self.setpoints.items():
            key = node_key(sp.node)
            if key in targets:
                raise ValueError(
                    f"setpoints.{asset}: node {sp.node!r} is also the setpoint of {targets[key]}"
                )
            targets[key] = asset
            j = pairs.get((asset, sp.readback_signal))
            if j is not None and node_key(self.nodes[j].node) != key:
                raise ValueError(
                    f"setpoints.{asset}: read-back signal {sp.readback_signal!r} is already read from "
                    f"another node (nodes[{j}])"
                )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        self._check_identity()
        return self

    def _check_identity(self) -> None:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give password or password_file, not both")
            self.password = read_secret(self.password_file)
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if self.user_certificate is not None and self.user_private_key is not None:
            if self.username is not None:
                raise ValueError("one user identity: username or user_certificate, not both")
            if self.security.policy == "None":
                raise ValueError("a user certificate needs a secure channel (security.policy Basic256Sha256)")
            from qxedge.connectors.opcua._pki import check_pair

            check_pair(
                self.user_certificate,
                self.user_private_key,
                self.user_private_key_password,
                "user_certificate",
            )

    def connector(self, name: str) -> OpcUaConnector:
        from qxedge.connectors.opcua._connector import OpcUaConnector

        return OpcUaConnector(self, name)


def split_endpoint(url: str) -> tuple[str, int]:
    """``opc.tcp://host:port/path`` → ``(host, port)``; ValueError with the reason otherwise."""
    _, host, port = split_service_url(url, ("opc.tcp",), "opc.tcp://host[:port][/path]", "endpoint")
    return host, port or 4840
