"""Registers and bits ↔ engineering values, and the plan of one poll's block reads. Pure."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from qxedge.connectors.modbus.config import (
    BIT_TABLES,
    FORMATS,
    ModbusDevice,
    ModbusPoint,
    Order,
    Table,
    _Encoding,
)


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
        fmt = "H" if self._bool else FORMATS[self.value_type]
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
