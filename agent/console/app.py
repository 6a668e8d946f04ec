"""``Console``: the agent's web console and ``/status``, as routes of its ops endpoint (aiohttp).

Read-only routes (anyone who reaches the endpoint; bind it to loopback or put it behind a proxy):

- ``GET /``, ``GET /static/{name}``: the page and its script and style (package data, no CDN);
- ``GET /status``: the status document (:mod:`qxedge.agent.console.snapshot`);
- ``GET /events``: the same document as Server-Sent Events, after every evaluation (at most two a
  second), with a comment every 15 s while nothing changes; at most ``ops.max_streams`` at once;
- ``GET /api/assets/{asset}``: the asset's history for the plots (``[[ts, {metric: value}], ...]``);
- ``GET /api/audit?asset=&kind=&text=&since=&limit=``: the audit trail, newest last.

One that changes something: ``POST /api/locks/{asset}`` with ``{"locked": true|false, "by": "<name>",
"reason": "..."}`` and ``Authorization: Bearer <ops.console_token>`` (compared in constant time). The
lock goes the way every operator lock goes: a retained message on ``qx/v1/{site}/lock/{asset}``
(``{"locked": ..., "by": "console:<name>", "reason": ...}``), which the agent's lock subscription
applies and audits; the console audits the request first (``lock`` / ``requested``, with the name,
the reason and the client's address) and answers once the lock is in force. Without a token
configured every such request is refused ``403``; with a wrong or missing one ``401`` (audited).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qxedge.agent.audit import query
from qxedge.agent.console.live import LiveView
from qxedge.agent.console.snapshot import status
from qxedge.core.errors import AuditError
from qxedge.core.ops_server import OPS

if TYPE_CHECKING:
    from qxedge.agent.pipeline import Agent

log = logging.getLogger(__name__)

STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
HEADERS = {  # the page loads nothing from elsewhere and runs no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
EVENT_GAP_S = 0.5  # at most two updates a second per stream
PING_S = 15.0
LOCK_WAIT_S = 5.0  # the lock must be in force within this (it goes through the plant broker)
AUDIT_LIMIT = 500
_ASSET = re.compile(r"[^\s/+#*?\[\]]+(?:/[^\s/+#*?\[\]]+)*")  # levels, no empty one, no wildcards
_NAME = re.compile(r"[\w .@:-]{1,60}")


class Console:
    """Routes of the agent's ops endpoint; ``live`` is an evaluation observer of the agent."""

    def __init__(self, agent: Agent) -> None:
        ops = agent.config.ops
        assert ops is not None
        self.agent = agent
        self.config = ops
        self.live = LiveView(ops.history_s, agent.config.window.every_s)
        self.started_at = time.time()
        base = files("qxedge.agent.console") / "static"
        self._page = (base / "index.html").read_bytes()
        self._static = {name: (base / name).read_bytes() for name in STATIC}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/status", self._status)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/assets/{asset:.+}", self._series)
        app.router.add_get("/api/audit", self._audit)
        app.router.add_post("/api/locks/{asset:.+}", self._lock)

    def status(self) -> dict[str, Any]:
        doc = status(self.agent, self.live, self.started_at)
        doc["console"] = {"locks": self.config.console_token is not None}
        return doc

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8", headers=HEADERS)

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound(text=f"no static file {name!r}\n")
        return web.Response(body=self._static[name], content_type=STATIC[name], headers=HEADERS)

    async def _status(self, request: web.Request) -> web.Response:
        return _json(self.status())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not request.app[OPS].hold(request):
            raise web.HTTPServiceUnavailable(
                text=f"too many live views open (ops.max_streams = {self.config.max_streams})\n",
                headers={"Retry-After": "5"},
            )
        stream = web.StreamResponse(
            headers={**HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await stream.prepare(request)
        limit = self.config.write_timeout_s
        try:
            while True:
                data = json.dumps(self.status(), separators=(",", ":"))
                async with asyncio.timeout(limit):  # a reader that stops reading is cut
                    await stream.write(f"event: status\ndata: {data}\n\n".encode())
                await asyncio.sleep(EVENT_GAP_S)  # updates in between are coalesced into the next
                while not await self.live.changed(PING_S):
                    async with asyncio.timeout(limit):
                        await stream.write(b": ping\n\n")
        except (TimeoutError, ConnectionError):
            pass  # the reader went away or stopped reading
        return stream

    async def _series(self, request: web.Request) -> web.Response:
        asset = request.match_info["asset"]
        known = self.live.latest.get(asset)
        if known is None:
            raise web.HTTPNotFound(text=f"no readings or scores of {asset!r} yet\n")
        doc: dict[str, Any] = {
            "asset": asset,
            "history_s": self.live.history_s,
            "points": [[ts, dict(metrics)] for ts, metrics in self.live.series(asset)],
            "thresholds": next((a["thresholds"] for a in self.status()["assets"] if a["asset"] == asset), {}),
        }
        return _json(doc)

    async def _audit(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "100"))
            since = float(q["since"]) if q.get("since") else None
        except ValueError:
            raise web.HTTPBadRequest(text="limit: a whole number; since: epoch seconds\n") from None
        if not 1 <= limit <= AUDIT_LIMIT:
            raise web.HTTPBadRequest(text=f"limit: 1..{AUDIT_LIMIT}\n")
        gate = self.agent.gate
        if gate is None:
            raise web.HTTPServiceUnavailable(text="the audit log is not open yet\n")
        try:
            rows = await asyncio.to_thread(
                query,
                gate.audit.path,
                asset=q.get("asset") or None,
                kind=q.get("kind") or None,
                text=(q.get("text") or "")[:200] or None,
                since=since,
                limit=limit,
            )
        except AuditError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
        return _json({"path": str(gate.audit.path), "rows": rows})

    async def _lock(self, request: web.Request) -> web.Response:
        asset = request.match_info["asset"]
        remote = request.remote or "?"
        token = self.config.console_token
        if token is None:
            raise web.HTTPForbidden(text="the console is read-only: no ops.console_token is configured\n")
        gate, mqtt = self.agent.gate, self.agent.mqtt
        if gate is None or mqtt is None:
            raise web.HTTPServiceUnavailable(text="the agent is starting\n")
        given = request.headers.get("Authorization", "")
        scheme, _, secret = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            secret.strip().encode(), token.get_secret_value().encode()
        ):
            gate.audit.tally(
                "lock",
                "refused",
                asset=asset[:200],
                source="console",
                reason="no valid console token",
                provenance={"remote": remote},
            )
            raise web.HTTPUnauthorized(
                text="a valid console token is required (Authorization: Bearer <token>)\n",
                headers={"WWW-Authenticate": 'Bearer realm="qxedge console"'},
            )
        try:
            doc = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON: {locked, by, reason}\n") from None
        problem = _lock_problem(asset, doc)
        if problem:
            raise web.HTTPBadRequest(text=f"{problem}\n")
        locked, by, reason = doc["locked"], f"console:{doc['by'].strip()}", str(doc.get("reason") or "")[:200]
        await gate.audit.write(
            "lock",
            "requested",
            asset=asset,
            source="console",
            reason=f"{'lock' if locked else 'unlock'} by {by}" + (f": {reason}" if reason else ""),
            provenance={
                "by": by,
                "remote": remote,
                "user_agent": request.headers.get("User-Agent", "")[:200],
            },
        )
        payload = json.dumps({"locked": locked, "by": by, "reason": reason, "ts": time.time()})
        if not mqtt.publish(gate.topic(f"lock/{asset}"), payload, qos=1, retain=True):
            raise web.HTTPServiceUnavailable(
                text="the plant broker is unreachable: the lock was not sent (while it is away the agent "
                "writes no setpoint at all)\n"
            )
        deadline = time.monotonic() + LOCK_WAIT_S
        while (asset in self.agent.safety.locks) != locked:
            if time.monotonic() > deadline:
                holder = self.agent.safety.locks.get(asset)
                why = f"still locked by {holder}" if holder and not locked else "not in force yet"
                raise web.HTTPConflict(text=f"{asset}: sent, but {why} after {LOCK_WAIT_S:g} s\n")
            await asyncio.sleep(0.02)  # the lock comes back through the broker to the gate
        log.warning(
            "%s %s from the console by %s (%s)", asset, "locked" if locked else "unlocked", by, remote
        )
        return _json({"asset": asset, "locked": locked, "by": by})


def _lock_problem(asset: str, doc: object) -> str:
    if len(asset) > 200 or not _ASSET.fullmatch(asset):
        return f"not an asset name: {asset[:80]!r}"
    if not isinstance(doc, dict):
        return "the body must be a JSON object: {locked, by, reason}"
    if not isinstance(doc.get("locked"), bool):
        return "locked: true or false"
    by = doc.get("by")
    if not isinstance(by, str) or not _NAME.fullmatch(by.strip()):
        return "by: who you are (1-60 letters, digits, spaces, . @ : -)"
    if not isinstance(doc.get("reason", ""), str):
        return "reason: text"
    return ""


def _json(doc: object) -> web.Response:
    return web.Response(
        text=json.dumps(doc, separators=(",", ":")), content_type="application/json", headers=HEADERS
    )
