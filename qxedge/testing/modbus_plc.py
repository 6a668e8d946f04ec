"""A Modbus TCP device of our own for tests and benches: pymodbus' server over its SimDevice datastore.

Four tables of ``SIZE`` registers / bits each (coils, discrete inputs, holding, input registers), set
from the given ``{address: value}`` maps; ``unmapped`` holding registers answer *illegal address*. Every
request is recorded as ``(function code, address, count)``::

    async with Plc(holding={0: 123}) as plc:  # port 0: a free one, in plc.port
        ...
    assert plc.reads() == 1
"""

from __future__ import annotations

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 300  # registers / bits per table
READS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}  # the read function codes
ENCODINGS = [  # (type, byte_order, word_order): every way a value can sit in registers
    (t, b, w)
    for t in ("int16", "uint16", "int32", "uint32", "float32", "float64")
    for b in ("big", "little")
    for w in ("big", "little")
]
SAMPLE = {  # a value of each type that uses its whole range
    "int16": -12345,
    "uint16": 54321,
    "int32": -1234567890,
    "uint32": 3234567890,
    "float32": -1.5e-3,
    "float64": 6.02214076e23,
}


def reference_words(kind: str, value: float, byte_order: str, word_order: str) -> list[int]:
    """Registers of ``value`` by pymodbus' own converter; the bytes of each register swapped on request."""
    dt = ModbusClientMixin.DATATYPE[kind.upper()]
    value = value if kind.startswith("float") else round(value)
    word_order_arg = "big" if word_order == "big" else "little"
    regs = ModbusClientMixin.convert_to_registers(value, dt, word_order=word_order_arg)  # type: ignore[arg-type]
    return [((w & 0xFF) << 8) | (w >> 8) for w in regs] if byte_order == "little" else list(regs)


class Plc:
    """A pymodbus TCP server (its SimDevice datastore) that records every request it receives."""

    def __init__(
        self,
        *,
        holding: dict[int, int] | None = None,
        inputs: dict[int, int] | None = None,
        coils: dict[int, bool] | None = None,
        discretes: dict[int, bool] | None = None,
        unmapped: range = range(0),  # holding registers the device does not map (illegal address)
        port: int = 0,
        trace: bool = True,  # record requests (``requests``, ``reads()``); benches turn it off
    ) -> None:
        def words(values: dict[int, int] | None) -> list[int]:
            out = [0] * SIZE
            for address, word in (values or {}).items():
                out[address] = word
            return out

        def bits(values: dict[int, bool] | None) -> list[bool]:
            out = [False] * SIZE
            for address, bit in (values or {}).items():
                out[address] = bit
            return out

        self.device = SimDevice(
            id=0,  # every unit id
            simdata=(
                [SimData(0, values=bits(coils), datatype=DataType.BITS)],
                [SimData(0, values=bits(discretes), datatype=DataType.BITS)],
                [
                    SimData(start, values=words(holding)[start:end], datatype=DataType.REGISTERS)
                    for start, end in (
                        [(0, unmapped.start), (unmapped.stop, SIZE)] if unmapped else [(0, SIZE)]
                    )
                    if end > start
                ],
                [SimData(0, values=words(inputs), datatype=DataType.REGISTERS)],
            ),
        )
        self.port = port
        self.trace = trace
        self.requests: list[tuple[int, int, int]] = []  # (function code, address, count)
        self._server: ModbusTcpServer | None = None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.function_code, pdu.address, pdu.count))
        return pdu

    def reads(self) -> int:
        return sum(1 for fc, _, _ in self.requests if fc in READS)

    async def start(self) -> Plc:
        self._server = ModbusTcpServer(
            self.device, address=("127.0.0.1", self.port), trace_pdu=self._trace if self.trace else None
        )
        await self._server.serve_forever(background=True)
        if self.port == 0:
            self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> Plc:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
