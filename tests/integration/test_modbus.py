"""Modbus TCP connector against real pymodbus TCP servers started by the tests.

The server counts the requests it receives (pymodbus' ``trace_pdu`` hook), so block reads are checked on
the device side, not by trusting the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from qxedge.agent.audit import query
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.modbus import LinkDown, ModbusConfig, ModbusConnector, plan_blocks
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.errors import ConnectorError
from qxedge.testing import Plc, Watcher, edge_config, wait_until
from qxedge.testing.modbus_plc import ENCODINGS, SAMPLE, SIZE, reference_words

pytestmark = pytest.mark.integration


class Readings:
    """A PlantLink whose readings land here; ``wait`` blocks until a predicate holds (generous bound)."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []
        self._changed = asyncio.Event()
        self.link = PlantLink("test", BrokerConfig(), self._on_batch, self._propose)

    def _on_batch(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)
        self._changed.set()

    async def _propose(self, asset: str, value: float, source: str, data_ts: float) -> None:
        raise AssertionError("modbus never proposes")

    def latest(self) -> dict[tuple[str, str], float]:
        out = {}
        for b in self.batches:
            out.update(((a, s), v) for a, s, v in zip(b.assets, b.signals, b.values, strict=True))
        return out

    async def wait(self, predicate: Callable[[], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def device(port: int, points: Iterable[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    return {
        "name": f"plc{port}",
        "host": "127.0.0.1",
        "port": port,
        "poll_s": 0.05,
        "points": list(points),
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Callable[[], bool], within: float = 30) -> None:
    """Wait (generously) for a condition that no event announces."""
    assert await wait_until(predicate, within), f"not within {within} s"


async def running(connector: ModbusConnector, readings: Readings) -> asyncio.Task[None]:
    return asyncio.create_task(connector.run(readings.link), name=connector.name)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------------------------------- polling
async def test_block_reads_counted_on_the_server() -> None:
    holding = {a: 100 + a for a in range(10)}
    holding.update(zip((10, 11), reference_words("float32", 2.5, "big", "big"), strict=True))
    async with Plc(
        holding=holding, inputs={0: 7, 3: 9}, coils={0: True, 4: True}, discretes={200: True}
    ) as plc:
        points = [{"asset": "m1", "signal": f"h{a}", "address": a} for a in range(10)]
        points += [
            {"asset": "m1", "signal": "f", "address": 10, "type": "float32"},
            {"asset": "m1", "signal": "i0", "table": "input", "address": 0},
            {"asset": "m1", "signal": "i3", "table": "input", "address": 3},  # hole of 2: merged (max_gap 2)
            {"asset": "m1", "signal": "c0", "table": "coil", "address": 0},
            {"asset": "m1", "signal": "c1", "table": "coil", "address": 1},
            {"asset": "m1", "signal": "c4", "table": "coil", "address": 4},
            {"asset": "m1", "signal": "d100", "table": "discrete", "address": 100},
            {"asset": "m1", "signal": "d200", "table": "discrete", "address": 200},  # too far: own read
        ]
        # the same points twice: blocks (max_gap 2), and one read per point (max_registers / max_bits 1)
        cfg = ModbusConfig.model_validate({"devices": [device(plc.port, points, max_gap=2)]})
        per_point = [{**p, "type": "uint16"} if p["signal"] == "f" else p for p in points]
        per_point[10] = {**per_point[10], "signal": "f_hi"}
        one_by_one = ModbusConfig.model_validate(
            {"devices": [device(plc.port, per_point, max_registers=1, max_bits=1)]}
        )
        assert [b.describe() for b in plan_blocks(cfg.devices[0])] == [
            "holding 0..11",
            "input 0..3",
            "coil 0..4",
            "discrete 100..100",
            "discrete 200..200",
        ]
        assert len(plan_blocks(one_by_one.devices[0])) == len(points)

        for config, per_poll in ((cfg, 5), (one_by_one, len(points))):
            connector = ModbusConnector(config, "modbus[0]")
            readings = Readings()
            before = plc.reads()
            task = await running(connector, readings)
            await readings.wait(lambda r=readings: len(r.batches) >= 4)
            await stopped(task)
            polls, reads = len(readings.batches), plc.reads() - before
            assert polls * per_poll <= reads < (polls + 1) * per_poll, (polls, reads)
            assert connector.stats.requests == reads and connector.stats.polls == polls
            assert all(len(b) == len(points) for b in readings.batches)
            values = readings.latest()
            assert values[("m1", "h3")] == 103 and values[("m1", "i3")] == 9 and values[("m1", "c4")] == 1.0
            assert (
                values[("m1", "c1")] == 0.0
                and values[("m1", "d200")] == 1.0
                and values[("m1", "d100")] == 0.0
            )
        assert values[("m1", "f_hi")] == holding[10]


async def test_types_byte_and_word_orders_scale_offset_and_bad_values() -> None:
    holding: dict[int, int] = {}
    points: list[dict[str, Any]] = []
    expected: dict[str, float] = {}
    address = 0
    for kind, byte_order, word_order in ENCODINGS:
        words = reference_words(kind, SAMPLE[kind], byte_order, word_order)
        holding.update(enumerate(words, start=address))
        signal = f"{kind}_{byte_order}_{word_order}"
        points.append(
            {
                "asset": "m1",
                "signal": signal,
                "address": address,
                "type": kind,
                "byte_order": byte_order,
                "word_order": word_order,
            }
        )
        expected[signal] = SAMPLE[kind]
        address += len(words)
    # scale and offset: raw 1234 * 0.1 - 40 = 83.4, on input registers with the device's default orders
    inputs = {0: 1234, 1: 0xFFFF, 2: 0xFFFF}  # and a float32 NaN (0xFFFFFFFF) at 1..2: dropped, counted
    points += [
        {
            "asset": "m2",
            "signal": "temp",
            "table": "input",
            "address": 0,
            "type": "int16",
            "scale": 0.1,
            "offset": -40,
        },
        {"asset": "m2", "signal": "broken", "table": "input", "address": 1, "type": "float32"},
    ]
    async with Plc(holding=holding, inputs=inputs) as plc:
        connector = ModbusConnector(ModbusConfig.model_validate({"devices": [device(plc.port, points)]}), "m")
        readings = Readings()
        task = await running(connector, readings)
        await readings.wait(lambda: len(readings.batches) >= 2)
        await stopped(task)
    values = readings.latest()
    for signal, value in expected.items():
        assert values[("m1", signal)] == pytest.approx(value, rel=1e-6), signal
    assert values[("m2", "temp")] == pytest.approx(83.4)
    assert ("m2", "broken") not in values and connector.stats.bad_values >= 2


async def test_a_block_over_an_unmapped_hole_is_split_once() -> None:
    async with Plc(holding={0: 11, 12: 22}, unmapped=range(5, 10)) as plc:
        points = [{"asset": "m1", "signal": "a", "address": 0}, {"asset": "m1", "signal": "b", "address": 12}]
        connector = ModbusConnector(
            ModbusConfig.model_validate({"devices": [device(plc.port, points, max_gap=20)]}), "m"
        )
        poller = connector.devices[f"plc{plc.port}"]
        assert [b.describe() for b in poller.blocks] == ["holding 0..12"]
        readings = Readings()
        task = await running(connector, readings)
        await readings.wait(lambda: len(readings.batches) >= 3)
        await stopped(task)
    assert [b.describe() for b in poller.blocks] == ["holding 0..0", "holding 12..12"]
    assert readings.latest() == {("m1", "a"): 11, ("m1", "b"): 22}
    assert poller.stats.exceptions == 1 and poller.stats.disconnects == 0
    reads = [(a, n) for fc, a, n in plc.requests if fc == 3]
    assert reads[0] == (0, 13) and set(reads[1:]) == {(0, 1), (12, 1)}  # the block once, then its parts


# ------------------------------------------------------------------------------------------ writes
async def test_write_reads_back_and_device_errors_raise() -> None:
    dead = free_port()
    async with Plc(holding={100: 1000}) as plc:
        cfg = ModbusConfig.model_validate(
            {
                "devices": [
                    device(
                        plc.port,
                        [{"asset": "line1/pump1", "signal": "cap", "address": 100, "scale": 0.001}],
                        setpoints=[
                            {"asset": "line1/pump1", "address": 100, "scale": 0.001},
                            {
                                "asset": "line1/fan1",
                                "address": 110,
                                "type": "float32",
                                "word_order": "little",
                                "readback_signal": "speed",
                            },
                            {
                                "asset": "line1/valve",
                                "table": "coil",
                                "address": 7,
                                "readback_signal": "open",
                            },
                            {"asset": "line1/ghost", "address": SIZE + 5},  # the device does not map it
                        ],
                    ),
                    {**device(dead), "setpoints": [{"asset": "line2/pump1", "address": 0}]},
                ],
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
            }
        )
        connector = ModbusConnector(cfg, "modbus[0]")
        readings = Readings()
        task = await running(connector, readings)
        await asyncio.wait_for(connector.devices[f"plc{plc.port}"].connected.wait(), 20)
        assert connector.writes("line1/pump1") and not connector.writes("line1/unknown")

        await connector.write("line1/pump1", 0.75)
        await connector.write("line1/fan1", 1234.5)
        await connector.write("line1/valve", 1.0)
        # the independent view: a second client reads what the device holds
        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port)
        await client.connect()
        assert (await client.read_holding_registers(100, count=1)).registers == [750]
        fan = (await client.read_holding_registers(110, count=2)).registers
        assert fan == reference_words("float32", 1234.5, "big", "little")
        assert (await client.read_coils(7, count=1)).bits[0] is True
        client.close()
        writes = [(fc, address) for fc, address, _ in plc.requests if fc in (5, 6, 16)]
        assert writes == [(6, 100), (16, 110), (5, 7)]
        # each write was read back and delivered as a reading of its readback signal
        await readings.wait(lambda: readings.latest().get(("line1/pump1", "cap")) == 0.75)
        latest = readings.latest()
        assert latest[("line1/pump1", "load_cap")] == 0.75 and latest[("line1/fan1", "speed")] == 1234.5
        assert latest[("line1/valve", "open")] == 1.0

        with pytest.raises(
            ConnectorError, match=r"writing line1/ghost = 1.0 to holding 305: .*illegal address"
        ):
            await connector.write("line1/ghost", 1.0)
        with pytest.raises(ConnectorError, match="outside uint16"):
            await connector.write("line1/pump1", 99.0)
        with pytest.raises(ConnectorError, match=rf"plc{dead} \(127.0.0.1:{dead} unit 1\): .*not connected"):
            await connector.write("line2/pump1", 0.5)
        await stopped(task)
    assert connector.stats.writes == 3 and connector.stats.exceptions == 1


# ------------------------------------------------------------------------------------- reconnecting
async def test_reconnects_after_a_long_outage_and_a_dead_device_never_blocks_the_others() -> None:
    dead = free_port()
    plc = await Plc(holding={0: 1}).start()
    port = plc.port
    cfg = ModbusConfig.model_validate(
        {
            "devices": [
                device(port, [{"asset": "m1", "signal": "gen", "address": 0}]),
                device(dead, [{"asset": "m9", "signal": "gen", "address": 0}], timeout_s=0.5),
            ],
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.4,
        }
    )
    connector = ModbusConnector(cfg, "modbus[1]")
    live, down = connector.devices[f"plc{port}"], connector.devices[f"plc{dead}"]
    readings = Readings()
    task = await running(connector, readings)
    try:
        await readings.wait(lambda: readings.latest().get(("m1", "gen")) == 1)
        assert not down.connected.is_set() and live.stats.polls > 0
        await plc.stop()
        # down for long enough that the backoff reaches its cap: several failed connects in a row
        await until(lambda: not live.connected.is_set() and live.stats.connect_failures >= 6)
        polls = live.stats.polls
        plc = await Plc(holding={0: 2}, port=port).start()  # a fresh device on the same port
        await readings.wait(lambda: readings.latest().get(("m1", "gen")) == 2, within=30)
        assert live.stats.reconnects == 1 and live.stats.polls > polls and live.stats.disconnects == 1
        assert down.stats.connects == 0 and down.stats.connect_failures > 0
        assert ("m9", "gen") not in readings.latest()
    finally:
        await stopped(task)
        await plc.stop()


async def test_a_device_that_never_answers_times_out_and_is_reconnected() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection and the requests, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = ModbusConfig.model_validate(
        {
            "devices": [device(port, [{"asset": "m1", "signal": "x", "address": 0}], timeout_s=0.2)],
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.1,
        }
    )
    connector = ModbusConnector(cfg, "m")
    readings = Readings()
    async with server:
        task = await running(connector, readings)
        await until(lambda: connector.stats.disconnects >= 2)
        await stopped(task)
    stats = connector.stats
    assert stats.connects >= 2 and stats.errors >= 2 and stats.reconnects >= 1 and not readings.batches


@pytest.mark.parametrize("where", ["poll", "connect"])
async def test_a_cancel_that_a_request_swallows_still_stops_the_connector(where: str) -> None:
    """Python 3.11's wait_for (pymodbus calls it in every request) drops a cancel that lands as the
    answer arrives: the poller must still stop (python/cpython#86296)."""
    async with Plc(holding={0: 7}) as plc:
        cfg = ModbusConfig.model_validate(
            {"devices": [device(plc.port, [{"asset": "m1", "signal": "x", "address": 0}])]}
        )
        connector = ModbusConnector(cfg, "m")
        poller = connector.devices[f"plc{plc.port}"]
        inside = asyncio.Event()

        async def swallow() -> None:
            inside.set()
            with contextlib.suppress(asyncio.CancelledError):  # what wait_for does in that window
                await asyncio.sleep(3600)

        real_poll, real_connect = poller.poll, poller.connect

        async def poll() -> ReadingBatch:
            batch = await real_poll()
            if where == "poll" and not inside.is_set():
                await swallow()
            return batch

        async def connect() -> None:
            if where == "connect" and not inside.is_set():
                await swallow()
                raise LinkDown("cannot connect: refused")
            await real_connect()

        poller.poll, poller.connect = poll, connect  # type: ignore[method-assign]
        readings = Readings()
        task = await running(connector, readings)
        await inside.wait()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        assert task in done and task.cancelled(), f"the connector went on after a cancel lost in {where}"


# --------------------------------------------------------------------------------------- the agent
async def test_agent_reads_modbus_and_writes_an_allowed_setpoint(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    temp = AsyncModbusTcpClient.convert_to_registers(61.5, AsyncModbusTcpClient.DATATYPE.FLOAT32)
    async with Plc(inputs=dict(enumerate(temp)), holding={100: 1000}) as plc:
        modbus = {
            "devices": [
                {
                    "name": "plc1",
                    "host": "127.0.0.1",
                    "port": plc.port,
                    "poll_s": 0.2,
                    "points": [
                        {
                            "asset": "line1/pump1",
                            "signal": "temp",
                            "table": "input",
                            "address": 0,
                            "type": "float32",
                        },
                        {"asset": "line1/pump1", "signal": "load_cap", "address": 100, "scale": 0.001},
                    ],
                    "setpoints": [
                        {
                            "asset": "line1/pump1",
                            "address": 100,
                            "scale": 0.001,
                            "readback_signal": "load_cap",
                        }
                    ],
                }
            ]
        }
        # the envelope of line1/pump1 in configs/edge.yaml (interlock on temp, read-back on load_cap), made
        # fast: no dwell time, no rate limit
        base = edge_config(broker.url)
        i = next(
            k for k, e in enumerate(base.safety.envelopes) if fnmatch.fnmatchcase("line1/pump1", e.assets[0])
        )
        envelope = base.safety.envelopes[i]
        assert envelope.readback is not None and envelope.readback.signal == "load_cap"
        assert envelope.min <= 0.7 <= envelope.max
        cfg = edge_config(
            broker.url,
            connectors=json.dumps([{"modbus": modbus}]),
            **{f"safety__envelopes__{i}__min_dwell_s": "0", f"safety__envelopes__{i}__max_rate_per_s": "100"},
        )
        watcher = watch("qx/v1/demo/setpoints/#")
        agent = Agent(cfg)
        assert [c.name for c in agent.plant] == ["connectors[0]"]
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop), name="agent")
            await asyncio.wait_for(agent.ready.wait(), 20)
            # an evaluation has seen the temperature (the interlock needs it)
            await until(lambda: ("line1/pump1", "temp") in agent.safety.latest)
            assert agent.safety.latest[("line1/pump1", "temp")][1] == 61.5
            body = json.dumps({"value": 0.7, "source": "mes", "ts": time.time()})
            await asyncio.to_thread(watcher.publish, "qx/v1/demo/proposals/line1/pump1", body)

            audit = cfg.safety.audit.resolved(cfg.site)

            def confirmed() -> list[dict[str, Any]]:
                rows = query(audit, asset="line1/pump1")
                return [r for r in rows if r["kind"] == "readback"]

            async def any_confirmed() -> bool:
                return bool(await asyncio.to_thread(confirmed))

            assert await wait_until(any_confirmed, 30, every_s=0.1)
            rows = await asyncio.to_thread(confirmed)
            stop.set()
        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port)
        await client.connect()
        held = (await client.read_holding_registers(100, count=1)).registers
        client.close()
    assert held == [700]  # 0.7 / scale 0.001, in the device
    assert [(fc, a) for fc, a, _ in plc.requests if fc in (5, 6, 16)] == [(6, 100)]  # one write, no more
    assert [(r["verdict"], pytest.approx(r["value"])) for r in rows] == [("confirmed", 0.7)]
    assert (
        agent.gate is not None and agent.gate.verdicts["written"] == 1 and agent.gate.verdicts["alarms"] == 0
    )
    assert [json.loads(m.payload)["value"] for m in watcher.on("qx/v1/demo/setpoints/")] == [0.7]
