"""``decode_registers`` against pymodbus' own converter: every type in every byte and word order."""

from __future__ import annotations

import pytest

from qxedge.connectors.modbus import ORDERS, decode_registers
from qxedge.testing.modbus_plc import ENCODINGS, SAMPLE, reference_words


@pytest.mark.parametrize(("kind", "byte_order", "word_order"), ENCODINGS)
def test_each_encoding_is_found_on_its_row(kind: str, byte_order: str, word_order: str) -> None:
    words = reference_words(kind, SAMPLE[kind], byte_order, word_order)
    rows = decode_registers(words, 40)
    name = next(n for n, orders in ORDERS.items() if orders == (byte_order, word_order))
    if kind in ("int16", "uint16"):  # no word order: shown on the row whose words are in order
        name = next(n for n, orders in ORDERS.items() if orders == (byte_order, "big"))
    row = next(r for r in rows if r.address == 40 and r.order == name)
    assert row.values[kind] == pytest.approx(SAMPLE[kind], rel=1e-6)  # type: ignore[index]


def test_scale_and_offset_apply_as_in_a_config() -> None:
    (row, *_) = decode_registers([1000], 0, scale=0.1, offset=-20)
    assert row.values == {"int16": pytest.approx(80.0), "uint16": pytest.approx(80.0)}


def test_values_that_run_past_the_range_are_left_out() -> None:
    rows = decode_registers([1, 2], 7)
    last = [r for r in rows if r.address == 8]
    assert [r.order for r in last] == ["ABCD", "BADC"] and all(
        set(r.values) == {"int16", "uint16"} for r in last
    )


def test_scale_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        decode_registers([1], 0, scale=0)
