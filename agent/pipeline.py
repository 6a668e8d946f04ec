"""The agent's closed loop: readings in → feature windows → inference → rules → setpoints out.

The plant broker (and, when configured, a separate data-center uplink) and every plant connector run
in one TaskGroup. Connectors plug in through three narrow Protocols (:mod:`qxedge.connectors.plant`):

- every reading source (the built-in MQTT JSON ingest, OPC UA, Modbus, Sparkplug) adds its batches to
  the pending ReadingBatch; the MQTT ingest decodes each *batch* of reading messages (all that one
  wake-up of the MQTT client read) right where it was read, with no task in between, and what is
  invalid is dead-lettered (``qx/v1/{site}/deadletter``, with the reason);
- the evaluation task wakes every ``window.every_s`` (or as soon as readings are pending with
  ``trigger: readings``), swaps the pending batch out and runs windows + inference, then applies the
  rules. A small batch whose previous evaluation took under ``INLINE_EVALUATION_S`` runs on the loop
  (the incremental window engine and a small model: tens of µs, less than the hand-off to a thread
  and back); anything bigger runs in a worker thread (Polars and ONNX Runtime release the GIL, the loop
  keeps ingesting);
- every proposal (rules, the production day, ``qx/v1/{site}/proposals/#``, Sparkplug DCMD) goes
  through the setpoint gate: safety envelope, audit row, then the setpoint topic and the setpoint sinks;
- after each evaluation the evaluation observers (the Sparkplug edge node, telemetry) hear of what
  changed; telemetry goes upstream through the disk outbox; plans go to the data center with a deadline;
- every accepted reading is also held for the history upstream (:mod:`qxedge.agent.history`), which
  cuts, encodes (in a thread) and puts compressed batches in the same outbox.

The retained ``online`` state is published on every connect; ``offline`` is the MQTT will, and is
published on a graceful stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from qxedge.agent._ingest import MqttIngest
from qxedge.agent._stalls import gc_pauses, watch_lag
from qxedge.agent.audit import AuditLog
from qxedge.agent.clock import Clock
from qxedge.agent.config import EdgeConfig
from qxedge.agent.console import Console
from qxedge.agent.day import ProductionDay
from qxedge.agent.decisions import DerateRule, Scored
from qxedge.agent.features import SMALL_BATCH, Features, FeatureWindow
from qxedge.agent.gate import (
    LockScope,
    SetpointGate,
    inputs_unknown,
    named_assets,
    retained_reaches_wildcards,
)
from qxedge.agent.history import HistoryRecorder
from qxedge.agent.inference import OnnxModel
from qxedge.agent.metrics import AgentMetrics
from qxedge.agent.safety import Latest, Proposal, Safety
from qxedge.agent.telemetry import TelemetryPublisher
from qxedge.connectors.mqtt import MqttClient, PendingAcks, Publication, each_message, site_topic
from qxedge.connectors.outbox import Outbox
from qxedge.connectors.plant import (
    Evaluation,
    EvaluationObserver,
    PlantConnector,
    PlantLink,
    ReadingSource,
    SetpointSink,
)
from qxedge.connectors.readings import ReadingBatch, Rejected
from qxedge.core.ops_server import OpsServer, OpsStats, check_listen
from qxedge.hybrid.client import OffloadClient

if TYPE_CHECKING:
    from qxedge.agent.models.deploy import ModelDeployer
    from qxedge.agent.models.shadow import Shadow

log = logging.getLogger(__name__)

DEADLETTER_PAYLOAD_LIMIT = 64 * 1024
INLINE_EVALUATION_S = 0.0005  # an evaluation this quick runs on the loop (bench/latency.py)


@dataclass(slots=True)
class AgentCounts:
    """The agent's own counters, bumped on the hot path; readers take a snapshot, :meth:`Agent.stats`."""

    messages: int = 0
    readings: int = 0
    deadletters: int = 0
    deadletter_reasons: Counter[str] = field(default_factory=Counter)  # by RejectCode (a fixed set)
    evaluations: int = 0
    inferences: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    max_scores: dict[str, float] = field(default_factory=dict)
    proposals: int = 0


@dataclass(frozen=True, slots=True)
class ModelStats:
    name: str
    provider: str  # the ONNX Runtime execution provider running it
    sha256: str


@dataclass(frozen=True, slots=True)
class AgentStats:
    """What the agent has done and holds, as of one moment (:meth:`Agent.stats`): what /metrics exports.
    The mappings are copies; those of parts not started yet (gate, offload, outbox) are empty."""

    site: str
    messages: int  # MQTT messages received on reading topics
    readings: int  # readings accepted (MQTT and plant connectors)
    deadletters: int
    deadletter_reasons: Mapping[str, int]
    evaluations: int
    inferences: int  # assets scored
    proposals: int  # setpoint proposals made by the agent's rules
    verdicts: Mapping[str, int]  # the setpoint gate's: accepted, clamped, refused, written, alarms...
    offload: Mapping[str, int]  # jobs, results, fallbacks, late...
    broker_connected: bool
    broker_reconnects: int
    publishes_dropped: int  # messages that could not be queued for the plant broker
    setpoints_stale_dropped: int  # setpoints not sent because the plant broker link was down
    broker_unacked: int  # QoS 1 messages not yet acknowledged by the plant broker
    outbox_stored: int  # disk outbox records not yet acknowledged upstream
    outbox_alarm: bool  # the disk outbox overflows or its disk fails
    outbox_records: Mapping[str, int]  # accepted, written, sent, acked, confirmed...
    window_rows: int  # readings held in the feature windows
    models: tuple[ModelStats, ...]
    ops: OpsStats | None  # the /metrics endpoint's connections (None while it does not listen)
    # (asset, model) -> the newest score; asset -> the setpoint written last (only assets the models
    # and the safety envelopes name: configured patterns)
    asset_scores: Mapping[tuple[str, str], float] = field(default_factory=dict)
    asset_setpoints: Mapping[str, float] = field(default_factory=dict)
    # deployed models (agent/models/deploy.py): per configured model, ModelLifecycle.as_dict() (no
    # ``deploy:`` section: empty); for /status and `qxedge status`
    model_lifecycle: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # the history upstream: batches, readings, bytes put in the outbox; refused_batches/readings,
    # excluded readings; held (readings waiting for the next cut). Empty when it is off.
    history: Mapping[str, int] = field(default_factory=dict)
    datacenter_silent: bool = False  # offload.alarm_after or more offloads in a row fell back locally
    offload_unanswered: int = 0  # offloads in a row that fell back locally


def deadletter_payload(rejected: Rejected, ts: float) -> bytes:
    """JSON for ``qx/v1/{site}/deadletter``: topic, reason, and the payload (base64 when not UTF-8)."""
    raw = rejected.payload[:DEADLETTER_PAYLOAD_LIMIT]
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    doc = {
        "topic": rejected.topic,
        "reason": rejected.reason,
        "code": rejected.code.value,
        "payload": text,
        "encoding": encoding,
        "bytes": len(rejected.payload),
        "truncated": len(rejected.payload) > DEADLETTER_PAYLOAD_LIMIT,
        "ts": ts,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Agent:
    """The edge agent; ``await agent.run(stop)`` runs until ``stop`` is set or the task is cancelled."""

    def __init__(self, config: EdgeConfig, clock: Clock | None = None) -> None:
        """``clock``: the plant clock of the production day (default: the wall clock in the planning
        time zone; ``qxedge demo`` passes a compressed one)."""
        self.config = config
        self.site = config.site
        self.counts = AgentCounts()
        self.models = {m.name: OnnxModel(m) for m in config.models}
        self.rules = [DerateRule(r) for r in config.rules]
        w = config.window
        self.window = FeatureWindow(w.length_s, w.stats, w.min_samples, w.min_coverage)
        self.ready = asyncio.Event()
        self.safety = Safety(config.safety, time.time())
        self.config_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
        self.gate: SetpointGate | None = None
        self.offload: OffloadClient | None = None
        self.mqtt: MqttClient | None = None
        self.uplink: MqttClient | None = None  # the data center's broker (the plant's when not configured)
        self.outbox: Outbox | None = None
        self.ops: OpsServer | None = None
        self.console: Console | None = None  # the web console and /status (ops.console)
        self.metrics = AgentMetrics(self.stats)
        self._inference_seconds = {  # labelled once: a labels() lookup per evaluation costs more
            name: self.metrics.inference_seconds.labels(self.site, name, m.provider)
            for name, m in self.models.items()
        }
        self._pending = ReadingBatch()
        self._fresh = asyncio.Event()  # readings are pending (window.trigger: readings)
        self._full_now = False  # the full evaluation is due (its timer fired, or none ran yet)
        self._latest: dict[tuple[str, str], float] = {}
        self._readings: Latest = {}  # the newest reading per (asset, signal), as of the last evaluation
        self._signals: dict[str, set[str]] = {}  # asset -> every signal it had readings of (for _observe)
        self._evaluated_at = 0.0
        self._evaluation_s = float("inf")  # how long the last evaluation took (none yet: unknown)
        self.inline_evaluation_s = INLINE_EVALUATION_S
        self.day: ProductionDay | None = None
        self.clock = clock
        if clock is None and config.planning is not None:
            self.clock = Clock(config.planning.grid())
        self.plant: list[PlantConnector] = [  # what the connectors: entries built, beside the MQTT ingest
            connector
            for i, entry in enumerate(config.connectors)
            if (connector := entry.plant(f"connectors[{i}]")) is not None
        ]
        self.sources = [c for c in self.plant if isinstance(c, ReadingSource)]
        self.sinks = [c for c in self.plant if isinstance(c, SetpointSink)]
        self.observers: list[EvaluationObserver] = [
            c for c in self.plant if isinstance(c, EvaluationObserver)
        ]
        self.telemetry: TelemetryPublisher | None = None
        self.deployer: ModelDeployer | None = None  # with a ``deploy:`` section, once running
        self.shadows: Mapping[str, Shadow] = {}  # model name -> the new model scored beside it
        self._shadow_work: list[Callable[[], None]] = []  # an evaluation's shadow scoring, after its decision
        self.reloader: Callable[[], EdgeConfig] | None = None  # SIGHUP: the config, loaded again
        self._reload_wanted = asyncio.Event()
        self.history: HistoryRecorder | None = None

    # ModelHost (agent/models/deploy.py): the deployer swaps models and shadows between evaluations;
    # each swap is a new mapping, so an evaluation running in a thread keeps the one it started with
    def in_force(self, name: str) -> OnnxModel | None:
        return self.models.get(name)

    def put_model(self, model: OnnxModel) -> None:
        self._inference_seconds[model.name] = self.metrics.inference_seconds.labels(
            self.site, model.name, model.provider
        )
        self.models = {**self.models, model.name: model}

    def put_shadow(self, name: str, shadow: Shadow | None) -> None:
        shadows = dict(self.shadows)
        if shadow is None:
            shadows.pop(name, None)
        else:
            shadows[name] = shadow
        self.shadows = shadows

    def threshold(self, name: str) -> float:
        """The first rule's ``above`` on model ``name`` (1.0, the calibrated edge of normal, without)."""
        return next((r.config.above for r in self.rules if r.config.model == name), 1.0)

    def request_reload(self) -> None:
        """SIGHUP: reload models, rules and envelopes from the config (agent/reload.py)."""
        self._reload_wanted.set()

    def stats(self) -> AgentStats:
        """A snapshot of the agent's counters and of what its parts hold."""
        c, mqtt, box = self.counts, self.mqtt, self.outbox
        return AgentStats(
            site=self.site,
            messages=c.messages,
            readings=c.readings,
            deadletters=c.deadletters,
            deadletter_reasons=dict(c.deadletter_reasons),
            evaluations=c.evaluations,
            inferences=c.inferences,
            proposals=c.proposals,
            verdicts=dict(self.gate.verdicts) if self.gate is not None else {},
            offload=dict(self.offload.stats) if self.offload is not None else {},
            broker_connected=mqtt is not None and mqtt.connected,
            broker_reconnects=mqtt.reconnects if mqtt is not None else 0,
            publishes_dropped=mqtt.dropped_publishes if mqtt is not None else 0,
            setpoints_stale_dropped=mqtt.stale_dropped if mqtt is not None else 0,
            broker_unacked=mqtt.outbox_depth if mqtt is not None else 0,
            outbox_stored=box.depth + box.pending if box is not None else 0,
            outbox_alarm=box is not None and (box.overflowing or box.error is not None),
            outbox_records=dict(box.stats) if box is not None else {},
            window_rows=self.window.rows,
            models=tuple(ModelStats(name, m.provider, m.sha256) for name, m in self.models.items()),
            ops=self.ops.stats() if self.ops is not None else None,
            asset_scores=dict(self._latest),
            asset_setpoints=dict(self.gate.current) if self.gate is not None else {},
            model_lifecycle=(
                {n: s.as_dict() for n, s in self.deployer.stats().items()}
                if self.deployer is not None
                else {}
            ),
            history={**self.history.stats, "held": self.history.held} if self.history is not None else {},
            datacenter_silent=self.offload is not None and self.offload.silent,
            offload_unanswered=self.offload.unanswered if self.offload is not None else 0,
        )

    @property
    def providers(self) -> dict[str, str]:
        return {name: m.provider for name, m in self.models.items()}

    def topic(self, suffix: str) -> str:
        return site_topic(self.site, suffix)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        check_listen(self.config.ops)  # a taken ops.port stops the start before the broker hears of it
        state = self.topic("agent/state")
        async with MqttClient(
            self.config.broker,
            role=f"agent-{self.site}",
            will=Publication(state, b"offline"),
            birth=(Publication(state, b"online"),),
            fresh_only=(self.topic("setpoints/#"),),  # never written late after an outage
            start_offline=True,  # readings, telemetry and the outbox go on while the broker is away
        ) as mqtt:
            self.mqtt = mqtt
            try:
                await self._serve(mqtt, stop)
            finally:  # acknowledged before the DISCONNECT; with no broker now, the will says it
                await mqtt.publish_acked(state, b"offline", retain=True)
                log.info(
                    "agent %s stopped: %d readings, %d dead letters, %d inferences, verdicts %s",
                    self.site,
                    self.counts.readings,
                    self.counts.deadletters,
                    self.counts.inferences,
                    dict(self.gate.verdicts) if self.gate else {},
                )

    async def _serve(self, mqtt: MqttClient, stop: asyncio.Event | None) -> None:
        mqtt_sources = [entry.mqtt for entry in self.config.connectors if entry.mqtt is not None]
        ingest = MqttIngest(mqtt, mqtt_sources, partial(self._rejected, mqtt), self._when_durable)
        link = PlantLink(self.site, self.config.broker, self._accept, self._plant_proposal)
        async with contextlib.AsyncExitStack() as stack:
            if self.config.ops is not None:
                if self.config.ops.console:
                    self.console = Console(self)
                    self.observers.append(self.console.live)
                self.ops = await stack.enter_async_context(
                    OpsServer(
                        self.config.ops,
                        self.metrics.registry,
                        self._not_ready,
                        extend=self.console.routes if self.console is not None else None,
                        streams=self.config.ops.max_streams,
                    )
                )
            audit = await stack.enter_async_context(
                AuditLog.configured(self.config.safety.audit, self.site, self.config_hash)
            )
            uplink = self.uplink = mqtt
            if self.config.uplink is not None:
                uplink = self.uplink = await stack.enter_async_context(
                    MqttClient(self.config.uplink, role=f"uplink-{self.site}", start_offline=True)
                )
            history = self.config.history if self.config.history.enabled else None
            if self.config.telemetry is not None or history is not None:
                box = self.outbox = await stack.enter_async_context(
                    Outbox(
                        self.config.outbox.resolved(self.site),
                        self.config.outbox,
                        uplink,
                        alarm=partial(self._alarm, mqtt, "outbox"),
                        confirm_topic=self.topic("confirm"),
                        confirm_streams=() if history is None else (history.stream,),
                    )
                )
                if history is not None:
                    self.history = HistoryRecorder(self.site, history, box)
                    if box.durable_keys:  # before the readings' subscriptions are made
                        mqtt.have_already(box.durable_keys)
                        log.info(
                            "agent %s: %d plant messages on disk may still be the broker's (killed before "
                            "their acknowledgement): their resends are dropped",
                            self.site,
                            len(box.durable_keys),
                        )
                if self.config.telemetry is not None:
                    self.telemetry = TelemetryPublisher(self.site, self.config.telemetry, box)
                    self.observers.append(self.telemetry)
                    audit.anchor = self.telemetry.anchor  # audit checkpoints upstream with the telemetry
            gate = self.gate = SetpointGate(
                self.safety, audit, mqtt, self.site, self._job_deadline, sinks=self.sinks
            )
            await gate.recall()  # the last setpoints the audit log holds: the value in force at start
            # the setpoint topics (retained: the value in force; anyone else's: an alarm), then the locks:
            # the retained ones must be in force before any proposal is handled, and while they cannot
            # be known (the plant broker away, or back but its retained locks not yet read) the gate
            # writes nothing; the broker sends the retained setpoints before it acknowledges the locks
            setpoints = await mqtt.subscribe(self.topic("setpoints/#"), qos=1, on_batch=gate.on_setpoints)
            # a retained lock must reach the agent on every broker: where retained messages are not seen
            # to reach a wildcard subscription (RabbitMQ; or the broker is away at start), each enveloped
            # asset's lock topic is subscribed exactly too, and an asset named only by a pattern gets no
            # write (refused, alarmed) until the broker is seen to send them to wildcards
            scope = LockScope(None)
            if not await retained_reaches_wildcards(mqtt, self.topic("agent/state")):
                scope.exact = frozenset(named_assets(self.config.safety.envelopes))
                log.warning(
                    "the plant broker was not seen to send a retained message to a wildcard subscription: "
                    "the locks of %d enveloped assets are subscribed exactly; assets named only by patterns "
                    "get no writes",
                    len(scope.exact),
                )
            also = tuple(self.topic(f"lock/{asset}") for asset in sorted(scope.exact or ()))
            locks = await mqtt.subscribe(self.topic("lock/#"), qos=1, also=also)
            gate.locks_unknown = partial(inputs_unknown, mqtt, locks, setpoints, scope)
            proposals = await mqtt.subscribe(self.topic("proposals/#"), qos=1)
            for topic, payload in locks.drain():
                await gate.on_lock(topic, payload)
            if self.config.offload is not None:
                self.offload = await stack.enter_async_context(
                    OffloadClient(
                        uplink,
                        self.site,
                        self.config.offload,
                        gate.on_refused_result,
                        partial(self._alarm, mqtt, "datacenter"),
                    )
                )
            stack.enter_context(gc_pauses(self.metrics.gc_pause_seconds, self.site))
            deployments = None
            if self.config.deploy is not None:
                deployments = await self._deployments(mqtt, audit, stack)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            loops = [tasks.create_task(ingest.run(link), name=ingest.name)]
            loops.append(tasks.create_task(each_message(proposals, gate.on_proposal), name="proposals"))
            loops.append(
                tasks.create_task(watch_lag(self.metrics.loop_lag_seconds.labels(self.site)), name="loop-lag")
            )
            loops.append(tasks.create_task(gate.run_locks(locks), name="locks"))
            if scope.exact is not None and not mqtt.connected:  # look again once the broker is there
                loops.append(
                    tasks.create_task(scope.confirm(mqtt, self.topic("agent/state")), name="lock-scope")
                )
            loops.append(tasks.create_task(self._evaluate_loop(gate), name="evaluate"))
            loops.extend(tasks.create_task(c.run(link), name=c.name) for c in self.sources)
            if self.telemetry is not None:
                loops.append(tasks.create_task(self.telemetry.run(), name=self.telemetry.name))
            if self.config.planning is not None and self.clock is not None:
                self.day = ProductionDay(
                    self.config.planning,
                    self.site,
                    gate,
                    self.offload,
                    self._plan_inputs,
                    self.clock,
                    deadletter=partial(self._deadletter, mqtt),
                    allowed=self._plannable,
                )
                orders = await mqtt.subscribe(self.topic("orders"), qos=1)
                loops.append(tasks.create_task(each_message(orders, self.day.on_order), name="orders"))
                loops.append(tasks.create_task(self.day.run(), name="production"))
            if deployments is not None and self.deployer is not None:
                loops.append(tasks.create_task(self.deployer.run(deployments), name="model-deploy"))
            if self.reloader is not None:
                loops.append(tasks.create_task(self._reload_loop(mqtt, audit), name="config-reload"))
            if self.history is not None:
                loops.append(tasks.create_task(self.history.run(), name=self.history.name))
            await ingest.listening.wait()
            self.ready.set()
            if stop is not None:
                await stop.wait()
                for task in loops:
                    task.cancel()

    async def _deployments(
        self, mqtt: MqttClient, audit: AuditLog, stack: contextlib.AsyncExitStack
    ) -> Any:  # the models/# subscription
        """The model deployer (``deploy:``): the promoted models of the last run back in force, then
        the subscription to ``qx/v1/{site}/models/#``."""
        from qxedge.agent.models.deploy import ModelDeployer

        assert self.config.deploy is not None

        def alarm(model: str, reason: str) -> None:
            doc = {"asset": None, "kind": "model", "model": model, "reason": reason, "ts": time.time()}
            mqtt.publish(self.topic("alarms"), json.dumps(doc), qos=1)

        deployer = self.deployer = ModelDeployer(
            self.config.deploy, self.site, self.config.window, list(self.config.models), self, audit, alarm
        )
        stack.callback(deployer.close)
        await deployer.restore()
        return await deployer.subscribe(mqtt)

    async def _reload_loop(self, mqtt: MqttClient, audit: AuditLog) -> None:
        from qxedge.agent.reload import reload

        assert self.reloader is not None
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await reload(self, self.reloader, audit, mqtt)

    def _alarm(self, mqtt: MqttClient, kind: str, reason: str) -> None:
        """An alarm of the agent itself (no asset) on ``qx/v1/{site}/alarms``."""
        doc = {"asset": None, "kind": kind, "reason": reason, "ts": time.time()}
        mqtt.publish(self.topic("alarms"), json.dumps(doc), qos=1)

    def _rejected(self, mqtt: MqttClient, messages: int, rejected: list[Rejected], now: float) -> None:
        """After each read burst of the MQTT ingest: what is invalid to the dead-letter topic."""
        self.counts.messages += messages
        for bad in rejected:
            self._deadletter(mqtt, bad, now)
        if rejected:
            log.debug("dead-lettered %d of %d messages", len(rejected), messages)

    def _deadletter(self, mqtt: MqttClient, bad: Rejected, now: float | None = None) -> None:
        """One rejected message to ``qx/v1/{site}/deadletter``, with its reason."""
        self.counts.deadletters += 1
        self.counts.deadletter_reasons[bad.code.value] += 1
        payload = deadletter_payload(bad, time.time() if now is None else now)
        mqtt.publish(self.topic("deadletter"), payload, qos=1)

    def _plannable(self, asset: str) -> str | None:
        """Why the production plan may not switch ``asset`` (an order for it is refused), or None."""
        return None if self.safety.config.envelope(asset) is not None else f"no safety envelope for {asset!r}"

    def _when_durable(self, acks: PendingAcks) -> None:
        """Acknowledge plant readings to their broker once the history journal has them on disk (history
        on: a ``kill -9`` loses none of them), else at once. Their keys go to disk with them: the
        broker's resends of readings on disk whose PUBACK a kill cut off are dropped at the next start."""
        if self.history is None or self.outbox is None:
            acks()
        else:
            self.outbox.when_durable(acks, acks.keys)

    def _accept(self, batch: ReadingBatch) -> None:
        """Readings from a reading source: they join the next evaluation."""
        self._pending.extend(batch)
        self.counts.readings += len(batch)
        self._fresh.set()
        if self.history is not None:
            self.history.add(batch)

    async def _plant_proposal(self, asset: str, value: float, source: str, data_ts: float) -> None:
        if self.gate is not None:
            await self.gate.propose(Proposal(asset, value, f"plant:{source}", data_ts, time.time()))

    def _observe(self, scored: list[Scored], features: Features, now: float, batch: ReadingBatch) -> None:
        """Tell the evaluation observers (Sparkplug, telemetry) of each asset that got
        readings, a score or a new setpoint in this evaluation, or lost a signal out of the window, with
        all the agent knows of it: its signals' newest readings, every model's newest score, its
        setpoint. Only those: telling every asset at every evaluation cost O(signals) per reading, ~15 ms
        at 10,000 signals, and so did looking for the signals that left (5-9 ms each ``every_s``): the
        window names them (``Features.gone``)."""
        signals, latest = self._signals, features.latest
        for key in zip(batch.assets, batch.signals, strict=True):
            if key in latest:  # (not a reading too old for the window)
                signals.setdefault(key[0], set()).add(key[1])
        scores = {(s.asset, s.model): s.score for s in scored}  # this evaluation's, then the newest
        changed = dict.fromkeys(batch.assets)
        changed.update(dict.fromkeys(asset for asset, _ in scores))
        for asset, signal in features.gone:  # told without it; an asset with no signal left is forgotten
            known = signals.get(asset)
            if known is not None:
                changed[asset] = None
                known.discard(signal)
                if not known:
                    del signals[asset]
        setpoints: dict[str, float] = {}
        if self.gate is not None:
            setpoints = self.gate.current
            changed.update(dict.fromkeys(self.gate.take_changed()))
        told: dict[str, dict[str, float]] = {}
        for asset in changed:
            metrics = {s: r[1] for s in signals.get(asset, ()) if (r := latest.get((asset, s))) is not None}
            for model in self.models:
                if (score := scores.get((asset, model), self._latest.get((asset, model)))) is not None:
                    metrics[f"score/{model}"] = score
            if (setpoint := setpoints.get(asset)) is not None:
                metrics["setpoint"] = setpoint
            if metrics:  # (none: e.g. readings too old for the window, nothing to tell)
                told[asset] = metrics
        evaluation = Evaluation(now, told, features)
        for observer in self.observers:
            observer.evaluated(evaluation)

    async def _evaluate_loop(self, gate: SetpointGate) -> None:
        """Evaluate every ``window.every_s``; with ``trigger: readings`` as soon as readings are pending
        (at least every ``every_s``). Readings arriving during an evaluation wait for the next one."""
        every = self.config.window.every_s
        on_readings = self.config.window.trigger == "readings"
        due = time.monotonic()
        full_due = due + every  # without readings, the first full evaluation comes after every_s
        self._full_now = True  # the first reading gets one at once
        loop = asyncio.get_running_loop()
        # trigger: readings: one timer per full evaluation wakes the loop when no reading does (a
        # timeout around each wait was a timer made and cancelled per reading: ~4 % of a reading's CPU)
        full_timer: asyncio.TimerHandle | None = None
        try:
            while True:
                if on_readings:
                    if full_timer is None:
                        full_timer = loop.call_later(max(0.0, full_due - time.monotonic()), self._wake_full)
                    await self._fresh.wait()
                else:
                    due += every
                    delay = due - time.monotonic()
                    if delay < 0:  # evaluation slower than its cadence: skip the missed slots
                        due += -delay // every * every + every
                        delay = due - time.monotonic()
                    await asyncio.sleep(delay)
                self._fresh.clear()
                # an evaluation started by readings scores the assets that got readings; every asset is
                # scored at least every every_s (their windows also change as readings age out)
                only = None
                if on_readings and not self._full_now and time.monotonic() < full_due:
                    if not self._pending:
                        continue
                    only = set(self._pending.assets)
                else:
                    full_due = time.monotonic() + every
                    self._full_now = False
                    if full_timer is not None:
                        full_timer.cancel()
                        full_timer = None
                await self._evaluate_once(gate, only)
        finally:
            if full_timer is not None:
                full_timer.cancel()

    def _wake_full(self) -> None:
        self._full_now = True
        self._fresh.set()

    async def _evaluate_once(self, gate: SetpointGate, only: set[str] | None) -> None:
        """Evaluate the pending readings (``only``: score just these assets), then decide and tell."""
        batch, self._pending = self._pending, ReadingBatch()
        now = time.time()
        inline = len(batch) <= SMALL_BATCH and self._evaluation_s < self.inline_evaluation_s
        if inline:
            scored, features = self._timed_evaluate(batch, now, only)
        else:
            scored, features = await asyncio.to_thread(self._timed_evaluate, batch, now, only)
        self._readings, self._evaluated_at = features.latest, now
        if self.day is not None:
            self.day.on_evaluated()
        await gate.tick(features.latest, time.time())
        await self._decide(gate, scored, now)
        if self._shadow_work:  # the shadows score what the models in force scored, where they did
            work, self._shadow_work = self._shadow_work, []
            if inline:
                for score in work:
                    score()
            else:
                await asyncio.to_thread(lambda: [score() for score in work])
        if self.deployer is not None:
            self.deployer.evaluated()  # a shadow whose period is over: promoted or refused, on the loop
        if self.observers:
            self._observe(scored, features, now, batch)

    def _timed_evaluate(
        self, batch: ReadingBatch, now: float, only: set[str] | None
    ) -> tuple[list[Scored], Features]:
        started = time.perf_counter()
        try:
            return self.evaluate(batch, now, only)
        finally:
            self._evaluation_s = time.perf_counter() - started

    def evaluate(
        self, batch: ReadingBatch, now: float, only: set[str] | None = None
    ) -> tuple[list[Scored], Features]:
        """Update the windows with ``batch`` and score every asset (or those in ``only``) with every
        model that covers it; also return the window's features (``latest``, the newest reading of every
        signal, for interlocks and read-backs)."""
        features = self.window.update(batch, now)
        out: list[Scored] = []
        shadows = self.shadows
        for model in self.models.values():
            if only is not None and not any(model.covers(a) for a in only):
                continue
            matrix = features.matrix(model.inputs, model.config.assets, only)
            started = time.perf_counter()
            scores = model.score(matrix.values)
            took = time.perf_counter() - started
            if len(scores):
                self._inference_seconds[model.name].observe(took)
            if shadows and (shadow := shadows.get(model.name)) is not None:
                # scored once the decision is out: a shadow never delays a setpoint (_evaluate_once)
                self._shadow_work.append(partial(shadow.score, features, only, matrix.assets, scores, took))
            out.extend(
                Scored(asset, float(score), model.name, model.sha256, model.provider, (start, end))
                for asset, score, start, end in zip(
                    matrix.assets, scores, matrix.starts, matrix.ends, strict=True
                )
            )
        return out, features

    def _plan_inputs(self) -> tuple[Latest, dict[str, float], float]:
        model = self.config.planning.model if self.config.planning is not None else None
        scores = {asset: score for (asset, m), score in self._latest.items() if m == model}
        return self._readings, scores, self._evaluated_at

    def _not_ready(self) -> str | None:
        if self.mqtt is None or not self.mqtt.connected:
            return f"not connected to the broker at {self.config.broker.url}"
        return None if self.ready.is_set() else "starting"

    def _job_deadline(self, job_id: str) -> float | None:
        return None if self.offload is None else self.offload.deadline_of(job_id)

    async def _decide(self, gate: SetpointGate, scored: list[Scored], now: float) -> None:
        stats = self.counts
        stats.evaluations += 1
        stats.inferences += len(scored)
        planned = self.day.planner.assets() if self.day is not None and scored else frozenset[str]()
        for s in scored:
            self._latest[(s.asset, s.model)] = s.score
            stats.scores[s.asset] = s.score
            stats.max_scores[s.asset] = max(s.score, stats.max_scores.get(s.asset, s.score))
            if s.asset in planned:  # the production plan switches its loads (and holds flagged ones)
                continue
            for rule in self.rules:
                if rule.config.model != s.model:
                    continue
                proposed = rule.evaluate(s, now)
                if proposed is None:
                    continue
                stats.proposals += 1
                await gate.propose(
                    Proposal(
                        proposed.asset,
                        proposed.value,
                        f"rule:{rule.config.name}",
                        s.window[1],
                        time.time(),
                        provenance=proposed.provenance,
                    )
                )
