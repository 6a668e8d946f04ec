"""A plant of our own for OPC UA tests: asyncua's Server with a small, fixed address space.

``Line1/{pump1,pump2}/{Temp,Power}`` (Double), ``Line1/{pump}/LoadCap`` (Double, writable) and
``Line1/Mode`` (Int16, writable), in the namespace ``NS_URI`` (index 2). With a ``pki`` the server
offers Basic256Sha256 (or the given ``policies``) and admits ``OPERATOR`` / ``PASSWORD`` or the holder
of ``pki["user_cert"]``; without one, anonymous NoSecurity sessions::

    async with plant_server(free_port()) as plant:
        await plant.set("pump1", "temp", 61.5)
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server

NS_URI = "urn:qxedge:test:plant"
ASSETS = ("pump1", "pump2")
SIGNALS = ("temp", "power")
OPERATOR, PASSWORD = "operator", "pa55-w0rd"


class PlantUsers:
    """Only ``OPERATOR`` / ``PASSWORD``, or the holder of one of ``certificates`` (DER), opens a session."""

    def __init__(self, certificates: Collection[bytes] = ()) -> None:
        self.certificates = set(certificates)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username == OPERATOR and password == PASSWORD:
            return User(role=UserRole.User, name=username)
        if username is None and certificate is not None and bytes(certificate) in self.certificates:
            return User(role=UserRole.User, name="certificate")
        return None


def _node_id(name: str, idx: int) -> ua.NodeId:
    return ua.NodeId(name, idx)  # type: ignore[arg-type]  # asyncua's stubs want its own NewTypes


@dataclass
class Plant:
    """The running server, its URL, the namespace index and the nodes a test reads or drives."""

    server: Server
    url: str
    idx: int
    variables: dict[tuple[str, str], Any] = field(default_factory=dict)  # (asset, signal) -> Node
    setpoints: dict[str, Any] = field(default_factory=dict)  # asset or "mode" -> writable Node

    async def set(self, asset: str, signal: str, value: float, ts: datetime.datetime | None = None) -> None:
        """Change a variable (with a source timestamp when ``ts`` is given): subscribers see it."""
        dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=ts)  # type: ignore[arg-type]
        await self.variables[asset, signal].write_value(dv)


@contextlib.asynccontextmanager
async def plant_server(
    port: int, pki: dict[str, Path] | None = None, policies: list[Any] | None = None
) -> AsyncIterator[Plant]:
    """Start the plant on 127.0.0.1:``port`` (``pki``: ``server_cert``, ``server_key`` and optionally
    ``user_cert``); stop it on exit."""
    users = None
    if pki is not None:
        users = PlantUsers([pki["user_cert"].read_bytes()] if "user_cert" in pki else [])
    server = Server(user_manager=users)  # type: ignore[arg-type]
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/qxedge/"
    server.set_endpoint(url)
    if pki is not None:
        server.set_security_policy(policies or [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
        await server.load_certificate(str(pki["server_cert"]))
        await server.load_private_key(str(pki["server_key"]))
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS_URI)
    line = await server.nodes.objects.add_object(_node_id("Line1", idx), ua.QualifiedName("Line1", idx))
    plant = Plant(server, url, idx)
    for asset in ASSETS:
        obj = await line.add_object(_node_id(f"Line1.{asset}", idx), ua.QualifiedName(asset, idx))
        for signal in SIGNALS:
            name = signal.capitalize()
            plant.variables[asset, signal] = await obj.add_variable(
                _node_id(f"Line1.{asset}.{name}", idx),
                ua.QualifiedName(name, idx),
                0.0,
                ua.VariantType.Double,
            )
        cap = await obj.add_variable(
            _node_id(f"Line1.{asset}.LoadCap", idx),
            ua.QualifiedName("LoadCap", idx),
            1.0,
            ua.VariantType.Double,
        )
        await cap.set_writable()
        plant.setpoints[asset] = cap
    mode = await line.add_variable(
        _node_id("Line1.Mode", idx), ua.QualifiedName("Mode", idx), 0, ua.VariantType.Int16
    )
    await mode.set_writable()
    plant.setpoints["mode"] = mode
    await server.start()
    try:
        yield plant
    finally:
        await server.stop()
