"""Config models of the Modbus TCP connector: devices, typed points, setpoints (see the package docs).

Pydantic only: importing this module imports no pymodbus.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from qxedge.connectors.plant import PlantConnector

Table = Literal["holding", "input", "coil", "discrete"]
ValueType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]

MAX_REGISTERS = 125  # one read of holding / input registers (Modbus application protocol, 6.3)
MAX_BITS = 2000  # one read of coils / discrete inputs
BIT_TABLES = ("coil", "discrete")
FORMATS: dict[str, str] = {
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
        return 1 if self.value_type == "bool" else struct.calcsize(FORMATS[self.value_type]) // 2

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
        from qxedge.connectors.modbus._poller import ModbusConnector

        return ModbusConnector(self, name)
