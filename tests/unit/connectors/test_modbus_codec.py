"""The Modbus connector's pure parts: the codec (every type, byte and word order, against pymodbus' own
converter) and the config's errors, each naming its path. No server: tests/integration/test_modbus.py
polls and writes a real one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.config import load_config
from qxedge.connectors.modbus import Codec, ModbusConfig, ModbusPoint
from qxedge.core.errors import ConfigError
from qxedge.testing.modbus_plc import ENCODINGS, SAMPLE, reference_words


def test_codec_round_trip_and_range_errors() -> None:
    """Logic only: encode is the inverse of decode for every type and order; misfits are refused."""
    for kind, byte_order, word_order in ENCODINGS:
        point = ModbusPoint(asset="a", signal="s", address=0, type=kind, scale=0.5, offset=3)  # type: ignore[arg-type]
        codec = Codec(point, byte_order, word_order)  # type: ignore[arg-type]
        raw = SAMPLE[kind] if kind.startswith("float") else SAMPLE[kind] // 2
        value = raw * 0.5 + 3
        words = codec.encode(value)
        assert len(words) == point.width and all(0 <= w <= 0xFFFF for w in words)
        assert words == reference_words(kind, (value - 3) / 0.5, byte_order, word_order)
        assert codec.decode(words, 0) == pytest.approx(value, rel=1e-6)
    u16 = Codec(ModbusPoint(asset="a", signal="s", address=0, scale=0.001), "big", "big")
    assert u16.encode(0.75) == [750]
    for bad, reason in ((70.0, "outside uint16"), (-0.001, "outside uint16"), (math.nan, "not a finite")):
        with pytest.raises(ValueError, match=reason):
            u16.encode(bad)
    coil = Codec(ModbusPoint(asset="a", signal="s", table="coil", address=0), "big", "big")
    assert coil.encode(1) == [1] and coil.encode(0) == [0]
    with pytest.raises(ValueError, match="0 or 1"):
        coil.encode(0.5)
    with pytest.raises(ValueError, match="overflows float32"):
        Codec(ModbusPoint(asset="a", signal="s", address=0, type="float32"), "big", "big").encode(1e39)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "points": [
                    {"asset": "a", "signal": "x", "address": 10, "type": "float32"},
                    {"asset": "a", "signal": "y", "address": 11},
                ]
            },
            "points[1] (holding 11) overlaps points[0] (holding 10..11, float32)",
        ),
        (
            {"points": [{"asset": "a", "signal": "x", "table": "coil", "address": 0, "type": "float32"}]},
            "points[0]: type float32 needs registers: the coil table holds single bits",
        ),
        (
            {"points": [{"asset": "a", "signal": "x", "address": 0, "type": "bool"}]},
            "type bool fits the coil and discrete tables, not holding registers",
        ),
        ({"max_registers": 126}, "max_registers: block too big: one Modbus read carries at most 125"),
        ({"max_bits": 4000}, "max_bits: block too big: one Modbus read carries at most 2000"),
        (
            {"max_registers": 2, "points": [{"asset": "a", "signal": "x", "address": 0, "type": "float64"}]},
            "points[0]: a float64 spans 4 registers, above max_registers 2",
        ),
        ({"byte_order": "middle"}, "byte_order: Input should be 'big' or 'little'"),
        (
            {"points": [{"asset": "a", "signal": "x", "address": 0, "word_order": "ABCD"}]},
            "points[0].word_order: Input should be 'big' or 'little'",
        ),
        (
            {"points": [{"asset": "a", "signal": "x", "address": 65535, "type": "int32"}]},
            "runs past the last address",
        ),
        ({"points": [{"asset": "a", "signal": "x", "address": 0, "scale": 0}]}, "scale must not be 0"),
        (
            {"setpoints": [{"asset": "a", "table": "input", "address": 0}]},
            "setpoints[0].table: Input should be 'holding' or 'coil'",
        ),
        ({"points": [], "setpoints": []}, "a device needs points to read or setpoints to write"),
        ({"unit": 300}, "unit: Input should be less than or equal to 255"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_config_errors_name_the_path(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    dev = {
        "name": "plc",
        "host": "10.0.0.20",
        "points": [{"asset": "a", "signal": "x", "address": 0}],
        **change,
    }
    path = tmp_path / "edge.yaml"
    path.write_text(json.dumps({"site": "s", "connectors": [{"modbus": {"devices": [dev]}}]}))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    text = str(err.value)
    assert "connectors[0].modbus.devices[0]" in text and message in text, text


def test_config_errors_across_devices() -> None:
    point = {"asset": "a", "signal": "x", "address": 0}
    for devices, message in (
        (
            [
                {"name": "p", "host": "h", "points": [point]},
                {"name": "p", "host": "g", "points": [{**point, "signal": "y"}]},
            ],
            "devices[1].name: 'p' is used twice",
        ),
        (
            [{"name": "p", "host": "h", "points": [point]}, {"name": "q", "host": "g", "points": [point]}],
            "devices[1].points[0]: a/x is already read by devices[0].points[0]",
        ),
        (
            [
                {"name": "p", "host": "h", "setpoints": [{"asset": "a", "address": 0}]},
                {"name": "q", "host": "g", "setpoints": [{"asset": "a", "address": 5}]},
            ],
            "devices[1].setpoints[0]: a is already written by devices[0].setpoints[0]",
        ),
    ):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            ModbusConfig.model_validate({"devices": devices})
