"""Client ids bound to usernames on RabbitMQ: the HTTP service behind ``rabbitmq_auth_backend_http``
(``qxedge rabbitmq-auth``).

RabbitMQ 3.x registers an MQTT client id once for the whole cluster, whoever the user, and a new
connection with a client id in use closes the old one: a site connecting with another site's client id
(``qxedge-uplink-<site>``) kicks that site off. The plugin makes one check with the client id before
that: the login's authorisation. With ``configs/rabbitmq/advanced.config`` (authentication by the
internal database, authorisation by the internal database *and* the HTTP backend: every backend must
allow) RabbitMQ asks this service at each login, with the username and (MQTT only) the client id, and
it answers ``deny`` when the client id is not one of the user's own. Every other question (vhost,
resource, topic) it answers ``allow``: the internal permissions (``configs/rabbitmq/setup.sh``) decide.

A user's own client ids: ``client_id`` (a regular expression, ``{user}`` standing for the username)
matched whole, ``qxedge-<role>-<site>[-<8 hex>]`` by default, which is what an agent uses
(``qxedge-uplink-<site>``) and, with a role of letters only, cannot name another site's id. Users in
``trusted`` (the workers) may use any client id; a login without a client id (AMQP) is allowed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from qxedge.connectors.mqtt.config import SESSION_SUFFIX
from qxedge.core.errors import ListenError

__all__ = ["DEFAULT_CLIENT_ID", "ClientIdPolicy", "serve"]

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = r"qxedge-[a-z]+-{user}(-[0-9a-f]{8})?"


@dataclass(frozen=True)
class ClientIdPolicy:
    """Which client ids a user may connect with (see the module's docstring)."""

    client_id: str = DEFAULT_CLIENT_ID
    trusted: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if "{user}" not in self.client_id:
            raise ValueError(f"client id pattern {self.client_id!r} does not contain {{user}}")
        try:  # a bad expression fails here, not at a login
            re.compile(self.client_id.replace("{user}", "user"))
        except re.error as exc:
            raise ValueError(f"client id pattern {self.client_id!r}: {exc}") from None

    def allows(self, username: str, client_id: str | None) -> bool:
        if client_id is None or username in self.trusted:
            return True
        if self.client_id == DEFAULT_CLIENT_ID and SESSION_SUFFIX.search(username):
            return False  # user osan-0123abcd's ids would be user osan's with a session suffix
        pattern = self.client_id.replace("{user}", re.escape(username))
        return re.fullmatch(pattern, client_id) is not None


def app(policy: ClientIdPolicy) -> web.Application:
    """The routes of ``rabbitmq_auth_backend_http`` (``auth_http.*_path``), GET or POST."""

    async def params(request: web.Request) -> Mapping[str, str]:
        if request.method == "POST":
            return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        return request.query

    async def user(request: web.Request) -> web.Response:
        query = await params(request)
        username, client_id = query.get("username", ""), query.get("client_id")
        if policy.allows(username, client_id):
            return web.Response(text="allow")
        log.warning("refused a login of %r with client id %r: not one of its own", username, client_id)
        return web.Response(text="deny")

    async def allow(request: web.Request) -> web.Response:
        return web.Response(text="allow")  # the internal backend's permissions decide

    application = web.Application()
    application.router.add_route("*", "/auth/user", user)
    for path in ("/auth/vhost", "/auth/resource", "/auth/topic"):
        application.router.add_route("*", path, allow)
    return application


async def serve(policy: ClientIdPolicy, host: str, port: int, stop: asyncio.Event) -> None:
    """Answer RabbitMQ on ``host:port`` until ``stop`` is set."""
    runner = web.AppRunner(app(policy), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ListenError(
                f"qxedge rabbitmq-auth cannot listen on {host}:{port} ({exc.strerror or exc}): "
                "is another one running? (--listen HOST:PORT)"
            ) from exc
        log.info("client ids bound to usernames: answering RabbitMQ on %s:%d", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
