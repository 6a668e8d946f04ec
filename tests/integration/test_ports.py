"""A taken ops port stops the agent and the solver worker at start, exit 1, with a message naming the
address and the config key (it was a log line, and the process went on without its endpoint)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.core.errors import ListenError
from qxedge.core.ops_config import OpsConfig
from qxedge.core.ops_server import OpsServer, check_listen, process_registry
from qxedge.testing import EDGE_YAML

pytestmark = pytest.mark.integration


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def qxedge(args: list[str], port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QXEDGE_OPS__PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "qxedge.agent.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def said_clearly(run: subprocess.CompletedProcess[str], port: int) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"qxedge: error: cannot listen on 127.0.0.1:{port} "), run.stderr
    assert "ops.port" in last and "QXEDGE_OPS__PORT" in last, last
    assert "Traceback" not in run.stderr


def test_the_agent_exits_1_naming_the_taken_port(taken: int, broker: EmbeddedBroker) -> None:
    run = qxedge(["run", "--config", str(EDGE_YAML), "--broker", broker.url], taken)
    said_clearly(run, taken)


def test_the_solver_worker_exits_1_before_its_warm_up(taken: int, broker: EmbeddedBroker) -> None:
    run = qxedge(["solver", "--broker", broker.url], taken)
    said_clearly(run, taken)
    assert "warm" not in run.stderr.lower(), run.stderr


async def test_the_ops_server_raises_on_a_taken_port(taken: int) -> None:
    config = OpsConfig(port=taken)
    with pytest.raises(ListenError, match=f"127.0.0.1:{taken}"):
        check_listen(config)
    with pytest.raises(ListenError, match=r"ops\.port"):
        async with OpsServer(config, process_registry(), lambda: None):
            pass
    async with OpsServer(OpsConfig(port=0), process_registry(), lambda: None) as ops:
        check_listen(OpsConfig(port=0))  # 0: a free port, nothing to check
        assert ops.port != 0
