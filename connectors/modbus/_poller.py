"""The Modbus TCP link (pymodbus): one poller per device, its reconnects, reads and writes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from qxedge.connectors.modbus.codec import Block, Codec, plan_blocks
from qxedge.connectors.modbus.config import BIT_TABLES, ModbusConfig, ModbusDevice, Table
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.backoff import Backoff
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModbusStats:
    """Counters of one device (or, summed, of a connector), for logs and metrics."""

    requests: int = 0  # requests sent (reads and writes)
    errors: int = 0  # requests that failed: no answer, lost connection
    exceptions: int = 0  # exception responses of the device (illegal address, device busy, ...)
    connects: int = 0  # successful connections (the first included)
    connect_failures: int = 0  # connection attempts that failed
    disconnects: int = 0  # established connections lost (no answer, closed by the device)
    reconnects: int = 0  # successful connections after a lost one
    polls: int = 0
    readings: int = 0
    bad_values: int = 0  # non-finite floats dropped
    writes: int = 0  # setpoints written and read back

    def add(self, other: ModbusStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LinkDown(ConnectorError):
    """The device did not answer or the connection broke: reconnect."""


class DeviceRefused(ConnectorError):
    """The device answered with a Modbus exception."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _exception_name(code: int) -> str:
    try:
        return f"{ExcCodes(code).name.lower().replace('_', ' ')} (code {code})"
    except ValueError:
        return f"exception code {code}"


class DevicePoller:
    """One device: its connection, its poll loop and its writes."""

    def __init__(self, device: ModbusDevice, connector: str, reconnect: tuple[float, float]) -> None:
        self.config = device
        self.label = f"{connector} {device.name} ({device.host}:{device.port} unit {device.unit})"
        self.blocks = plan_blocks(device)
        self.setpoints = {
            s.asset: (s, Codec(s, device.byte_order, device.word_order)) for s in device.setpoints
        }
        self.stats = ModbusStats()
        self.connected = asyncio.Event()
        self._reconnect_min, self._reconnect_max = reconnect
        self._client: AsyncModbusTcpClient | None = None
        self._refusals: set[tuple[str, int]] = set()  # (block, code) already logged

    # ------------------------------------------------------------------ loop
    async def run(self, deliver: Callable[[ReadingBatch], None]) -> None:
        """Connect, poll every ``poll_s``, reconnect with jittered backoff; never returns."""
        backoff = Backoff(self._reconnect_min, self._reconnect_max)
        down_since: float | None = None
        while True:
            try:
                await self.connect()
                if down_since is not None:
                    self.stats.reconnects += 1
                    log.info("%s: connected again after %.1f s", self.label, time.monotonic() - down_since)
                else:
                    log.info("%s: connected, %d read(s) per poll", self.label, len(self.blocks))
                down_since = None
                backoff.reset()
                await self._poll_loop(deliver)
            except LinkDown as exc:
                self._drop()
                raise_if_cancelling()  # pymodbus' wait_for (Python 3.11) may have eaten our cancel
                delay = backoff.next_delay()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("%s: %s; reconnecting in %.2f s", self.label, exc, delay)
                else:
                    log.debug("%s: still down: %s; next try in %.2f s", self.label, exc, delay)
            except Exception:  # a bug or a pymodbus surprise: never take the agent down with it
                self.stats.errors += 1
                self._drop()
                down_since = down_since or time.monotonic()
                raise_if_cancelling()
                delay = backoff.next_delay()
                log.exception("%s: unexpected error; reconnecting in %.2f s", self.label, delay)
            await asyncio.sleep(delay)

    async def connect(self) -> None:
        cfg = self.config
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            timeout=cfg.timeout_s,
            retries=0,  # a missed answer means a dead link: reconnect rather than resend
            reconnect_delay=0,  # no reconnecting of its own: run() owns the backoff
            name=f"qxedge-{cfg.name}",
        )
        try:
            async with asyncio.timeout(cfg.timeout_s + 1):
                ok = await client.connect()
        except (OSError, TimeoutError, ModbusException) as exc:
            client.close()
            self.stats.connect_failures += 1
            raise LinkDown(f"cannot connect: {exc or 'timed out'}") from exc
        except BaseException:  # cancelled while connecting: leave no socket behind
            client.close()
            raise
        if not ok:
            client.close()
            self.stats.connect_failures += 1
            raise LinkDown("cannot connect (refused or timed out)")
        self._client = client
        self.stats.connects += 1
        self.connected.set()

    def _drop(self) -> None:
        """The link is lost (no answer, closed by the device): count it and close our side."""
        if self.connected.is_set():
            self.stats.disconnects += 1
        self.close()

    def close(self) -> None:
        self.connected.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _poll_loop(self, deliver: Callable[[ReadingBatch], None]) -> None:
        every = self.config.poll_s
        due = time.monotonic()
        while True:
            batch = await self.poll()
            raise_if_cancelling()
            if batch:
                deliver(batch)
            due += every
            delay = due - time.monotonic()
            if delay < 0:  # slower than the interval: skip the missed slots
                due += -delay // every * every + every
                delay = due - time.monotonic()
            await asyncio.sleep(delay)

    async def poll(self) -> ReadingBatch:
        """Read every block once; LinkDown when the device does not answer."""
        batch = ReadingBatch()
        stats = self.stats
        for block in list(self.blocks):
            try:
                raw = await self.read(block.table, block.start, block.count)
            except DeviceRefused as exc:
                self._refused(block, exc)
                continue
            ts = time.time()
            for slot in block.slots:
                value = slot.codec.decode(raw, slot.at)
                if math.isfinite(value):
                    batch.append(slot.asset, slot.signal, ts, value)
                else:
                    stats.bad_values += 1
        stats.polls += 1
        stats.readings += len(batch)
        return batch

    def _refused(self, block: Block, exc: DeviceRefused) -> None:
        if exc.code == ExcCodes.ILLEGAL_ADDRESS and block.has_holes:
            # the device does not map an address inside the hole: read the parts without holes
            parts = [
                b
                for b in plan_blocks(self.config, max_gap=0)
                if b.table == block.table and block.start <= b.start < block.start + block.count
            ]
            i = self.blocks.index(block)
            self.blocks[i : i + 1] = parts
            log.warning(
                "%s: %s refused (%s): split into %d reads without holes; lower max_gap for this device",
                self.label,
                block.describe(),
                exc,
                len(parts),
            )
            return
        key = (block.describe(), exc.code)
        if key not in self._refusals:
            self._refusals.add(key)
            log.warning(
                "%s: %s: %s (logged once, counted in stats.exceptions)", self.label, block.describe(), exc
            )

    # ------------------------------------------------------------------ requests
    async def _request(
        self, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        client = self._client
        if client is None or not client.connected:
            raise LinkDown(f"not connected ({what})")
        self.stats.requests += 1
        try:
            async with asyncio.timeout(self.config.timeout_s + 1):
                response = await call(client)
        except (ModbusException, OSError, TimeoutError) as exc:
            self.stats.errors += 1
            self._drop()
            raise LinkDown(f"{what}: {exc or 'no answer'}") from exc
        if response.isError():
            self.stats.exceptions += 1
            code = response.exception_code
            raise DeviceRefused(f"{what} refused: {_exception_name(code)}", code)
        return response

    async def read(self, table: Table, start: int, count: int) -> Sequence[int] | Sequence[bool]:
        """``count`` registers (or bits) of ``table`` from ``start`` in one request (at most 125 / 2000);
        LinkDown when the device does not answer, DeviceRefused on an exception response."""
        unit = self.config.unit
        what = f"read {table} {start}..{start + count - 1}"
        if table == "holding":
            r = await self._request(
                what, lambda c: c.read_holding_registers(start, count=count, device_id=unit)
            )
        elif table == "input":
            r = await self._request(
                what, lambda c: c.read_input_registers(start, count=count, device_id=unit)
            )
        elif table == "coil":
            r = await self._request(what, lambda c: c.read_coils(start, count=count, device_id=unit))
        else:
            r = await self._request(
                what, lambda c: c.read_discrete_inputs(start, count=count, device_id=unit)
            )
        raw = r.bits if table in BIT_TABLES else r.registers
        if len(raw) < count:
            self.stats.errors += 1
            raise DeviceRefused(f"{what}: short answer of {len(raw)} values", 0)
        return raw

    async def write(self, asset: str, value: float) -> tuple[str, float]:
        """Write the asset's setpoint, read it back; return (readback signal, value read)."""
        spec, codec = self.setpoints[asset]
        try:
            raw = codec.encode(value)
        except ValueError as exc:
            raise ConnectorError(f"{self.label}: {asset} = {value} cannot be written: {exc}") from exc
        unit = self.config.unit
        where = f"{spec.table} {spec.address}"
        try:
            if spec.table == "coil":
                on = bool(raw[0])
                await self._request(
                    f"write {where}", lambda c: c.write_coil(spec.address, on, device_id=unit)
                )
            elif len(raw) == 1:
                word = raw[0]
                await self._request(
                    f"write {where}", lambda c: c.write_register(spec.address, word, device_id=unit)
                )
            else:
                await self._request(
                    f"write {where}", lambda c: c.write_registers(spec.address, raw, device_id=unit)
                )
            back = codec.decode(await self.read(spec.table, spec.address, codec.width), 0)
        except LinkDown as exc:
            raise ConnectorError(f"{self.label}: {asset} = {value} not written: {exc}") from exc
        except DeviceRefused as exc:
            raise ConnectorError(f"{self.label}: writing {asset} = {value} to {where}: {exc}") from exc
        self.stats.writes += 1
        return spec.readback_signal, back


class ModbusConnector:
    """A :class:`~connectors.plant.PlantConnector` polling Modbus TCP devices, one task per device."""

    def __init__(self, config: ModbusConfig, name: str) -> None:
        self.config = config
        self.name = name
        reconnect = (config.reconnect_min_s, config.reconnect_max_s)
        self.devices = {d.name: DevicePoller(d, name, reconnect) for d in config.devices}
        self._writers = {asset: p for p in self.devices.values() for asset in p.setpoints}
        self._link: PlantLink | None = None

    @property
    def stats(self) -> ModbusStats:
        total = ModbusStats()
        for device in self.devices.values():
            total.add(device.stats)
        return total

    async def run(self, link: PlantLink) -> None:
        self._link = link
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self.devices.values():
                    tasks.create_task(device.run(link.readings), name=f"{self.name}.{device.config.name}")
        finally:
            self._link = None
            for device in self.devices.values():
                device.close()
            log.info("%s stopped: %s", self.name, self.stats.as_dict())

    def writes(self, asset: str) -> bool:
        return asset in self._writers

    async def write(self, asset: str, value: float) -> None:
        device = self._writers.get(asset)
        if device is None:
            raise ConnectorError(f"{self.name}: no setpoint mapped for {asset}")
        signal, back = await device.write(asset, value)
        link = self._link
        if link is not None and math.isfinite(back):
            batch = ReadingBatch()
            batch.append(asset, signal, time.time(), back)
            link.readings(batch)
