"""``qxedge check-config --connect``: whether each broker and plant endpoint of a config answers.

Each check runs at once beside the others, bounded by one short timeout: the plant broker and the
uplink (an MQTT CONNECT with the config's credentials and TLS, under a client id of its own, so a
running agent with a fixed ``client_id`` is not thrown off), each ``opcua`` server (a secure channel and
a session with the config's security and identity), each ``modbus`` device (a TCP connection); for a
solver worker, the agents' broker, its job transport (a NATS or AMQP connection with its credentials)
and a PostgreSQL ledger (a connection). Nothing is subscribed, read or written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from qxedge.agent.config import EdgeConfig
from qxedge.connectors.modbus import ModbusDevice
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.opcua import OpcUaConfig
from qxedge.core.config import redact_url
from qxedge.core.errors import QxError

if TYPE_CHECKING:  # the data center's stack: imported only when a worker's config is checked
    from qxedge.hybrid.ledger import LedgerConfig
    from qxedge.hybrid.service import DataCenterConfig
    from qxedge.hybrid.transports.config import TransportConfig

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Reach:
    """One endpoint tried: what (its config path), where, and the error (None: it answered)."""

    what: str
    where: str
    error: str | None
    seconds: float

    def line(self) -> str:
        answer = (
            f"reachable ({self.seconds * 1000:.0f} ms)" if self.error is None else f"FAILED: {self.error}"
        )
        return f"{self.what} {self.where}: {answer}"


Check = tuple[str, str, Callable[[], Awaitable[None]]]


def brokers(named: dict[str, BrokerConfig | None], timeout_s: float) -> list[Check]:
    return [(what, b.url, partial(_mqtt, b, timeout_s)) for what, b in named.items() if b is not None]


def opcua(what: str, cfg: OpcUaConfig, timeout_s: float) -> Check:
    return (what, cfg.endpoint, lambda: _opcua(cfg, timeout_s))


def modbus(what: str, device: ModbusDevice, timeout_s: float) -> Check:
    where = f"modbus://{device.host}:{device.port} unit {device.unit}"
    return (what, where, lambda: _modbus(device, timeout_s))


async def reach_all(checks: list[Check], timeout_s: float) -> list[Reach]:
    """Run every check at once; each ends within about ``timeout_s`` (plus teardown)."""
    return list(await asyncio.gather(*(_one(what, where, probe, timeout_s) for what, where, probe in checks)))


async def _one(what: str, where: str, probe: Callable[[], Awaitable[None]], timeout_s: float) -> Reach:
    started = time.monotonic()
    error: str | None = None
    try:
        async with asyncio.timeout(timeout_s * 3 + 2):  # each probe has its own, shorter bounds
            await probe()
    except TimeoutError:
        error = f"no answer within {timeout_s * 3 + 2:g} s"
    except QxError as exc:
        error = str(exc)
    except Exception as exc:  # a driver's surprise is a failed check, never a traceback
        error = f"{type(exc).__name__}: {exc}"
    return Reach(what, where, error, time.monotonic() - started)


async def _mqtt(broker: BrokerConfig, timeout_s: float) -> None:
    from qxedge.connectors.mqtt import MqttClient

    probe = broker.model_copy(
        update={"client_id": None, "persistent_session": False, "connect_timeout_s": timeout_s}
    )
    # a site's own client id where brokers bind ids to usernames (qxedge-check-<site>-<hex>: RabbitMQ with
    # `qxedge rabbitmq-auth`), never the running agent's
    async with MqttClient(probe, role=f"check-{broker.username}" if broker.username else "check-config"):
        pass


async def _opcua(cfg: OpcUaConfig, timeout_s: float) -> None:
    from qxedge.connectors.opcua import open_session

    async with open_session(cfg.endpoint, cfg, min(timeout_s, cfg.request_timeout_s)):
        pass


async def _modbus(device: ModbusDevice, timeout_s: float) -> None:
    from qxedge.connectors.modbus import DevicePoller, LinkDown
    from qxedge.core.errors import ConnectorError

    poller = DevicePoller(device.model_copy(update={"timeout_s": timeout_s}), "check", (0.5, 1.0))
    try:
        await poller.connect()
    except LinkDown as exc:
        raise ConnectorError(str(exc)) from exc
    finally:
        poller.close()


def edge_checks(cfg: EdgeConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Check]:
    """The agent's endpoints: plant broker, uplink, each OPC UA server and Modbus device."""
    checks = brokers({"broker": cfg.broker, "uplink": cfg.uplink}, timeout_s)
    for i, entry in enumerate(cfg.connectors):
        if entry.opcua is not None:
            checks.append(opcua(f"connectors[{i}].opcua", entry.opcua, timeout_s))
        if entry.modbus is not None:
            for j, device in enumerate(entry.modbus.devices):
                checks.append(modbus(f"connectors[{i}].modbus.devices[{j}]", device, timeout_s))
    return checks


def datacenter_checks(dc: DataCenterConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Check]:
    """A solver worker's endpoints: the agents' broker, its job transport unless that is the broker
    itself (NATS, RabbitMQ), and its ledger when that is a PostgreSQL server."""
    checks = brokers({"broker": dc.broker}, timeout_s)
    if dc.transport.kind != "mqtt":
        where = redact_url(dc.transport.url or "")
        checks.append(
            (f"transport ({dc.transport.kind})", where, partial(_transport, dc.transport, timeout_s))
        )
    if dc.ledger.kind == "postgres":
        checks.append(("ledger", dc.ledger.where(), partial(_ledger, dc.ledger)))
    return checks


async def _transport(cfg: TransportConfig, timeout_s: float) -> None:
    if cfg.kind == "nats":
        import nats

        async def quiet(_exc: Exception) -> None:  # the failure is this check's line, not a traceback
            return None

        nc = await nats.connect(
            cfg.servers,
            error_cb=quiet,
            user=cfg.username,
            password=cfg.secret,
            name="qxedge-check-config",
            connect_timeout=timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        await nc.close()
        return
    import aio_pika

    connection = await aio_pika.connect(cfg.amqp_url(), timeout=timeout_s)
    await connection.close()


async def _ledger(cfg: LedgerConfig) -> None:
    from qxedge.hybrid.ledger import open_ledger

    async with open_ledger(cfg, create=False):
        pass


def report(checks: list[Check], timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Try every endpoint, print one line each; 1 when one failed, else 0."""
    import logging

    if not logging.getLogger().isEnabledFor(logging.INFO):  # each failure is said on its line
        for noisy in ("asyncua", "pymodbus", "qxedge.connectors.mqtt"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    results = asyncio.run(reach_all(checks, timeout_s))
    for r in results:
        print(f"  connect: {r.line()}")
    return 1 if any(r.error is not None for r in results) else 0
