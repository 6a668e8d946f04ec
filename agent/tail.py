"""``qxedge tail --config FILE``: the readings of a config's sources, live, as the agent decodes them.

Only the sources run: the ``mqtt`` entries through the agent's own ingest (:class:`MqttIngest`, the same
decoder and the same rejections with their reasons), the ``opcua`` and ``modbus`` connectors with their
setpoints removed (nothing can be written), and the ``source`` part of a ``sparkplug`` entry (read
only: no edge node, no births, no rebirth requests). No model, rule, safety gate, setpoint, outbox,
telemetry, audit log or ops endpoint is started. A line per reading (``--json``: an object per line),
a line per rejected MQTT message with its reason; until Ctrl-C, ``--count`` readings or ``--seconds``.
What an OPC UA or Modbus connector skips (a bad status, a non-finite value) it logs on stderr, once per
node and reason, as in the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

from qxedge.agent._patterns import names
from qxedge.agent.config import ConnectorEntry, EdgeConfig, load_config
from qxedge.connectors.readings import ReadingBatch, Rejected
from qxedge.core.errors import ConfigError, Problem

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Register ``tail`` on the CLI's subparsers."""
    from qxedge.agent.cli import _broker_arg, _positive

    p = sub.add_parser(
        "tail",
        help="show the readings of a config's sources live, as the agent decodes them (no models, no writes)",
        description="Connect the config's reading sources only (MQTT, OPC UA, Modbus, a Sparkplug source) "
        "and print each reading, and each rejected message with its reason, until Ctrl-C.",
    )
    p.add_argument("--config", "-c", type=Path, required=True, help="agent config (YAML)")
    p.add_argument("--broker", type=_broker_arg, metavar="URL", help="MQTT broker, mqtt://host:port")
    p.add_argument("--asset", action="append", metavar="PATTERN", help="only these assets (glob; repeatable)")
    p.add_argument(
        "--signal", action="append", metavar="PATTERN", help="only these signals (glob; repeatable)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=partial(_positive, cast=int), metavar="N", help="stop after N readings")
    p.add_argument("--seconds", type=_positive, metavar="S", help="stop after S seconds")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, broker_url=args.broker)
    printer = Printer(sys.stdout, args.asset or ["*"], args.signal or ["*"], args.json, args.count)
    return asyncio.run(tail(cfg, printer, seconds=args.seconds, say=_say))


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Printer:
    """Filters and prints readings and rejections; ``done`` is set once ``count`` readings are out."""

    def __init__(
        self, out: IO[str], assets: Sequence[str], signals: Sequence[str], as_json: bool, count: int | None
    ) -> None:
        self.out = out
        self.assets, self.signals = list(assets), list(signals)
        self.as_json = as_json
        self.count = count
        self.printed = 0
        self.rejected = 0
        self.done = asyncio.Event()

    def readings(self, source: str, batch: ReadingBatch) -> None:
        lines = []
        for asset, sig, ts, value in zip(batch.assets, batch.signals, batch.ts, batch.values, strict=True):
            if self.done.is_set():
                break
            if not (names(self.assets, asset) and names(self.signals, sig)):
                continue
            if self.as_json:
                doc = {"source": source, "asset": asset, "signal": sig, "ts": ts, "value": value}
                lines.append(json.dumps(doc))
            else:
                lines.append(f"{_when(ts)}  {asset}  {sig}  {value:g}  ({source})")
            self.printed += 1
            if self.count is not None and self.printed >= self.count:
                self.done.set()
        self._write(lines)

    def rejections(self, source: str, _messages: int, rejected: list[Rejected], now: float) -> None:
        lines = []
        for bad in rejected:
            self.rejected += 1
            if self.as_json:
                doc = {"source": source, "rejected": True, "topic": bad.topic, "ts": now}
                lines.append(json.dumps({**doc, "code": bad.code.value, "reason": bad.reason}))
            else:
                lines.append(f"{_when(now)}  REJECTED {bad.topic}: {bad.reason} ({bad.code.value})")
        self._write(lines)

    def _write(self, lines: list[str]) -> None:
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="milliseconds")


def sources_of(cfg: EdgeConfig) -> list[tuple[str, ConnectorEntry]]:
    """``(name, entry)`` of each entry that reads: mqtt, opcua / modbus with nodes / points, sparkplug
    with a source."""
    out = []
    for i, entry in enumerate(cfg.connectors):
        name = f"connectors[{i}]"
        if entry.opcua is not None and not entry.opcua.nodes:
            continue
        if entry.modbus is not None and not any(d.points for d in entry.modbus.devices):
            continue
        if entry.sparkplug is not None and entry.sparkplug.source is None:
            continue
        out.append((name, entry))
    return out


def read_only(entry: ConnectorEntry) -> ConnectorEntry:
    """The entry without its setpoints: a connector built from it has nothing it could write."""
    if entry.opcua is not None:
        return entry.model_copy(update={"opcua": entry.opcua.model_copy(update={"setpoints": {}})})
    if entry.modbus is not None:
        devices = [d.model_copy(update={"setpoints": []}) for d in entry.modbus.devices if d.points]
        return entry.model_copy(update={"modbus": entry.modbus.model_copy(update={"devices": devices})})
    return entry


async def tail(
    cfg: EdgeConfig,
    printer: Printer,
    *,
    seconds: float | None = None,
    say: Any = _say,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the sources until ``stop``, SIGINT / SIGTERM, ``printer.done`` or ``seconds``; 0."""
    from qxedge.agent._ingest import MqttIngest
    from qxedge.connectors.mqtt import MqttClient
    from qxedge.connectors.plant import PlantLink, ReadingSource

    sources = sources_of(cfg)
    if not sources:
        raise ConfigError([Problem("connectors", "no reading source to tail")], "tail")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    async def refuse(asset: str, value: float, source: str, data_ts: float) -> None:
        log.info("tail: a proposal of %s = %g from %s left alone (tail writes nothing)", asset, value, source)

    def link(name: str) -> PlantLink:
        return PlantLink(cfg.site, cfg.broker, partial(printer.readings, name), refuse)

    mqtt_entries = [(n, e) for n, e in sources if e.mqtt is not None]
    sparkplug_entries = [(n, e) for n, e in sources if e.sparkplug is not None]
    try:
        async with contextlib.AsyncExitStack() as stack:
            mqtt = None
            if mqtt_entries or sparkplug_entries:
                mqtt = await stack.enter_async_context(MqttClient(cfg.broker, role=f"tail-{cfg.site}"))
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            running = []
            for name, entry in mqtt_entries:
                assert mqtt is not None and entry.mqtt is not None
                ingest = MqttIngest(mqtt, [entry.mqtt], partial(printer.rejections, name))
                running.append(tasks.create_task(ingest.run(link(name)), name=f"tail:{name}"))
                say(f"qxedge tail: {name} mqtt {', '.join(entry.mqtt.topics)} on {cfg.broker.url}")
            for name, entry in sparkplug_entries:
                assert mqtt is not None
                running.append(tasks.create_task(_sparkplug(mqtt, entry, link(name)), name=f"tail:{name}"))
                say(f"qxedge tail: {name} sparkplug source on {cfg.broker.url}")
            for name, entry in sources:
                connector = read_only(entry).plant(name) if entry.opcua or entry.modbus else None
                if isinstance(connector, ReadingSource):
                    running.append(tasks.create_task(connector.run(link(name)), name=f"tail:{name}"))
                    say(f"qxedge tail: {name} {_describe(entry)}")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(printer.done.wait())]
            try:
                await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (*waiters, *running):
                    task.cancel()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    say(f"qxedge tail: {printer.printed} reading(s), {printer.rejected} rejected message(s)")
    return 0


def _describe(entry: ConnectorEntry) -> str:
    if entry.opcua is not None:
        return f"opcua {entry.opcua.endpoint}, {len(entry.opcua.nodes)} node(s)"
    assert entry.modbus is not None
    devices = ", ".join(f"{d.host}:{d.port} unit {d.unit}" for d in entry.modbus.devices if d.points)
    return f"modbus {devices}"


async def _sparkplug(mqtt: Any, entry: ConnectorEntry, link: Any) -> None:
    """The plant's Sparkplug edge nodes, read only: rebirth requests are not sent (a metric known only
    by an alias is skipped until the node's next birth)."""
    from qxedge.connectors.sparkplug_payload import NAMESPACE
    from qxedge.connectors.sparkplug_source import SparkplugSource

    cfg = entry.sparkplug
    assert cfg is not None and cfg.source is not None
    source = SparkplugSource(cfg.source, (cfg.group_id, cfg.edge_node_id), lambda _t, _p: None)
    subscriptions = [await mqtt.subscribe(f"{NAMESPACE}/{g}/#", qos=0) for g in cfg.source.groups]
    async with asyncio.TaskGroup() as tasks:
        for sub in subscriptions:
            tasks.create_task(_read_sparkplug(sub, source, link), name=f"tail:sparkplug:{sub.topic_filter}")


async def _read_sparkplug(subscription: Any, source: Any, link: Any) -> None:
    async for messages in subscription:
        batch = source.decode(messages, time.time())
        if len(batch):
            link.readings(batch)
