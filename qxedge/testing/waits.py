"""Waits on conditions, for tests and benches: never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within_s: float = 20, every_s: float = 0.01
) -> bool:
    """Poll ``predicate`` (a plain or an async function) every ``every_s``; whether it held within
    ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every_s)


def wait_until_sync(predicate: Callable[[], bool], within_s: float = 20) -> bool:
    """``wait_until`` for code outside an event loop (threads, subprocess harnesses)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
