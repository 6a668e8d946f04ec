"""The ops endpoint under a flood of idle and slow connections: it keeps its file descriptors, answers
a new client once the idle ones are gone, and logs no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from qxedge.core.ops_server import OpsConfig, OpsServer
from qxedge.testing import wait_until

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def drip(writer: asyncio.StreamWriter) -> None:
    """A slowloris: the request head one byte at a time, never finished."""
    with contextlib.suppress(ConnectionError):
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)


async def test_connections_over_the_cap_make_way_idle_ones_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cap, clients = 8, 40
    config = OpsConfig(port=0, max_connections=cap, read_timeout_s=3)
    before = open_fds()
    async with OpsServer(config, CollectorRegistry(), lambda: None) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(clients)]
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", server.port)
        dripping = asyncio.create_task(drip(slow_writer))
        # every connection is accepted and then held (at most cap at once), made way for, or timed out
        accepted = clients + 1
        assert await wait_until(
            lambda: server.stats().open + server.stats().refused + server.stats().timed_out == accepted
        )
        # the descriptors: the clients' own sockets, what the server holds (at most cap), the listener
        assert await wait_until(lambda: open_fds() <= before + accepted + cap + 1)
        answers = await asyncio.gather(*(reader.read() for reader, _ in idle))
        assert (await slow_reader.read()).startswith(b"HTTP/1.1 408 ")  # trickling does not keep it open
        dripping.cancel()
        for _, writer in [*idle, (slow_reader, slow_writer)]:
            writer.close()
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        reaped = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert refused + reaped == answers and len(refused) == accepted - cap  # the oldest made way
        stats = server.stats()
        assert stats.peak <= cap and stats.refused == len(refused) and stats.timed_out == len(reaped) + 1
        assert await asyncio.to_thread(get, server.port, "/healthz") == (200, "ok\n")
        assert await wait_until(lambda: server.stats().open == 0)
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"ops endpoint busy: {cap} connections open (max_connections); 1 refused so far"
    ]


async def test_bad_requests_get_an_answer_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async with OpsServer(OpsConfig(port=0), CollectorRegistry(), lambda: "not connected") as server:
        for request, status in (
            (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
            (b"BREW /pot HTTP/1.1\r\n\r\n", b"400"),  # not an HTTP method: the parser refuses it
            (b"\xff\xfe\r\n\r\n", b"400"),
            (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", b"503"),
            (b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
            (b"GET /metrics HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 requires Host (RFC 9112)
            (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, b"431"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            answer = await reader.read()
            writer.close()
            assert answer.split(b" ", 2)[1] == status, (request[:20], answer[:80])
        assert await wait_until(lambda: server.stats().open == 0)
        assert server.stats().answered == 7
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_new_client_is_served_while_idle_connections_fill_the_cap() -> None:
    """Idle connections must not lock health checks out: a new client takes the place of the oldest
    connection that has not sent its request (issue 25: 1,100 idle connections, /healthz refused 503)."""
    cap = 4
    config = OpsConfig(port=0, max_connections=cap, read_timeout_s=60)  # idle ones are not reaped here
    async with OpsServer(config, CollectorRegistry(), lambda: None) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3 * cap)]
        assert await wait_until(lambda: server.stats().open + server.stats().refused == 3 * cap)
        assert server.stats().open == cap
        for _ in range(3):
            assert await asyncio.to_thread(get, server.port, "/healthz") == (200, "ok\n")
        answers = await asyncio.gather(*(reader.read() for reader, _ in idle[: 2 * cap + 1]))
        assert all(a.startswith(b"HTTP/1.1 503 ") for a in answers)  # the oldest idle ones made way
        for _, writer in idle:
            writer.close()
        assert server.stats().peak <= cap
