"""The local operations endpoint of a long-running process (the agent, a solver worker):

- ``GET /metrics``: Prometheus text format, from the process's own registry;
- ``GET /healthz``: 200 while the process runs its loops (liveness);
- ``GET /readyz``: 200 when it can do its job (e.g. connected to its broker), 503 with the reason
  otherwise (readiness).

A tiny HTTP/1.1 server on the event loop (``asyncio.start_server``), no thread and no framework:
three read-only GETs do not need one. Use ``async with OpsServer(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class OpsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape it")
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


Readiness = Callable[[], str | None]  # None when ready, else why not


class OpsServer:
    def __init__(self, config: OpsConfig, registry: CollectorRegistry, ready: Readiness) -> None:
        self.config = config
        self.registry = registry
        self.ready = ready
        self.port = config.port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> OpsServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.config.host, self.config.port)
        except OSError as exc:  # metrics are worth a warning, never the process
            log.error(
                "no metrics/health endpoint: cannot listen on %s:%d (%s)",
                self.config.host,
                self.config.port,
                exc.strerror or exc,
            )
            return self
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz", self.config.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            why = self.ready()
            return (
                (200, "text/plain", b"ready\n") if why is None else (503, "text/plain", f"{why}\n".encode())
            )
        return 404, "text/plain", b"not found: /metrics, /healthz, /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, kind, body = (
                (405, "text/plain", b"GET only\n")
                if method != "GET"
                else self._respond(path.split("?", 1)[0])
            )
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[
                status
            ]
            allow = "Allow: GET\r\n" if status == 405 else ""
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                f"{allow}Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            async with asyncio.timeout(5):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            writer.transport.abort()  # a bad or slow client gets nothing; the process carries on
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await writer.wait_closed()
