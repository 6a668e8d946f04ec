"""Waits on conditions, for tests and benches: never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(predicate: Callable[[], bool], within_s: float = 20) -> bool:
    """Poll ``predicate`` every 10 ms; whether it held within ``within_s``."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def wait_until_sync(predicate: Callable[[], bool], within_s: float = 20) -> bool:
    """``wait_until`` for code outside an event loop (threads, subprocess harnesses)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
