"""OPC UA: data-change notifications per second through the connector against asyncua's own
subscription handler, same server, same run.

    python bench/connectors_opcua.py [--seconds 2] [--variables 200]

An asyncua Server in its own process changes ``--variables`` Double variables back to back (each one
set to the round number, so nothing is coalesced by the server). The client side subscribes to all of
them (sampling interval 0, publishing interval 50 ms, queue size 1000 per item) for ``--seconds``, twice
in each of 3 rounds:

- ``asyncua handler``: ``client.create_subscription(50, handler)`` + ``subscribe_data_change`` with a
  ``datachange_notification(node, val, data)`` that counts, the way most Python gateways use asyncua
  (asyncua dispatches one task per notification);
- ``connector``: :class:`connectors.opcua.OpcUaConnector` run with a PlantLink whose ``readings``
  takes the batches (one per PublishResponse: source timestamps, numbers checked, (asset, signal)).

Rounds alternate the two so drifts of this shared machine hit both; medians are reported.
``changes/s`` is what the server made, ``notifications/s`` what reached the consumer (equal while the
client keeps up: a pure-Python server is the bottleneck here), ``calls/s`` how often the consumer was
called (one per notification for the handler, one per publish response for the connector). The
figure is the client's CPU time per notification (``process_time`` of the client process, asyncua's
decoding included; the server runs in another process) and the capacity it implies: notifications
one core of client takes per second. The ratio is connector / handler capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from asyncua import Client, Server, ua

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.opcua import OpcUaConfig
from qxedge.connectors.plant import PlantLink
from qxedge.connectors.readings import ReadingBatch
from qxedge.testing.bench_results import Results, add_save_option

VARIABLES = 200
PUBLISH_MS = 50.0
QUEUE = 1000


async def _serve(port: int, count: int) -> None:
    """Change every variable once per round, as fast as the server takes it, until killed."""
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # a closed session's late publishes
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:qxedge:bench")
    folder = await server.nodes.objects.add_object(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
    variables = [
        await folder.add_variable(ua.NodeId(f"Bench.v{i}", idx), ua.QualifiedName(f"v{i}", idx), 0.0)
        for i in range(count)
    ]
    async with server:
        k = 0
        while True:
            k += 1
            value = ua.DataValue(ua.Variant(float(k), ua.VariantType.Double))
            for var in variables:
                await server.write_attribute_value(var.nodeid, value)
            await asyncio.sleep(0)  # let the server publish


def _nodes(count: int) -> list[str]:
    return [f"ns=2;s=Bench.v{i}" for i in range(count)]


async def _wait_for_server(url: str) -> None:
    for _ in range(300):
        client = Client(url)
        try:
            await client.connect()
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        await client.disconnect()
        return
    raise SystemExit(f"no OPC UA server at {url}")


async def _handler_run(url: str, count: int, seconds: float) -> dict[str, float]:
    class Counter:
        n = 0
        top = 0.0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            self.n += 1
            self.top = max(self.top, val)

    counter = Counter()
    async with Client(url) as client:
        sub = await client.create_subscription(PUBLISH_MS, counter)
        nodes = [client.get_node(n) for n in _nodes(count)]
        await sub.subscribe_data_change(nodes, queuesize=QUEUE, sampling_interval=0)
        await asyncio.sleep(0.5)  # warm up: the initial values
        start_n, start_top, started, cpu = counter.n, counter.top, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        n, elapsed, cpu = counter.n - start_n, time.perf_counter() - started, time.process_time() - cpu
        rounds = counter.top - start_top
        await sub.delete()
    return _row(n, n, rounds * count, elapsed, cpu)


async def _connector_run(url: str, count: int, seconds: float) -> dict[str, float]:
    cfg = OpcUaConfig.model_validate(
        {
            "endpoint": url,
            "nodes": [
                {"node": n, "asset": "line1/bench", "signal": f"v{i}"} for i, n in enumerate(_nodes(count))
            ],
            "sampling_interval_ms": 0,
            "publishing_interval_ms": PUBLISH_MS,
            "queue_size": QUEUE,
        }
    )
    connector = cfg.connector("opcua[bench]")
    received = 0
    top = 0.0

    def readings(batch: ReadingBatch) -> None:
        nonlocal received, top
        received += len(batch)
        top = max(top, max(batch.values))

    async def propose(asset: str, value: float, source: str, data_ts: float) -> None:
        return None

    link = PlantLink("bench", BrokerConfig(), readings, propose)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(connector.run(link), name="opcua")
        await asyncio.wait_for(connector.connected.wait(), 30)
        await asyncio.sleep(0.5)
        start_n, start_top, start_calls = received, top, connector.stats.deliveries
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        n, elapsed, cpu = received - start_n, time.perf_counter() - started, time.process_time() - cpu
        calls, rounds = connector.stats.deliveries - start_calls, top - start_top
        task.cancel()
    return _row(n, calls, rounds * count, elapsed, cpu)


def _row(n: int, calls: int, changes: float, elapsed: float, cpu: float) -> dict[str, float]:
    return {
        "changes/s": changes / elapsed,  # made by the server (the newest round seen x variables)
        "notifications/s": n / elapsed,  # received by the consumer
        "calls/s": calls / elapsed,
        "client cpu %": 100 * cpu / elapsed,
        "us/notification": 1e6 * cpu / max(n, 1),  # client CPU, all of it (decoding included)
        "capacity/s": n / cpu if cpu else 0.0,  # notifications one core of client could take
    }


def opcua(seconds: float, rounds: int = 3, variables: int = VARIABLES) -> dict[str, Any]:
    """Notifications per second: the connector's batches against asyncua's per-notification handler."""
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"opc.tcp://127.0.0.1:{port}/bench/"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--variables", str(variables)])
    try:
        asyncio.run(_wait_for_server(url))
        runs: dict[str, list[dict[str, float]]] = {"asyncua handler": [], "connector": []}
        for _ in range(rounds):
            runs["asyncua handler"].append(asyncio.run(_handler_run(url, variables, seconds)))
            runs["connector"].append(asyncio.run(_connector_run(url, variables, seconds)))
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
    rows: list[dict[str, Any]] = [
        {"mode": mode, **{k: statistics.median(r[k] for r in results) for k in results[0]}}
        for mode, results in runs.items()
    ]
    return {
        "title": f"opcua: {variables} Double variables changed back to back by an asyncua Server in its own "
        f"process; subscription at {PUBLISH_MS:g} ms, {rounds} x {seconds:g} s per mode (medians)",
        "rows": rows,
        "ratio": rows[1]["capacity/s"] / rows[0]["capacity/s"],
        "ratio_of": "client capacity (notifications per client CPU second), connector / asyncua handler",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode and round (3 rounds)")
    parser.add_argument("--variables", type=int, default=VARIABLES)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    add_save_option(parser)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.variables))
        return
    result = opcua(args.seconds, variables=args.variables)
    print(result["title"])
    rows = result["rows"]
    cols = list(rows[0])
    print("  ".join(f"{c:>18}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>18,.1f}" if isinstance(r[c], float) else f"{r[c]:>18}" for c in cols))
    print(f"ratio ({result['ratio_of']}): x{result['ratio']:.2f}", flush=True)
    results = Results(__file__, parser, args)
    results.records(result["title"], rows)
    results.note(f"ratio ({result['ratio_of']}) x{result['ratio']:.2f}")
    results.save()


if __name__ == "__main__":
    main()
