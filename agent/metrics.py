"""The agent's Prometheus metrics, read from its own counters at scrape time (nothing on the hot path
but one histogram observation per model and evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qxedge.agent._stalls import BUCKETS, LAG_EVERY_S

if TYPE_CHECKING:
    from qxedge.agent.pipeline import Agent


class AgentMetrics(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry()
        self.inference_seconds = Histogram(
            "qxedge_inference_seconds",
            "ONNX Runtime time per model and evaluation (all assets in one run)",
            ["model", "provider"],
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.loop_lag_seconds = Histogram(
            "qxedge_loop_lag_seconds",
            f"how late the event loop runs a timer due every {LAG_EVERY_S:g} s (what a reading waits behind)",
            registry=self.registry,
            buckets=BUCKETS,
        )
        self.gc_pause_seconds = Histogram(
            "qxedge_gc_pause_seconds",
            "garbage collections of the process and how long each stopped it, by generation",
            ["generation"],
            registry=self.registry,
            buckets=BUCKETS,
        )
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        a, site = self.agent, self.agent.site
        s = a.stats

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["site"])
            family.add_metric([site], value)
            return family

        yield counter("qxedge_messages", "MQTT messages received on reading topics", s.messages)
        yield counter("qxedge_readings", "readings accepted", s.readings)
        yield counter("qxedge_evaluations", "feature-window evaluations", s.evaluations)
        yield counter("qxedge_inferences", "assets scored", s.inferences)
        yield counter("qxedge_proposals", "setpoint proposals made by the agent's rules", s.proposals)
        mqtt = a.mqtt
        yield counter(
            "qxedge_broker_reconnects", "reconnections to the broker", mqtt.reconnects if mqtt else 0
        )
        yield counter(
            "qxedge_publishes_dropped",
            "messages that could not be queued for the broker",
            mqtt.dropped_publishes if mqtt else 0,
        )
        dead = CounterMetricFamily(
            "qxedge_deadletters", "messages rejected and dead-lettered", labels=["site", "reason"]
        )
        for reason, n in s.deadletter_reasons.items():
            dead.add_metric([site, reason], n)
        yield dead
        verdicts = CounterMetricFamily(
            "qxedge_setpoint_verdicts", "safety verdicts and writes", labels=["site", "verdict"]
        )
        for verdict in ("accepted", "clamped", "refused", "written", "alarms", "refused_results", "foreign"):
            verdicts.add_metric([site, verdict], a.gate.verdicts[verdict] if a.gate else 0)
        yield verdicts
        offload = CounterMetricFamily(
            "qxedge_offload", "offloaded jobs and what became of them", labels=["site", "event"]
        )
        for event in (
            "jobs",
            "results",
            "fallbacks",
            "late",
            "unknown_results",
            "invalid_results",
            "duplicate_results",
            "result_rejected",
            "result_late",
            "result_error",
        ):
            offload.add_metric([site, event], a.offload.stats[event] if a.offload else 0)
        yield offload
        models = GaugeMetricFamily(
            "qxedge_model_info",
            "loaded models and the provider running them",
            labels=["site", "model", "provider", "sha256"],
        )
        for name, model in a.models.items():
            models.add_metric([site, name, model.provider, model.sha256[:16]], 1)
        yield models
        connected = GaugeMetricFamily(
            "qxedge_broker_connected", "1 while the plant broker link is up", labels=["site"]
        )
        connected.add_metric([site], 1.0 if a.mqtt is not None and a.mqtt.connected else 0.0)
        yield connected
        outbox = GaugeMetricFamily(
            "qxedge_outbox_depth", "QoS 1 messages not yet acknowledged by the broker", labels=["site"]
        )
        outbox.add_metric([site], a.mqtt.outbox_depth if a.mqtt is not None else 0)
        yield outbox
        box = a.outbox
        stored = GaugeMetricFamily(
            "qxedge_outbox_stored", "disk outbox records not yet acknowledged upstream", labels=["site"]
        )
        stored.add_metric([site], box.depth + box.pending if box is not None else 0)
        yield stored
        trouble = GaugeMetricFamily(
            "qxedge_outbox_alarm", "1 while the disk outbox overflows or its disk fails", labels=["site"]
        )
        trouble.add_metric([site], 1.0 if box is not None and (box.overflowing or box.error) else 0.0)
        yield trouble
        records = CounterMetricFamily(
            "qxedge_outbox_records", "disk outbox records and what became of them", labels=["site", "event"]
        )
        events = ("accepted", "written", "sent", "acked", "confirmed", "resent", "bad_confirmations")
        for event in (*events, "overflow_dropped", "refused", "write_errors"):
            records.add_metric([site, event], box.stats[event] if box is not None else 0)
        yield records
        yield counter(
            "qxedge_setpoints_stale_dropped",
            "setpoints not sent because the plant broker link was down (never written late)",
            a.mqtt.stale_dropped if a.mqtt is not None else 0,
        )
        rows = GaugeMetricFamily(
            "qxedge_window_rows", "readings held in the feature windows", labels=["site"]
        )
        rows.add_metric([site], a.window.rows)
        yield rows
