"""Shared fixtures: a private MQTT broker per test and independent MQTT clients to watch it. The helpers
themselves live in ``qxedge.testing`` (benches use them too); they are re-exported here for old imports."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.core.state import use_state_dir
from qxedge.hybrid.ledger import LedgerConfig
from qxedge.testing import (
    EDGE_YAML,
    ROOT,
    Watcher,
    edge_config,
    optimum,
    random_bqm,
    sample_energy,
    wait_until,
)
from qxedge.testing.brokers import RabbitNode, rabbitmq_available
from qxedge.testing.postgres import PostgresServer

__all__ = [
    "EDGE_YAML",
    "ROOT",
    "Watcher",
    "edge_config",
    "optimum",
    "random_bqm",
    "sample_energy",
    "wait_until",
]


INTEGRATION = Path(__file__).parent / "integration"
SERVER_FIXTURES = {"broker", "watch", "postgres", "pg_ledger", "rabbit"}  # fixtures that start a real server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/, and every test anywhere that asks for a real broker, is an
    integration test: ``-m "not integration"`` leaves the unit tests alone even if a marker was missed."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(INTEGRATION) or uses & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit logs and other state of every test go to its own folder, never to the user's (nor to the
    state_dir a config loaded by an earlier test chose)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    use_state_dir(None)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A mosquitto of our own on a free port (amqtt where mosquitto is not installed)."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def watch(broker: EmbeddedBroker) -> Iterator[Callable[..., Watcher]]:
    """``watch(*topics)``: a Watcher on the test's broker, closed after the test."""
    made: list[Watcher] = []

    def make(*topics: str) -> Watcher:
        w = Watcher(broker.url, *topics)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of our own on a free port, for the whole run (each test takes a database
    of its own: ``pg_ledger``)."""
    with PostgresServer() as pg:
        yield pg


_databases = itertools.count()


@pytest.fixture
def pg_ledger(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> LedgerConfig:
    """A PostgreSQL ledger config on a fresh database, its password in ``$QXEDGE_LEDGER_PASSWORD``."""
    monkeypatch.setenv("QXEDGE_LEDGER_PASSWORD", postgres.password)
    return LedgerConfig(kind="postgres", dsn=postgres.database(f"ledger_{next(_databases)}"))


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitNode]:
    """A RabbitMQ node of our own (rabbitmq_mqtt on), started once for the whole run: it takes seconds to
    boot. Tests keep apart by their own queues, users and sites."""
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server (.ci/run installs it)")
    with RabbitNode() as node:
        yield node
