"""Modbus TCP: per-device polling with block reads, typed points, setpoint writes with read-back.

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
another; a lost or unanswered link closes the connection and reconnects with the jittered exponential
backoff of :mod:`qxedge.core.backoff` (``reconnect_min_s`` doubling up to ``reconnect_max_s``). A
device exception response is counted and logged (once per block and code), the link stays up.

``write(asset, value)`` (called by the setpoint gate only) encodes the value, writes it (function 5,
6 or 16), reads the register(s) back and delivers the value read as the reading ``readback_signal`` of
the asset, so the safety envelope's read-back check sees what the device holds. No connection or a
device exception raises :class:`~qxedge.core.errors.ConnectorError`.

Modules: :mod:`.config` (the pydantic models, no pymodbus), :mod:`.codec` (``Codec``, ``plan_blocks``:
pure), :mod:`.decodings` (``decode_registers``: a run of registers under every type and order, for
``qxedge discover``; pure), ``_poller`` (``DevicePoller``, ``ModbusConnector``: pymodbus, imported on
first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.connectors.modbus.codec import Block, Codec, Slot, plan_blocks
from qxedge.connectors.modbus.config import (
    MAX_BITS,
    MAX_REGISTERS,
    ModbusConfig,
    ModbusDevice,
    ModbusPoint,
    ModbusSetpoint,
)
from qxedge.connectors.modbus.decodings import ORDERS, REGISTER_TYPES, Decoded, decode_registers
from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.connectors.modbus._poller import (
        DevicePoller,
        DeviceRefused,
        LinkDown,
        ModbusConnector,
        ModbusStats,
    )

__all__ = [
    "MAX_BITS",
    "MAX_REGISTERS",
    "ORDERS",
    "REGISTER_TYPES",
    "Block",
    "Codec",
    "Decoded",
    "DevicePoller",
    "DeviceRefused",
    "LinkDown",
    "ModbusConfig",
    "ModbusConnector",
    "ModbusDevice",
    "ModbusPoint",
    "ModbusSetpoint",
    "ModbusStats",
    "Slot",
    "decode_registers",
    "plan_blocks",
]

__getattr__ = lazy_exports(
    __name__,
    {
        name: "._poller"
        for name in ("DevicePoller", "DeviceRefused", "LinkDown", "ModbusConnector", "ModbusStats")
    },
)
