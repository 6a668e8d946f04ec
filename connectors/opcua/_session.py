"""One OPC UA session for a short job (browse, a reachability check): security, identity, and errors that
say what to change.

The connector's long-lived session (``_connector``) applies security and identity with the same
:func:`secure`; a session here adds the translation of asyncua's failures into
:class:`~qxedge.core.errors.ConnectorError` messages: an endpoint that cannot be reached, one that does
not answer in time, and a security mismatch, which lists the policies and modes the server offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError
from pydantic import SecretStr

from qxedge.connectors.opcua.config import OpcUaSecurity
from qxedge.connectors.opcua.nodes import BrowsePath
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)

HIERARCHICAL = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
_MODES = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}


class Identity(Protocol):
    """Who connects and how: what :class:`~.config.OpcUaConfig` holds besides its nodes."""

    @property
    def security(self) -> OpcUaSecurity: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def user_certificate(self) -> Path | None: ...
    @property
    def user_private_key(self) -> Path | None: ...
    @property
    def user_private_key_password(self) -> SecretStr | None: ...


async def secure(client: Client, who: Identity) -> None:
    """Apply the secure channel's policy and mode, the client certificate and the user identity."""
    sec = who.security
    if sec.application_uri:
        client.application_uri = sec.application_uri
    if who.username is not None:
        client.set_user(who.username)
    if who.password is not None:
        client.set_password(who.password.get_secret_value())
    if who.user_certificate is not None and who.user_private_key is not None:
        await client.load_client_certificate(str(who.user_certificate))
        password = who.user_private_key_password
        await client.load_private_key(who.user_private_key, password.get_secret_value() if password else None)
    if sec.policy == "Basic256Sha256" and sec.certificate is not None and sec.private_key is not None:
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(sec.certificate),
            str(sec.private_key),
            sec.private_key_password.get_secret_value() if sec.private_key_password else None,
            str(sec.server_certificate) if sec.server_certificate else None,
            getattr(ua.MessageSecurityMode, sec.mode),
        )


@contextlib.asynccontextmanager
async def open_session(endpoint: str, who: Identity, timeout_s: float) -> AsyncIterator[Client]:
    """A connected client (secure channel and session); ConnectorError saying why when there is none.
    ``timeout_s`` bounds each request, and the whole connect to three times that."""
    client = Client(endpoint, timeout=timeout_s)
    client.name = client.description = "qxedge discover"
    try:
        async with asyncio.timeout(timeout_s * 3):
            await secure(client, who)
            await client.connect()
    except TimeoutError:
        await quietly(client.disconnect())
        raise ConnectorError(f"no answer from {endpoint} within {timeout_s * 3:g} s") from None
    except (OSError, UaError) as exc:
        await quietly(client.disconnect())
        raise ConnectorError(await _why(endpoint, who, exc, timeout_s)) from exc
    except Exception as exc:  # asyncua raises what it likes on a server that speaks something else
        await quietly(client.disconnect())
        raise ConnectorError(f"cannot open a session with {endpoint}: {describe(exc)}") from exc
    try:
        yield client
    finally:
        await quietly(client.disconnect())


async def _why(endpoint: str, who: Identity, exc: OSError | UaError, timeout_s: float) -> str:
    if isinstance(exc, OSError):
        return f"cannot reach {endpoint}: {exc.strerror or describe(exc)}"
    text = describe(exc)
    if "No matching endpoints" not in text and "BadSecurity" not in text:
        return f"{endpoint} refused the session: {text}"
    sec = who.security
    offered = await offered_security(endpoint, timeout_s)
    hint = ""
    if offered and sec.policy == "None":
        hint = (
            "; give --security POLICY:MODE with --certificate and --private-key "
            "(security.policy, .mode, .certificate and .private_key in a config)"
        )
    return (
        f"security mismatch: {endpoint} offers no endpoint with policy {sec.policy} and mode {sec.mode}; "
        f"it offers {', '.join(offered) or 'nothing this client could read'}{hint}"
    )


async def offered_security(endpoint: str, timeout_s: float) -> list[str]:
    """``policy/mode`` of each endpoint the server lists (GetEndpoints needs no session); empty when
    the list cannot be had."""
    client = Client(endpoint, timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s * 2):
            endpoints = await client.connect_and_get_server_endpoints()
    except Exception:  # the reason of the first failure is what the user hears
        log.debug("GetEndpoints of %s failed", endpoint, exc_info=True)
        return []
    seen = []
    for e in endpoints:
        policy = str(e.SecurityPolicyUri).rpartition("#")[2]
        shown = f"{policy}/{_MODES.get(int(e.SecurityMode), str(e.SecurityMode))}"
        if shown not in seen:
            seen.append(shown)
    return seen


def relative_path(path: BrowsePath) -> ua.RelativePath:
    return ua.RelativePath(
        Elements=[
            ua.RelativePathElement(
                ReferenceTypeId=HIERARCHICAL,
                IsInverse=False,  # type: ignore[arg-type]  # asyncua's Boolean marker class
                IncludeSubtypes=True,  # type: ignore[arg-type]
                TargetName=ua.QualifiedName(name, ns),
            )
            for ns, name in path
        ]
    )


def status_name(status: ua.StatusCode) -> str:
    try:
        return str(status.name)
    except Exception:
        return f"0x{status.value:08X}"


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300] if str(exc) else text


async def quietly(coro: Any) -> None:
    """Tear down without waiting on a dead server for long, and without raising."""
    try:
        async with asyncio.timeout(2):
            await coro
    except Exception:
        log.debug("teardown step failed", exc_info=True)
