"""Every way the connector can decode a run of registers: each register read as the start of a value of
each type, in each byte and word order (what ``qxedge discover modbus://`` shows). Pure.

The orders are named by where the bytes of a 32-bit value ``0xAABBCCDD`` sit in the registers:
``ABCD`` (``byte_order: big``, ``word_order: big``: Modbus' own), ``CDAB`` (words swapped), ``BADC``
(bytes swapped within each register) and ``DCBA`` (both). A 16-bit value has no word order: it is shown
on the ``ABCD`` and ``BADC`` rows only. Values are decoded by the connector's own :class:`~.codec.Codec`,
so ``raw * scale + offset`` is what the agent would receive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qxedge.connectors.modbus.codec import Codec
from qxedge.connectors.modbus.config import ModbusPoint, Order, ValueType

ORDERS: dict[str, tuple[Order, Order]] = {  # name -> (byte_order, word_order)
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}
REGISTER_TYPES: tuple[ValueType, ...] = ("int16", "uint16", "int32", "uint32", "float32", "float64")


@dataclass(frozen=True, slots=True)
class Decoded:
    """The values that start at ``address``, read in one order; a type is missing where it does not
    apply (a 16-bit type on a word-swapped row) or where the range ends before the value does."""

    address: int
    order: str  # ABCD, CDAB, BADC or DCBA
    values: dict[ValueType, float]


def decode_registers(
    words: Sequence[int], start: int, *, scale: float = 1.0, offset: float = 0.0
) -> list[Decoded]:
    """Up to four rows (one per order) per register of ``words``, the first at address ``start``; a
    word order of ``little`` reverses all the registers of a value (two, or four for float64), as the
    connector does. ValueError when scale is 0 or not finite (as in a config)."""
    codecs: dict[str, list[tuple[ValueType, Codec]]] = {}
    for order, (byte_order, word_order) in ORDERS.items():
        codecs[order] = []
        for kind in REGISTER_TYPES:
            point = ModbusPoint(
                asset="discover",
                signal="value",
                address=0,
                type=kind,
                byte_order=byte_order,
                word_order=word_order,
                scale=scale,
                offset=offset,
            )
            if point.width == 1 and word_order == "little":
                continue  # the same as the row with the words in order
            codecs[order].append((kind, Codec(point, "big", "big")))
    rows = []
    for at in range(len(words)):
        for order, kinds in codecs.items():
            values = {
                kind: codec.decode(words, at) for kind, codec in kinds if at + codec.width <= len(words)
            }
            if values:
                rows.append(Decoded(start + at, order, values))
    return rows
