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

from .conftest import wait_until

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def trickle(port: int) -> bytes:
    """A slowloris: the request head one byte at a time, never finished; what the server answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sender = asyncio.create_task(_drip(writer))
    try:
        return await reader.read()
    finally:
        sender.cancel()
        writer.close()


async def _drip(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)


async def test_connections_over_the_cap_are_refused_idle_ones_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cap, clients = 8, 40
    config = OpsConfig(port=0, max_connections=cap, read_timeout_s=3)
    before = open_fds()
    async with OpsServer(config, CollectorRegistry(), lambda: None) as server:
        slow = asyncio.create_task(trickle(server.port))
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(clients)]
        # every connection is accepted and either held or refused at once: the server holds <= cap
        assert await wait_until(lambda: server.stats().open + server.stats().refused == clients + 1)
        assert server.stats().open == cap
        assert open_fds() <= before + clients + 1 + cap + 2  # the clients' own sockets, the listener...
        answers = await asyncio.gather(*(reader.read() for reader, _ in idle))
        assert (await slow).startswith(b"HTTP/1.1 408 ")  # trickling bytes does not keep it open
        for _, writer in idle:
            writer.close()
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        reaped = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert len(refused) + len(reaped) == clients and len(refused) >= clients + 1 - cap
        stats = server.stats()
        assert stats.peak == cap and stats.refused == len(refused) and stats.timed_out == len(reaped) + 1
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
            (b"BREW /pot HTTP/1.1\r\n\r\n", b"405"),
            (b"\xff\xfe\r\n\r\n", b"400"),
            (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", b"503"),
            (b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", b"200"),
            (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, b"431"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            answer = await reader.read()
            writer.close()
            assert answer.split(b" ", 2)[1] == status, (request[:20], answer[:80])
        assert server.stats().open == 0 or await wait_until(lambda: server.stats().open == 0)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
