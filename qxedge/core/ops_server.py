"""The local operations endpoint of a long-running process (the agent, a solver worker):

- ``GET /metrics``: Prometheus text format, from the process's own registry;
- ``GET /healthz``: 200 while the process runs its loops (liveness);
- ``GET /readyz``: 200 when it can do its job (e.g. connected to its broker), 503 with the reason
  otherwise (readiness);
- whatever routes ``extend`` adds to the aiohttp application (the agent's console and ``/status``).

Built on aiohttp (``async with OpsServer(...)``): its router, request parser, static files and
streamed responses serve the console; this module keeps what aiohttp does not do for us, in a thin
protocol in front of each aiohttp connection (:class:`_Guard`):

It never lets clients cost the process its file descriptors: at most ``max_connections`` connections
are served at once. One more takes the place of the oldest connection still waiting for its request,
which is answered ``503`` and closed (so idle connections never lock a health check out); only when
every connection is taking its answer is the new one refused that way. A connection must deliver its
request head within ``read_timeout_s`` (idle and slowloris clients are answered ``408`` and closed),
its head must fit in 8 KiB (else ``431``), and the whole exchange must be over within
``write_timeout_s`` (else it is cut), except for the streams a route holds open (:meth:`OpsServer.hold`,
Server-Sent Events), at most ``streams`` of them. Each connection serves one request (``Connection:
close``): its slot is free again as soon as the answer is sent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import platform
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
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
from qxedge.core.errors import ListenError
from qxedge.core.ops_config import OpsConfig as OpsConfig

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8 * 1024  # a GET needs a few hundred; more is not a scrape
REFUSED_LOG_EVERY_S = 60.0  # refusals are counted; a warning says so at most once a minute
KEEPALIVE_S = 75.0  # aiohttp's own idle limit; the read timeout (below it) answers first


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
    streams: int = 0  # streams held open now (the console's live updates)


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


def raw_response(status: int, body: bytes, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer written by the guard itself (aiohttp never saw the request)."""
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


BUSY = raw_response(503, b"busy: too many connections\n", extra="Retry-After: 1\r\n")
TOO_SLOW = raw_response(408, b"request not received in time\n")
TOO_LONG = raw_response(431, b"request head over 8 KiB\n")

Readiness = Callable[[], str | None]  # None when ready, else why not
Extension = Callable[[web.Application], None]  # adds routes (the agent's console) to the application


def cannot_listen(config: OpsConfig, exc: OSError) -> ListenError:
    where = f"cannot listen on {config.host}:{config.port} for /metrics and /healthz ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"{where}: ops.port {config.port} is taken by another process (another agent or worker?); "
            "set ops.port in the config to a free one (or QXEDGE_OPS__PORT=N; 0 picks one)"
        )
    return ListenError(
        f"{where}: check ops.host and ops.port in the config (QXEDGE_OPS__HOST, QXEDGE_OPS__PORT)"
    )


def check_listen(config: OpsConfig | None) -> None:
    """ListenError now when the ops endpoint of ``config`` could not listen (its port is taken): what
    a process checks before a slow start (a solver worker's warm-up), not to fail only after it."""
    if config is None or config.port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            config.host or None, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server
                probe.bind(address)
    except OSError as exc:
        raise cannot_listen(config, exc) from exc


class OpsServer:
    """``async with OpsServer(config, registry, ready) as ops``: listening on ``ops.port``; ListenError
    when it cannot (the port is taken), and the process stops with it (``qxedge run`` exits 1)."""

    def __init__(
        self,
        config: OpsConfig,
        registry: CollectorRegistry,
        ready: Readiness,
        *,
        extend: Extension | None = None,
        streams: int = 0,
    ) -> None:
        self.config = config
        self.registry = registry
        self.ready = ready
        self.port = config.port
        self.streams = streams  # how many streams routes may hold open at once (hold())
        self.app = web.Application(handler_args={"max_field_size": MAX_HEAD_BYTES})
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        if extend is not None:
            extend(self.app)
        self.app.on_response_prepare.append(_one_request)
        self.app[OPS] = self  # a route reaches its endpoint (hold()) through its request's app
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._open: dict[_Guard, None] = {}  # in the order they came: the oldest first
        self._by_transport: dict[asyncio.BaseTransport, _Guard] = {}
        self._held = 0
        self._peak = self._answered = self._refused = self._timed_out = 0
        self._refused_logged_at = -REFUSED_LOG_EVERY_S

    def stats(self) -> OpsStats:
        return OpsStats(
            len(self._open), self._peak, self._answered, self._refused, self._timed_out, self._held
        )

    async def __aenter__(self) -> OpsServer:
        loop = asyncio.get_running_loop()
        # one task per request, cancelled when its client goes away (a stream ends with its reader)
        runner = self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await runner.setup()
        try:
            self._server = await loop.create_server(
                lambda: _Guard(self), self.config.host, self.config.port, backlog=1024
            )
        except OSError as exc:  # a process that cannot be watched must not run as if it could
            await runner.cleanup()
            raise cannot_listen(self.config, exc) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz", self.config.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            for guard in list(self._open):
                guard.abort()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    def hold(self, request: web.BaseRequest) -> bool:
        """Let ``request``'s connection stay open past ``write_timeout_s`` (a stream of events), if
        fewer than ``streams`` are held now; False (answer 503) otherwise. Writes to a held stream
        should each be bounded by the caller (``asyncio.timeout(config.write_timeout_s)``)."""
        guard = self._by_transport.get(request.transport) if request.transport is not None else None
        if guard is None or self._held >= self.streams:
            return False
        guard.hold()
        self._held += 1
        return True

    def handler(self) -> RequestHandler:
        """The aiohttp protocol that serves an admitted connection."""
        assert self._runner is not None and self._runner.server is not None
        return _Http(
            self._runner.server,
            loop=asyncio.get_running_loop(),
            access_log=None,  # type: ignore[arg-type]  # (aiohttp takes None: no access log)
            keepalive_timeout=KEEPALIVE_S,
            max_field_size=MAX_HEAD_BYTES,
            max_line_size=MAX_HEAD_BYTES,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        why = self.ready()
        return web.Response(text="ready\n") if why is None else web.Response(status=503, text=f"{why}\n")

    # ------------------------------------------------------------------ the guards' bookkeeping
    def admit(self, guard: _Guard) -> bool:
        """Whether a new connection may be served: at the cap it takes the place of the oldest one still
        waiting for its request; it is refused only when every one is taking its answer (each refusal
        is counted, a warning says so now and then)."""
        if len(self._open) >= self.config.max_connections:
            waiting = next((g for g in self._open if not g.headed), None)
            self._count_refusal()
            if waiting is None:
                return False
            waiting.refuse()
        self._open[guard] = None
        assert guard.transport is not None
        self._by_transport[guard.transport] = guard
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

    def release(self, guard: _Guard) -> None:
        if guard not in self._open:
            return
        del self._open[guard]
        if guard.transport is not None:
            self._by_transport.pop(guard.transport, None)
        if guard.held:
            self._held -= 1

    def count_answer(self) -> None:
        self._answered += 1

    def count_timeout(self) -> None:
        self._timed_out += 1


OPS = web.AppKey("qxedge_ops", OpsServer)


async def _one_request(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer closes its connection: a slot is never kept by an idle keep-alive client."""
    response.force_close()


class _Http(RequestHandler):
    """aiohttp's protocol, with a client's malformed request answered 400 and logged in one line at
    debug level (anyone can send one: no traceback, no error log); a bug in a route still logs one."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            log.debug("bad request from %s: %s", request.remote, exc)
            response = web.Response(status=status, text=f"{HTTPStatus(status).phrase}: {exc.message}\n")
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)


class _Guard(asyncio.Protocol):
    """One client, in front of aiohttp: admission at the cap, the request head read here under a
    deadline and size limit, then handed to aiohttp whole; the whole exchange under a deadline."""

    def __init__(self, server: OpsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.http: RequestHandler | None = None
        self.head = bytearray()
        self.headed = False  # the request head has arrived (it is being answered)
        self.held = False  # a stream: no deadline on the exchange
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            self.headed = True  # nothing more is read
            transport.write(BUSY)
            transport.close()
            return
        self.http = self.server.handler()
        self.http.connection_made(transport)
        self.timer = asyncio.get_running_loop().call_later(self.server.config.read_timeout_s, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.http is None or self.transport is None or self.transport.is_closing():
            return
        if self.headed:
            self.http.data_received(data)  # a request body
            return
        seen = len(self.head)
        self.head += data
        end = self.head.find(b"\r\n\r\n", max(0, seen - 3))
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._reply(TOO_LONG, counted=True)
            return
        if end > MAX_HEAD_BYTES:
            self._reply(TOO_LONG, counted=True)
            return
        self.headed = True
        self.server.count_answer()
        self._rearm(self.server.config.write_timeout_s, self._cut)
        whole, self.head = bytes(self.head), bytearray()
        self.http.data_received(whole)

    def eof_received(self) -> bool | None:
        if not self.headed:
            self.abort()  # the client gave up before a whole request
        elif self.http is not None:
            self.http.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.server.release(self)
        if self.http is not None:
            self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.http is not None:
            self.http.pause_writing()

    def resume_writing(self) -> None:
        if self.http is not None:
            self.http.resume_writing()

    def hold(self) -> None:
        self.held = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def refuse(self) -> None:
        """Made way for a newer connection: answered 503 unread and closed."""
        self.server.release(self)
        self._reply(BUSY, counted=False)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _reply(self, payload: bytes, *, counted: bool) -> None:
        """Answer without aiohttp (it has not seen the request) and close; cut if not taken in time."""
        assert self.transport is not None
        self.headed = True  # nothing more is read
        if counted:
            self.server.count_answer()
        self.transport.write(payload)
        self.transport.close()
        self._rearm(self.server.config.write_timeout_s, self.abort)

    def _rearm(self, delay: float, then: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(delay, then)

    def _too_slow(self) -> None:
        self.server.count_timeout()
        self._reply(TOO_SLOW, counted=False)

    def _cut(self) -> None:
        self.server.count_timeout()
        self.abort()
