"""Modbus TCP connector: per-device polling with block reads, typed points, setpoint writes with read-back.

Config (``connectors: - modbus: {...}``, see the README)::

    devices:
      - name: plc1
        host: 10.0.0.20
        unit: 1               # unit / slave / device id
        poll_s: 0.5
        points:               # each one becomes an (asset, signal) reading on every poll
          - {asset: line1/pump1, signal: temp, table: input, address: 0, type: float32}
          - {asset: line1/pump1, signal: running, table: discrete, address: 0}
        setpoints:            # what the setpoint gate writes, and where the value is read back
          - {asset: line1/pump1, address: 100, type: uint16, scale: 0.001, readback_signal: load_cap}

How it polls: at load time the points of a device are grouped per table (holding, input, coil,
discrete) into **blocks**: points sorted by address merge while the hole between them is at most
``max_gap`` registers and the block stays within ``max_registers`` (125, the protocol's limit for one
read) or ``max_bits`` (2000). One poll of a device is one request per block, not one per point; a
block refused with *illegal address* (a hole the device does not map) is split for good into blocks
without holes. The readings of one poll go to the agent in one ``link.readings(batch)``.

Values: int16/uint16/int32/uint32/float32/float64 with ``byte_order`` (bytes within a register) and
``word_order`` (registers within a 32/64-bit value), both ``big`` (Modbus' own order, "ABCD") or
``little``; value = raw * scale + offset, and the inverse when writing. Coils and discrete inputs read
as 1.0 / 0.0. A non-finite float from a device is dropped and counted, never delivered.

Each device runs in its own task of the connector's TaskGroup, so a device that is down never delays
another; a lost or unanswered link closes the connection and reconnects with jittered exponential
backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``). A device exception response is
counted and logged (once per block and code), the link stays up.

``write(asset, value)`` (called by the setpoint gate only) encodes the value, writes it (function 5,
6 or 16), reads the register(s) back and delivers the value read as the reading ``readback_signal`` of
the asset, so the safety envelope's read-back check sees what the device holds. No connection or a
device exception raises :class:`~qxedge.core.errors.ConnectorError`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from qxedge.connectors.plant import PlantConnector, PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)

Table = Literal["holding", "input", "coil", "discrete"]
ValueType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]

MAX_REGISTERS = 125  # one read of holding / input registers (Modbus application protocol, 6.3)
MAX_BITS = 2000  # one read of coils / discrete inputs
BIT_TABLES = ("coil", "discrete")
_FORMATS: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}
_NAME = r"^[A-Za-z0-9_.-]+$"
_SIGNAL = r"^[^/+#\s]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Encoding(_Strict):
    """Where a value lives and how it is encoded; shared by points and setpoints."""

    table: Table = Field("holding", description="holding, input, coil or discrete")
    address: int = Field(ge=0, le=65535, description="0-based protocol address (register 40001 is 0)")
    type: ValueType | None = Field(None, description="default: bool on coil/discrete, uint16 on registers")
    byte_order: Order | None = Field(None, description="bytes within a register; default: the device's")
    word_order: Order | None = Field(None, description="registers within a 32/64-bit value; the device's")
    scale: float = Field(1.0, description="value = raw * scale + offset (bool: must stay 1 and 0)")
    offset: float = 0.0

    @field_validator("scale", "offset")
    @classmethod
    def _finite(cls, x: float) -> float:
        if not math.isfinite(x):
            raise ValueError("must be a finite number")
        return x

    @property
    def value_type(self) -> ValueType:
        if self.type is not None:
            return self.type
        return "bool" if self.table in BIT_TABLES else "uint16"

    @property
    def width(self) -> int:
        """Registers (or bits) the value occupies."""
        return 1 if self.value_type == "bool" else struct.calcsize(_FORMATS[self.value_type]) // 2

    @model_validator(mode="after")
    def _fits(self) -> _Encoding:
        kind = self.value_type
        if (kind == "bool") != (self.table in BIT_TABLES):
            if kind == "bool":
                raise ValueError(f"type bool fits the coil and discrete tables, not {self.table} registers")
            raise ValueError(f"type {kind} needs registers: the {self.table} table holds single bits")
        if kind == "bool" and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError("scale and offset do not apply to a bool (coil / discrete) value")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.width > 65536:
            raise ValueError(f"{kind} at address {self.address} runs past the last address 65535")
        return self


class ModbusPoint(_Encoding):
    """One value read on every poll, delivered as the reading (asset, signal)."""

    asset: str = Field(min_length=1, description="the asset id the reading belongs to, e.g. line1/pump1")
    signal: str = Field(pattern=_SIGNAL, description="the signal name, e.g. temp")


class ModbusSetpoint(_Encoding):
    """Where the setpoint gate writes an asset's setpoint, and which reading carries its read-back."""

    asset: str = Field(min_length=1)
    table: Literal["holding", "coil"] = Field("holding", description="only these two are writable")
    readback_signal: str = Field(
        "load_cap", pattern=_SIGNAL, description="the value read back after a write, as this signal"
    )


class ModbusDevice(_Strict):
    """One Modbus TCP server (a PLC, a gateway for a unit id behind it), polled on its own interval."""

    name: str = Field(pattern=_NAME, description="for logs and stats")
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="unit id (slave / device id)")
    poll_s: float = Field(1.0, ge=0.01, le=3600, description="one poll of every point this often")
    timeout_s: float = Field(2.0, gt=0, le=60, description="connect and per-request timeout")
    byte_order: Order = Field("big", description="default for the points: bytes within a register")
    word_order: Order = Field("big", description="default for the points: registers within a value")
    max_gap: int = Field(0, ge=0, le=MAX_BITS, description="unused addresses a block may span to merge")
    max_registers: int = Field(MAX_REGISTERS, ge=1, description="registers per read (protocol max 125)")
    max_bits: int = Field(MAX_BITS, ge=1, description="coils / discrete inputs per read (protocol max 2000)")
    points: list[ModbusPoint] = Field(default_factory=list)
    setpoints: list[ModbusSetpoint] = Field(default_factory=list)

    @field_validator("max_registers")
    @classmethod
    def _register_block(cls, n: int) -> int:
        if n > MAX_REGISTERS:
            raise ValueError(f"block too big: one Modbus read carries at most {MAX_REGISTERS} registers")
        return n

    @field_validator("max_bits")
    @classmethod
    def _bit_block(cls, n: int) -> int:
        if n > MAX_BITS:
            raise ValueError(f"block too big: one Modbus read carries at most {MAX_BITS} coils / inputs")
        return n

    @model_validator(mode="after")
    def _check(self) -> ModbusDevice:
        if not self.points and not self.setpoints:
            raise ValueError("a device needs points to read or setpoints to write")
        _no_overlap("points", self.points)
        _no_overlap("setpoints", self.setpoints)
        for i, p in enumerate(self.points):
            limit = self.max_bits if p.table in BIT_TABLES else self.max_registers
            if p.width > limit:
                raise ValueError(
                    f"points[{i}]: a {p.value_type} spans {p.width} registers, above max_registers {limit}"
                )
        return self


def _no_overlap(where: str, items: Sequence[_Encoding]) -> None:
    spans = sorted(
        ((e.table, e.address, e.address + e.width, i) for i, e in enumerate(items)), key=lambda s: s[:2]
    )
    for (table, _, end, i), (table2, start2, _, j) in itertools.pairwise(spans):
        if table == table2 and start2 < end:
            raise ValueError(
                f"{where}[{j}] ({table} {start2}) overlaps {where}[{i}] "
                f"({table} {items[i].address}..{end - 1}, {items[i].value_type})"
            )


class ModbusConfig(_Strict):
    """Modbus TCP devices polled by the agent; the setpoints they take from the setpoint gate."""

    devices: list[ModbusDevice] = Field(min_length=1)
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="first backoff after a lost link")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="the backoff's cap")

    @model_validator(mode="after")
    def _unique(self) -> ModbusConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        names: set[str] = set()
        readings: dict[tuple[str, str], str] = {}
        writes: dict[str, str] = {}
        for d, device in enumerate(self.devices):
            if device.name in names:
                raise ValueError(f"devices[{d}].name: {device.name!r} is used twice")
            names.add(device.name)
            for i, p in enumerate(device.points):
                key = (p.asset, p.signal)
                if key in readings:
                    raise ValueError(
                        f"devices[{d}].points[{i}]: {p.asset}/{p.signal} is already read by {readings[key]}"
                    )
                readings[key] = f"devices[{d}].points[{i}]"
            for i, s in enumerate(device.setpoints):
                if s.asset in writes:
                    raise ValueError(
                        f"devices[{d}].setpoints[{i}]: {s.asset} is already written by {writes[s.asset]}"
                    )
                writes[s.asset] = f"devices[{d}].setpoints[{i}]"
        return self

    def connector(self, name: str) -> PlantConnector:
        return ModbusConnector(self, name)


# --------------------------------------------------------------------------------------- codecs
class Codec:
    """Raw registers / bits ↔ engineering value, for one point or setpoint."""

    __slots__ = ("_bool", "_number", "_words", "offset", "scale", "swap_words", "value_type", "width")

    def __init__(self, e: _Encoding, byte_order: Order, word_order: Order) -> None:
        self.value_type = e.value_type
        self.width = e.width
        self.scale = e.scale
        self.offset = e.offset
        self.swap_words = (e.word_order or word_order) == "little"
        self._bool = self.value_type == "bool"
        fmt = "H" if self._bool else _FORMATS[self.value_type]
        self._number = struct.Struct(">" + fmt)
        # one register as two bytes: big-endian is Modbus' order, little swaps the two bytes
        self._words = struct.Struct(
            ("<" if (e.byte_order or byte_order) == "little" else ">") + "H" * self.width
        )

    def decode(self, raw: Sequence[int] | Sequence[bool], at: int) -> float:
        """The value whose first register (or bit) is ``raw[at]``."""
        if self._bool:
            return 1.0 if raw[at] else 0.0
        words = raw[at : at + self.width]
        if self.swap_words:
            words = words[::-1]
        number: float = self._number.unpack(self._words.pack(*words))[0]
        return number * self.scale + self.offset

    def encode(self, value: float) -> list[int]:
        """Registers (or one bit as 0/1) for ``value``; ValueError when it does not fit the type."""
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        raw = (value - self.offset) / self.scale
        if self._bool:
            if raw not in (0.0, 1.0):
                raise ValueError(f"a coil takes 0 or 1, got {value}")
            return [int(raw)]
        if self.value_type.startswith("float"):
            try:
                packed = self._number.pack(raw)
            except OverflowError:
                packed = b""
            if not packed or not math.isfinite(self._number.unpack(packed)[0]):
                raise ValueError(f"{value} overflows {self.value_type}")
        else:
            whole = round(raw)
            bits = 8 * self._number.size
            low, high = (
                (0, 2**bits - 1) if self.value_type[0] == "u" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            if not low <= whole <= high:
                raise ValueError(
                    f"{value} is raw {raw:g} after scale/offset, outside {self.value_type} [{low}, {high}]"
                )
            packed = self._number.pack(whole)
        words = list(self._words.unpack(packed))
        return words[::-1] if self.swap_words else words


@dataclass(frozen=True, slots=True)
class Slot:
    """A point inside a block: its offset from the block's first address and how to decode it."""

    at: int
    asset: str
    signal: str
    codec: Codec


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: Table
    start: int
    count: int
    slots: tuple[Slot, ...]

    @property
    def has_holes(self) -> bool:
        return sum(s.codec.width for s in self.slots) < self.count

    def describe(self) -> str:
        return f"{self.table} {self.start}..{self.start + self.count - 1}"


def plan_blocks(device: ModbusDevice, max_gap: int | None = None) -> list[Block]:
    """Group the device's points into as few reads as the gap and size limits allow."""
    gap = device.max_gap if max_gap is None else max_gap
    blocks: list[Block] = []
    for table in ("holding", "input", "coil", "discrete"):
        points = sorted((p for p in device.points if p.table == table), key=lambda p: p.address)
        limit = device.max_bits if table in BIT_TABLES else device.max_registers
        group: list[ModbusPoint] = []
        for p in points:
            if group:
                start, end = group[0].address, max(q.address + q.width for q in group)
                if p.address - end > gap or p.address + p.width - start > limit:
                    blocks.append(_block(device, group))
                    group = []
            group.append(p)
        if group:
            blocks.append(_block(device, group))
    return blocks


def _block(device: ModbusDevice, points: list[ModbusPoint]) -> Block:
    start = points[0].address
    count = max(p.address + p.width for p in points) - start
    slots = tuple(
        Slot(p.address - start, p.asset, p.signal, Codec(p, device.byte_order, device.word_order))
        for p in points
    )
    return Block(points[0].table, start, count, slots)


# ------------------------------------------------------------------------------------ the link
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
        delay = self._reconnect_min
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
                delay = self._reconnect_min
                await self._poll_loop(deliver)
            except LinkDown as exc:
                self._drop()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("%s: %s; reconnecting with backoff", self.label, exc)
                else:
                    log.debug("%s: still down: %s", self.label, exc)
            except Exception:  # a bug or a pymodbus surprise: never take the agent down with it
                self.stats.errors += 1
                self._drop()
                down_since = down_since or time.monotonic()
                log.exception("%s: unexpected error; reconnecting with backoff", self.label)
            raise_if_cancelling()  # pymodbus' wait_for (Python 3.11) may have eaten our cancel
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._reconnect_max)

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
                raw = await self._read(block.table, block.start, block.count)
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

    async def _read(self, table: Table, start: int, count: int) -> Sequence[int] | Sequence[bool]:
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
            back = codec.decode(await self._read(spec.table, spec.address, codec.width), 0)
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

    def observe(self, asset: str, metrics: Mapping[str, float], ts: float) -> None:
        """Modbus publishes nothing upstream."""
