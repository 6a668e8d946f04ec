"""The local operations endpoint of a long-running process (the agent, a solver worker):

- ``GET /metrics``: Prometheus text format, from the process's own registry;
- ``GET /healthz``: 200 while the process runs its loops (liveness);
- ``GET /readyz``: 200 when it can do its job (e.g. connected to its broker), 503 with the reason
  otherwise (readiness).

A tiny HTTP/1.1 server on the event loop (an :class:`asyncio.Protocol`: no thread, no task per
connection, no framework: three read-only GETs do not need one). Use ``async with OpsServer(...)``.

It never lets clients cost the process its file descriptors: at most ``max_connections`` connections
are served at once. One more takes the place of the oldest connection still waiting for its request,
which is answered ``503`` and closed (so idle connections never lock a health check out); only when
every connection is taking its answer is the new one refused that way. A connection must deliver its
request head within ``read_timeout_s`` (idle and slowloris clients are answered ``408`` and closed) and
take its answer within ``write_timeout_s`` (else it is cut).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from qxedge import __version__
from qxedge.core.ops_config import OpsConfig as OpsConfig

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8 * 1024  # a GET needs a few hundred; more is not a scrape
REFUSED_LOG_EVERY_S = 60.0  # refusals are counted; a warning says so at most once a minute
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


Readiness = Callable[[], str | None]  # None when ready, else why not


def process_registry() -> CollectorRegistry:
    """A registry with prometheus_client's collectors of the process: ``process_*`` (CPU seconds,
    resident memory, open and maximum file descriptors, start time), ``python_info`` and
    ``python_gc_*``."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def build_info(label: str, value: str) -> InfoMetricFamily:
    """``qxedge_build_info{<label>=<value>, version=..., python=...} 1``: which qxedge runs where; its
    ``site`` or ``worker`` label lets a dashboard join the ``process_*`` metrics to it."""
    family = InfoMetricFamily("qxedge_build", "the qxedge version and the Python running it", labels=[label])
    family.add_metric([value], {"version": __version__, "python": platform.python_version()})
    return family


@dataclass(frozen=True, slots=True)
class OpsStats:
    """The endpoint's connections so far (``OpsServer.stats()``)."""

    open: int  # connections being served now
    peak: int  # the most served at once
    answered: int  # requests answered (any status, 408 and the 503 of a refusal aside)
    refused: int  # connections over max_connections (the new one or the oldest waiting), answered 503 unread
    timed_out: int  # connections closed for not sending their request or not taking their answer in time


def ops_metrics(stats: OpsStats, label: str, value: str) -> Iterator[Metric]:
    """The endpoint's own metrics: ``qxedge_ops_connections_total{event}`` (answered, refused,
    timed_out) and ``qxedge_ops_connections_open``, labelled ``<label>=<value>``."""
    events = CounterMetricFamily(
        "qxedge_ops_connections",
        "connections to /metrics, /healthz, /readyz by outcome",
        labels=[label, "event"],
    )
    for event, n in (
        ("answered", stats.answered),
        ("refused", stats.refused),
        ("timed_out", stats.timed_out),
    ):
        events.add_metric([value, event], n)
    yield events
    served = GaugeMetricFamily("qxedge_ops_connections_open", "connections being served now", labels=[label])
    served.add_metric([value], stats.open)
    yield served


def response(status: int, body: bytes, kind: str = "text/plain", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + body


BUSY = response(503, b"busy: too many connections\n", extra="Retry-After: 1\r\n")
TOO_SLOW = response(408, b"request not received in time\n")


class OpsServer:
    def __init__(self, config: OpsConfig, registry: CollectorRegistry, ready: Readiness) -> None:
        self.config = config
        self.registry = registry
        self.ready = ready
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._open: dict[_Connection, None] = {}  # in the order they came: the oldest first
        self._peak = self._answered = self._refused = self._timed_out = 0
        self._refused_logged_at = -REFUSED_LOG_EVERY_S

    def stats(self) -> OpsStats:
        return OpsStats(len(self._open), self._peak, self._answered, self._refused, self._timed_out)

    async def __aenter__(self) -> OpsServer:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.config.host, self.config.port, backlog=1024
            )
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
            for connection in list(self._open):
                connection.abort()
            await self._server.wait_closed()

    def answer(self, head: bytes) -> bytes:
        """The whole response to one request head (request line and headers, no body)."""
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return response(400, b"not an HTTP/1.1 request line\n")
        if method != "GET":
            return response(405, b"GET only\n", extra="Allow: GET\r\n")
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return response(200, b"ok\n")
        if path == "/readyz":
            why = self.ready()
            return response(200, b"ready\n") if why is None else response(503, f"{why}\n".encode())
        return response(404, b"not found: /metrics, /healthz, /readyz\n")

    def admit(self, connection: _Connection) -> bool:
        """Whether a new connection may be served: at the cap it takes the place of the oldest one still
        waiting for its request; it is refused only when every one is taking its answer (each refusal
        is counted, a warning says so now and then)."""
        if len(self._open) >= self.config.max_connections:
            waiting = next((c for c in self._open if not c.answered), None)
            self._count_refusal()
            if waiting is None:
                return False
            waiting.refuse()
        self._open[connection] = None
        self._peak = max(self._peak, len(self._open))
        return True

    def _count_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_EVERY_S:
            self._refused_logged_at = now
            log.warning(
                "ops endpoint busy: %d connections open (max_connections); %d refused so far",
                len(self._open),
                self._refused,
            )

    def release(self, connection: _Connection) -> None:
        self._open.pop(connection, None)

    def count_answer(self) -> None:
        self._answered += 1

    def count_timeout(self) -> None:
        self._timed_out += 1


class _Connection(asyncio.Protocol):
    """One client: read the request head under a deadline, answer, close."""

    def __init__(self, server: OpsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            self.refuse()
            return
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.server.config.read_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.answered or self.transport is None or self.transport.is_closing():
            return  # a body or pipelined requests: not read, the connection closes after the answer
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._send(response(431, b"request head over 8 KiB\n"))
            return
        self._send(self.server.answer(bytes(self.head[:end])))

    def eof_received(self) -> bool | None:
        if not self.answered:
            self.abort()  # the client gave up before a whole request
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.server.release(self)

    def refuse(self) -> None:
        """Answer 503 unread and close (a few bytes into an empty socket buffer: never blocks)."""
        assert self.transport is not None
        self.answered = True  # nothing more is read
        if self.timer is not None:
            self.timer.cancel()
        self.server.release(self)
        self.transport.write(BUSY)
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None and self.timer is not None
        self.answered = True
        self.server.count_answer()
        self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.server.config.write_timeout_s, self._cut)
        self.transport.write(payload)
        self.transport.close()  # after the buffer drains; _cut if the client does not take it

    def _too_slow(self) -> None:
        self.server.count_timeout()
        assert self.transport is not None
        self.transport.write(TOO_SLOW)
        self.transport.close()
        self.timer = asyncio.get_running_loop().call_later(self.server.config.write_timeout_s, self.abort)

    def _cut(self) -> None:
        self.server.count_timeout()
        self.abort()
