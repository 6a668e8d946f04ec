"""A live plant for the console's browser tests and screenshots: a private broker, the simulated plant
and an agent with its ops endpoint (and console) on a free port, run on an event loop in a thread.

``with LivePlant(token=TOKEN) as plant: plant.url`` is the console's address; ``plant.call(coro)``
runs a coroutine on the plant's loop (to read the agent's state as the loop sees it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.testing.configs import edge_config

T = TypeVar("T")


class LivePlant:
    def __init__(self, *, token: str | None = None, planning: bool = False, **env: str) -> None:
        self.token = token
        self.planning = planning
        self.env = env
        self.broker = EmbeddedBroker()
        self._state = tempfile.TemporaryDirectory(prefix="qxedge-console-")  # its audit log and outbox
        self.agent: Agent | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-plant", daemon=True)
        self._stop: asyncio.Event | None = None
        self._main: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> LivePlant:
        self.broker.__enter__()
        self._thread.start()
        state = Path(self._state.name)
        env = {
            "safety__audit__path": str(state / "audit.sqlite"),
            "outbox__path": str(state / "outbox.sqlite"),
        }
        env.update(self.env)
        if self.token is not None:
            env["ops__console_token"] = self.token
        cfg = edge_config(self.broker.url, planning=self.planning, **env)
        self.agent = Agent(cfg)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._main = asyncio.run_coroutine_threadsafe(self._run(cfg, started), self._loop)
        started.result(timeout=60)
        assert self.agent.ops is not None
        self.url = f"http://127.0.0.1:{self.agent.ops.port}"
        return self

    async def _run(self, cfg: Any, started: concurrent.futures.Future[None]) -> None:
        assert self.agent is not None and cfg.simulator is not None
        self._stop = asyncio.Event()
        try:
            async with (
                asyncio.TaskGroup() as tasks,
                SimulatedPlant(cfg.simulator, cfg.broker, cfg.site) as sim,
            ):
                tasks.create_task(self.agent.run(self._stop), name="agent")
                async with asyncio.timeout(30):
                    await self.agent.ready.wait()
                simulate = tasks.create_task(sim.run(), name="simulator")
                started.set_result(None)
                await self._stop.wait()
                simulate.cancel()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def call(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._main is not None:
            try:
                self._main.result(timeout=30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
                self._loop.close()
                self.broker.__exit__(None, None, None)
                self._state.cleanup()


def chromium_missing() -> str | None:
    """Why headless Chromium cannot be driven here (None when it can): Debian's chromium and
    chromium-driver, and the selenium package (the dev extra)."""
    import importlib.util
    import shutil

    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        names = " and ".join(missing)
        return f"{names} not installed (Debian packages chromium, chromium-driver; .ci/run installs them)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (the dev extra)"
    return None


def chromium(width: int = 1280, height: int = 860) -> Any:
    """A headless Chromium driven by Selenium, with the system's browser and driver (nothing is
    downloaded: Selenium Manager is told to stay offline)."""
    import os
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(options=options, service=service)
