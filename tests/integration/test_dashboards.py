"""The Grafana dashboards against a real Prometheus scraping a running agent and solver worker: every
query of every panel returns data (Debian: ``apt-get install prometheus``; skipped without it)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing import ROOT, Watcher, edge_config, random_bqm, wait_until

from .test_offload import envelope
from .test_ops import metrics_worker

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no prometheus binary (Debian: apt-get install prometheus)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def result(port: int, query: str) -> list[Any]:
    """The series a PromQL ``query`` returns now (none while Prometheus is not up yet)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            found: list[Any] = json.load(answer)["data"]["result"]
            return found
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 422):  # a bad query: Prometheus says why
            raise AssertionError(f"{query}: {exc.read().decode()}") from exc
        return []  # still starting
    except OSError:
        return []


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], int]]:
    """Start Prometheus scraping ``{job: port}`` every second; its API port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> int:
        jobs = [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ]
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
        port = free_port()
        started.append(
            subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "prometheus.log").open("wb"),
            )
        )
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


async def test_every_panel_shows_data(
    broker: EmbeddedBroker,
    watch: Callable[..., Watcher],
    prometheus: Callable[[dict[str, int]], int],
) -> None:
    agent = Agent(edge_config(broker.url))
    solver = metrics_worker(broker.url)
    watcher = watch("qx/v1/gumi/results/+")
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        tasks.create_task(solver.run(stop))
        async with asyncio.timeout(30):
            await agent.ready.wait()
            await solver.ready.wait()
        assert agent.ops is not None and solver.ops is not None
        port = prometheus({"qxedge-agent": agent.ops.port, "qxedge-solver": solver.ops.port})
        for i in range(1, 4):  # activity seen by three scrapes, so that rates have something to show
            await asyncio.to_thread(watcher.publish, "plant/line1/pump1/temp", json.dumps({"value": 70 + i}))
            await asyncio.to_thread(watcher.publish, "plant/line1/pump1/temp", b"{not json")
            job = envelope("gumi", random_bqm(6, 0.5, i))
            await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", job)
            for scraped in ("qxedge_readings_total", "qxedge_solver_jobs_total"):
                assert await wait_until(lambda q=f"{scraped} == {i}": bool(result(port, q)), 30), scraped
        empty: dict[str, str] = {}
        for board, variable, value in (
            ("qxedge-agent", "site", agent.site),
            ("qxedge-solver", "worker", solver.worker_id),
        ):
            spec = json.loads((ROOT / "configs" / "grafana" / f"{board}.json").read_text())
            for panel in spec["panels"]:
                for target in panel["targets"]:
                    expr = target["expr"].replace(f"${variable}", value)
                    if not await wait_until(lambda expr=expr: bool(result(port, expr)), 30):
                        empty[f"{board}: {panel['title']}"] = expr
        stop.set()
    assert not empty, empty
