"""Plant connectors against real servers: each protocol's fast path against its naive baseline, same run.

    ./run bench connectors [--only modbus|opcua] [--seconds 2]   (opcua: bench/connectors_opcua.py)

modbus: ``qxedge.testing.Plc`` (pymodbus' TCP server) in its own process (250 holding registers, 120
input registers and 200 coils, all mapped to points) is polled back to back by the connector's own poll
(``DevicePoller.poll``: requests, decoding, one ReadingBatch per poll) for ``--seconds``, twice in
each of 3 rounds: once with the connector's block reads (4 requests per poll) and once with one read
per register or coil (``max_registers: 1, max_bits: 1``: 570 requests per poll), the way many gateways
poll. Rounds alternate the two so drifts of this shared machine hit both; the ratio of medians is the
figure.

Each protocol is one function ``name(seconds) -> dict`` in ``PROTOCOLS``; ``main()`` runs those
``--only`` selects and prints their tables and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qxedge.connectors.modbus import DevicePoller, ModbusDevice
from qxedge.core.errors import ConnectorError
from qxedge.testing import Plc
from qxedge.testing.bench_results import Results, add_save_option

HOLDING, INPUTS, COILS = 250, 120, 200


# --------------------------------------------------------------------------------------- modbus
async def _serve_modbus(port: int) -> None:
    plc = Plc(
        holding={a: a * 7 % 65536 for a in range(HOLDING)},
        inputs={a: a for a in range(INPUTS)},
        coils={a: a % 3 == 0 for a in range(COILS)},
        port=port,
        trace=False,
    )
    async with plc:
        await asyncio.Event().wait()  # until the parent terminates this process


def _modbus_device(port: int, per_register: bool) -> ModbusDevice:
    points: list[dict[str, Any]] = [
        {"asset": "line1/plc", "signal": f"hr{a}", "table": "holding", "address": a} for a in range(HOLDING)
    ]
    points += [
        {"asset": "line1/plc", "signal": f"ir{a}", "table": "input", "address": a} for a in range(INPUTS)
    ]
    points += [
        {"asset": "line1/plc", "signal": f"co{a}", "table": "coil", "address": a} for a in range(COILS)
    ]
    limits = {"max_registers": 1, "max_bits": 1} if per_register else {}
    name = "per-register" if per_register else "blocks"
    return ModbusDevice.model_validate(
        {"name": name, "host": "127.0.0.1", "port": port, "timeout_s": 5, "points": points, **limits}
    )


async def _poll_for(device: ModbusDevice, seconds: float) -> dict[str, float]:
    poller = DevicePoller(device, "bench", (0.5, 1.0))
    for _ in range(100):  # the server process may still be starting
        try:
            await poller.connect()
            break
        except ConnectorError:  # until the server listens
            await asyncio.sleep(0.1)
    else:
        raise SystemExit(f"no Modbus server on port {device.port}")
    try:
        polls = values = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            values += len(await poller.poll())
            polls += 1
    finally:
        poller.close()
    assert values == polls * (HOLDING + INPUTS + COILS), "a poll lost values"
    return {
        "requests/poll": len(poller.blocks),
        "polls/s": polls / elapsed,
        "values/s": values / elapsed,
        "ms/poll": 1000 * elapsed / polls,
        "requests/s": poller.stats.requests / elapsed,
    }


def modbus(seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Registers (and coils) per second: block reads against one read per register, same server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen([sys.executable, __file__, "--serve-modbus", str(port)])
    try:
        runs: dict[str, list[dict[str, float]]] = {"per-register": [], "blocks": []}
        for _ in range(rounds):
            for mode in runs:
                device = _modbus_device(port, per_register=mode == "per-register")
                runs[mode].append(asyncio.run(_poll_for(device, seconds)))
    finally:
        server.terminate()
        server.wait(10)
    rows: list[dict[str, Any]] = [
        {"mode": mode, **{k: statistics.median(r[k] for r in results) for k in results[0]}}
        for mode, results in runs.items()
    ]
    return {
        "title": f"modbus: {HOLDING} holding + {INPUTS} input registers + {COILS} coils per poll, "
        f"pymodbus server in its own process, {rounds} x {seconds:g} s per mode (medians)",
        "rows": rows,
        "ratio": rows[1]["values/s"] / rows[0]["values/s"],
        "ratio_of": "values/s, blocks / per-register",
    }


# ----------------------------------------------------------------------------------------- main
def opcua(seconds: float) -> dict[str, Any]:
    """OPC UA notifications through the connector against asyncua handlers (bench/connectors_opcua.py)."""
    path = Path(__file__).resolve().parent / "connectors_opcua.py"
    spec = importlib.util.spec_from_file_location("bench_connectors_opcua", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.opcua(seconds)
    return result


PROTOCOLS: dict[str, Callable[[float], dict[str, Any]]] = {"modbus": modbus, "opcua": opcua}


def _table(result: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = result["rows"]
    cols = list(rows[0])
    cells = [[f"{r[c]:,.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["modbus", "opcua"], help="one protocol (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode and round (3 rounds)")
    parser.add_argument("--serve-modbus", type=int, metavar="PORT", help=argparse.SUPPRESS)
    add_save_option(parser)
    args = parser.parse_args()
    results = Results(__file__, parser, args)
    if args.serve_modbus:
        asyncio.run(_serve_modbus(args.serve_modbus))
        return
    for name, bench in PROTOCOLS.items():
        if args.only not in (None, name):
            continue
        result = bench(args.seconds)
        print(result["title"])
        print(_table(result))
        print(f"ratio ({result['ratio_of']}): x{result['ratio']:.1f}\n", flush=True)
        results.records(result["title"], result["rows"])
        results.note(f"{name}: ratio ({result['ratio_of']}) x{result['ratio']:.2f}")
    if args.only is not None and args.only not in PROTOCOLS:
        raise SystemExit(f"{args.only}: not benchmarked yet")
    results.save()


if __name__ == "__main__":
    main()
