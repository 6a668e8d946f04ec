"""The integrator tools as a user runs them (subprocesses) against our own servers: ``qxedge discover``
on asyncua's and pymodbus' servers, ``qxedge tail`` on a config reading MQTT, OPC UA and Modbus, and
``qxedge check-config --connect``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qxedge.agent.config import load_config
from qxedge.connectors.embedded_broker import EmbeddedBroker, free_port
from qxedge.hybrid.ledger import LedgerConfig
from qxedge.testing import Plc, Watcher, plant_server
from qxedge.testing.brokers import NatsServer, nats_available
from qxedge.testing.opcua_pki import make_pki

pytestmark = pytest.mark.integration

QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]


async def qxedge(*args: str, within: float = 60) -> tuple[int, str, str]:
    """Run ``qxedge ARGS`` without blocking the loop (the servers under test run on it)."""
    proc = await asyncio.create_subprocess_exec(
        *QXEDGE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_file(folder: Path, doc: dict[str, Any]) -> Path:
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump({"site": "tools", **doc}), encoding="utf-8")
    return path


# --- discover opcua ------------------------------------------------------------------------------------


async def test_discover_opcua_lists_the_served_variables_and_a_snippet_that_loads(tmp_path: Path) -> None:
    async with plant_server(free_port()) as plant:
        await plant.set("pump1", "temp", 61.5)
        rc, out, err = await qxedge("discover", plant.url.replace("opc.tcp://", "opcua://"))
        assert rc == 0, err
        assert "ns=2;s=Line1.pump1.Temp" in out and "0:Objects/2:Line1/2:pump1/2:Temp" in out
        assert "Double" in out and "61.5" in out and "Int16" in out  # Line1.Mode
        snippet = yaml.safe_load(out[out.index("connectors:") :])
        cfg = load_config(config_file(tmp_path, snippet), environ={})  # the agent's own loader takes it
        nodes = cfg.connectors[0].opcua.nodes  # type: ignore[union-attr]
        assert {(n.node, n.asset, n.signal) for n in nodes} >= {
            ("ns=2;s=Line1.pump1.Temp", "line1/pump1", "temp"),
            ("ns=2;s=Line1.pump2.Power", "line1/pump2", "power"),
        }
        rc, out, err = await qxedge(
            "discover", plant.url, "--json", "--by-path", "--root", "0:Objects/2:Line1"
        )
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["root"] == "0:Objects/2:Line1"
        assert {v["path"] for v in doc["variables"]} >= {"0:Objects/2:Line1/2:pump2/2:Temp"}
        paths = {n["node"] for n in doc["snippet"]["opcua"]["nodes"]}
        assert "0:Objects/2:Line1/2:pump1/2:Temp" in paths


async def test_discover_opcua_is_bounded_by_max_nodes_and_depth() -> None:
    async with plant_server(free_port()) as plant:
        rc, out, err = await qxedge("discover", plant.url, "--json", "--max-nodes", "3")
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["truncated"] and doc["nodes"] == 3
        rc, out, err = await qxedge("discover", plant.url, "--depth", "1")
        assert rc == 0, err
        assert "not browsed further" in out and "no numeric variable found" in out


async def test_discover_opcua_says_what_the_server_offers_on_a_security_mismatch(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with plant_server(free_port(), pki) as plant:
        rc, _, err = await qxedge("discover", plant.url)
    assert rc == 1
    assert "security mismatch" in err and "Basic256Sha256/SignAndEncrypt" in err, err
    assert "Traceback" not in err


async def test_discover_opcua_on_a_port_nobody_serves_fails_clearly() -> None:
    rc, _, err = await qxedge("discover", f"opcua://127.0.0.1:{free_port()}", "--timeout", "2")
    assert rc == 1 and "cannot reach" in err and "Traceback" not in err, err


# --- discover modbus -----------------------------------------------------------------------------------


async def test_discover_modbus_shows_every_decoding_and_a_snippet_that_loads(tmp_path: Path) -> None:
    async with Plc(holding={10: 0x4049, 11: 0x0FDB, 12: 0xFFFF}, coils={1: True}) as plc:
        url = f"modbus://127.0.0.1:{plc.port}"
        rc, out, err = await qxedge("discover", url, "--unit", "3", "--holding", "10-12", "--coils", "0-2")
        assert rc == 0, err
        assert "3.141593" in out  # float32 ABCD at 10
        assert "1078530011" in out and "16457" in out and "65535" in out and "-1" in out
        assert "coil 0..2" in out
        snippet = yaml.safe_load(out[out.index("connectors:") :])
        cfg = load_config(config_file(tmp_path, snippet), environ={})
        device = cfg.connectors[0].modbus.devices[0]  # type: ignore[union-attr]
        assert (device.port, device.unit, device.points[0].address) == (plc.port, 3, 10)
        rc, out, err = await qxedge(
            "discover",
            url,
            "--holding",
            "10-11",
            "--json",
            "--pick",
            "10",
            "--type",
            "float32",
            "--scale",
            "2",
        )
        assert rc == 0, err
        doc = json.loads(out)
        (holding,) = doc["ranges"]
        assert holding["raw"] == [0x4049, 0x0FDB]
        first = next(d for d in holding["decodings"] if d["address"] == 10 and d["order"] == "ABCD")
        assert first["float32"] == pytest.approx(2 * 3.14159274)  # scaled as the connector does
        point = doc["snippet"]["modbus"]["devices"][0]["points"][0]
        assert (point["type"], point["scale"]) == ("float32", 2.0)


async def test_discover_modbus_reports_an_exception_response_and_goes_on() -> None:
    async with Plc(holding={0: 7}, unmapped=range(100, 110)) as plc:
        rc, out, err = await qxedge(
            "discover", f"modbus://127.0.0.1:{plc.port}", "--holding", "100-101", "--input", "0-1"
        )
    assert rc == 1
    assert "illegal address" in err and "input 0..1" in out, (out, err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holding", "9-3"], "must run upwards"),
        (["--holding", "a-b"], "is not a range"),
        ([], "give at least one range"),
        (["--holding", "0-1", "--depth", "2"], "--depth: for opcua://"),
        (["--holding", "0-5000"], "at most 1000"),
    ],
)
async def test_discover_modbus_refuses_bad_arguments(args: list[str], message: str) -> None:
    rc, _, err = await qxedge("discover", f"modbus://127.0.0.1:{free_port()}", *args)
    assert rc == 2 and message in err, err


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers (a wrong device behind a gateway)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()


async def test_discover_modbus_reports_a_device_that_does_not_answer() -> None:
    async with silent_server() as port:
        rc, _, err = await qxedge(
            "discover", f"modbus://127.0.0.1:{port}", "--holding", "0", "--timeout", "1"
        )
    assert rc == 1 and "within 1 s" in err and "Traceback" not in err, err


async def test_discover_modbus_cannot_connect() -> None:
    rc, _, err = await qxedge("discover", f"modbus://127.0.0.1:{free_port()}", "--holding", "0")
    assert rc == 1 and "cannot connect" in err, err


# --- tail ----------------------------------------------------------------------------------------------


def tools_config(tmp_path: Path, broker_url: str, opcua_url: str, modbus_port: int) -> Path:
    return config_file(
        tmp_path,
        {
            "broker": {"url": broker_url},
            "connectors": [
                {"mqtt": {"topics": ["plant/#"]}},
                {
                    "opcua": {
                        "endpoint": opcua_url,
                        "nodes": [
                            {"node": "ns=2;s=Line1.pump1.Temp", "asset": "line1/pump1", "signal": "temp"}
                        ],
                        "setpoints": {"line1/pump1": {"node": "ns=2;s=Line1.pump1.LoadCap"}},
                        "publishing_interval_ms": 50,
                    }
                },
                {
                    "modbus": {
                        "devices": [
                            {
                                "name": "plc",
                                "host": "127.0.0.1",
                                "port": modbus_port,
                                "poll_s": 0.1,
                                "points": [{"asset": "line1/plc", "signal": "word", "address": 0}],
                                "setpoints": [{"asset": "line1/plc", "address": 5}],
                            }
                        ]
                    }
                },
            ],
        },
    )


async def read_until(
    stream: asyncio.StreamReader, done: Callable[[list[str]], bool], within: float = 60
) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(within):
        while not done(lines):
            line = await stream.readline()
            assert line, f"the stream ended before the lines came: {lines}"
            lines.append(line.decode())
    return lines


async def test_tail_shows_what_each_source_produces_and_writes_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with plant_server(free_port()) as plant, Plc(holding={0: 4242}) as plc:
        await plant.set("pump1", "temp", 61.5)
        path = tools_config(tmp_path, broker.url, plant.url, plc.port)
        proc = await asyncio.create_subprocess_exec(
            *QXEDGE, "tail", "--config", str(path), "--json", "--seconds", "120",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        watcher = Watcher(broker.url)
        try:

            def seen(lines: list[str]) -> bool:
                docs = [json.loads(line) for line in lines]
                got = {(d.get("asset"), d.get("signal"), d.get("value")) for d in docs}
                if ("line1/mqtt", "temp", 12.5) not in got:  # tail may not have subscribed yet
                    watcher.publish("plant/line1/mqtt/temp", b'{"value": 12.5}')
                    watcher.publish("plant/line1/mqtt/temp", b'{"value": NaN}')
                return {("line1/pump1", "temp", 61.5), ("line1/plc", "word", 4242.0)} <= got and (
                    ("line1/mqtt", "temp", 12.5) in got and any(d.get("rejected") for d in docs)
                )

            lines = await read_until(proc.stdout, seen)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            watcher.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err
        rejected = next(json.loads(line) for line in lines if json.loads(line).get("rejected"))
        assert rejected["topic"] == "plant/line1/mqtt/temp" and rejected["code"] == "bad_value"
        assert "reading(s)" in err.decode()
        writes = [fc for fc, _, _ in plc.requests if fc in (5, 6, 15, 16)]
        assert writes == []  # the modbus setpoint was stripped: nothing could be written
        assert await plant.setpoints["pump1"].read_value() == 1.0


async def test_tail_filters_and_stops_after_count(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with plant_server(free_port()) as plant, Plc(holding={0: 7}) as plc:
        path = tools_config(tmp_path, broker.url, plant.url, plc.port)
        rc, out, err = await qxedge("tail", "--config", str(path), "--asset", "line1/p?c", "--count", "3")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and all("line1/plc  word  7  (connectors[2])" in line for line in lines), out


async def test_tail_fails_clearly_without_its_broker(tmp_path: Path) -> None:
    path = config_file(
        tmp_path, {"broker": {"url": f"mqtt://127.0.0.1:{free_port()}", "connect_timeout_s": 2}}
    )
    rc, _, err = await qxedge("tail", "--config", str(path), "--seconds", "30")
    assert rc == 1 and "cannot reach the MQTT broker" in err and "Traceback" not in err, err


# --- check-config --connect ----------------------------------------------------------------------------


async def test_check_config_connect_passes_on_the_right_ports_and_fails_on_a_wrong_one(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with plant_server(free_port()) as plant, Plc(holding={0: 7}) as plc:
        good = tools_config(tmp_path, broker.url, plant.url, plc.port)
        rc, out, err = await qxedge("check-config", "--connect", str(good))
        assert rc == 0, (out, err)
        assert out.count("reachable") == 3 and "FAILED" not in out, out
        rc, out, _ = await qxedge("check-config", str(good))  # without --connect: as before
        assert rc == 0 and "connect:" not in out
        wrong = tools_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", plant.url, free_port())
        rc, out, err = await qxedge("check-config", "--connect", str(wrong))
    assert rc == 1, (out, err)
    assert "broker mqtt://127.0.0.1" in out and "FAILED: cannot reach the MQTT broker" in out
    assert "connectors[2].modbus.devices[0]" in out and "FAILED: cannot connect" in out
    assert "connectors[1].opcua" in out and out.count("reachable") == 1


async def test_check_config_connect_tries_a_workers_transport_and_ledger(
    broker: EmbeddedBroker, pg_ledger: LedgerConfig, tmp_path: Path
) -> None:
    """A solver worker's config: the agents' broker, its NATS transport and its PostgreSQL ledger are
    each tried; a transport and a ledger on ports where nothing listens each fail on their own line."""
    if not nats_available():
        pytest.skip("needs nats-server (.ci/run installs it)")

    def worker(nats_url: str, dsn: str) -> Path:
        path = tmp_path / "datacenter.yaml"
        doc = {
            "broker": {"url": broker.url},
            "transport": {"kind": "nats", "url": nats_url},
            "ledger": {"kind": "postgres", "dsn": dsn},
        }
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    assert pg_ledger.dsn is not None
    with NatsServer() as nats:
        rc, out, err = await qxedge("check-config", "--connect", str(worker(nats.url, pg_ledger.dsn)))
    assert rc == 0, (out, err)
    assert "jobs through nats" in out and out.count("reachable") == 3 and "FAILED" not in out, out
    dead = pg_ledger.dsn.rsplit("@", 1)[0] + f"@127.0.0.1:{free_port()}/ledger"
    rc, out, err = await qxedge(
        "check-config", "--connect", str(worker(f"nats://127.0.0.1:{free_port()}", dead))
    )
    assert rc == 1, (out, err)
    assert "transport (nats) nats://127.0.0.1" in out and "ledger postgresql://" in out, out
    assert out.count("FAILED") == 2 and out.count("reachable") == 1 and "Traceback" not in err, (out, err)
