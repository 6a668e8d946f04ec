"""The agent's Prometheus metrics, read from a snapshot of its counters (``Agent.stats()``) at scrape
time (nothing on the hot path but one histogram observation per model and evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qxedge.agent._stalls import BUCKETS, LAG_EVERY_S
from qxedge.core.ops_server import build_info, ops_metrics, process_registry

if TYPE_CHECKING:
    from qxedge.agent.pipeline import AgentStats

VERDICTS = ("accepted", "clamped", "refused", "unchanged", "written", "alarms", "refused_results", "foreign")
OFFLOAD = (
    "jobs",
    "results",
    "fallbacks",
    "resends",
    "resends_held",
    "late",
    "unknown_results",
    "invalid_results",
    "duplicate_results",
    "result_rejected",
    "result_late",
    "result_error",
    "silence_alarms",
)
MAX_ASSET_SERIES = 1000  # per family: assets beyond it are left out (and counted), never a runaway scrape
OUTBOX_EVENTS = (
    *("accepted", "written", "sent", "acked", "confirmed", "resent", "bad_confirmations"),
    *("overflow_dropped", "refused", "write_errors"),
)


class AgentMetrics(Collector):
    """The registry of one agent: what ``stats`` (``Agent.stats``) says at each scrape, histograms the
    agent observes into (every series labelled with its ``site``, as the dashboards filter on it), and
    the process's own collectors."""

    def __init__(self, stats: Callable[[], AgentStats]) -> None:
        self.stats = stats
        self.registry = process_registry()
        self.inference_seconds = Histogram(
            "qxedge_inference_seconds",
            "ONNX Runtime time per model and evaluation (all assets in one run)",
            ["site", "model", "provider"],
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.loop_lag_seconds = Histogram(
            "qxedge_loop_lag_seconds",
            f"how late the event loop runs a timer due every {LAG_EVERY_S:g} s (what a reading waits behind)",
            ["site"],
            registry=self.registry,
            buckets=BUCKETS,
        )
        self.gc_pause_seconds = Histogram(
            "qxedge_gc_pause_seconds",
            "garbage collections of the process and how long each stopped it, by generation",
            ["site", "generation"],
            registry=self.registry,
            buckets=BUCKETS,
        )
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        site = s.site

        def one(family: CounterMetricFamily | GaugeMetricFamily, value: float) -> Metric:
            family.add_metric([site], float(value))
            return family

        def counter(name: str, doc: str, value: float) -> Metric:
            return one(CounterMetricFamily(name, doc, labels=["site"]), value)

        def gauge(name: str, doc: str, value: float) -> Metric:
            return one(GaugeMetricFamily(name, doc, labels=["site"]), value)

        def by(name: str, doc: str, label: str, values: Mapping[str, int], keys: Iterable[str]) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["site", label])
            for key in keys:
                family.add_metric([site, key], values.get(key, 0))
            return family

        yield build_info("site", site)
        yield counter("qxedge_messages", "MQTT messages received on reading topics", s.messages)
        yield counter("qxedge_readings", "readings accepted", s.readings)
        yield counter("qxedge_evaluations", "feature-window evaluations", s.evaluations)
        yield counter("qxedge_inferences", "assets scored", s.inferences)
        yield counter("qxedge_proposals", "setpoint proposals made by the agent's rules", s.proposals)
        yield counter("qxedge_broker_reconnects", "reconnections to the broker", s.broker_reconnects)
        yield counter(
            "qxedge_publishes_dropped",
            "messages that could not be queued for the broker",
            s.publishes_dropped,
        )
        reasons = s.deadletter_reasons
        yield by("qxedge_deadletters", "messages rejected and dead-lettered", "reason", reasons, reasons)
        yield by("qxedge_setpoint_verdicts", "safety verdicts and writes", "verdict", s.verdicts, VERDICTS)
        yield by("qxedge_offload", "offloaded jobs and what became of them", "event", s.offload, OFFLOAD)
        models = GaugeMetricFamily(
            "qxedge_model_info",
            "loaded models and the provider running them",
            labels=["site", "model", "provider", "sha256"],
        )
        for model in s.models:
            models.add_metric([site, model.name, model.provider, model.sha256[:16]], 1)
        yield models
        yield gauge("qxedge_broker_connected", "1 while the plant broker link is up", s.broker_connected)
        yield gauge(
            "qxedge_datacenter_silent",
            "1 while offload.alarm_after or more offloads in a row fell back locally (no answer)",
            s.datacenter_silent,
        )
        yield gauge(
            "qxedge_offload_unanswered", "offloads in a row that fell back locally", s.offload_unanswered
        )
        yield gauge(
            "qxedge_outbox_depth", "QoS 1 messages not yet acknowledged by the broker", s.broker_unacked
        )
        yield gauge(
            "qxedge_outbox_stored", "disk outbox records not yet acknowledged upstream", s.outbox_stored
        )
        yield gauge(
            "qxedge_outbox_alarm", "1 while the disk outbox overflows or its disk fails", s.outbox_alarm
        )
        yield by(
            "qxedge_outbox_records",
            "disk outbox records and what became of them",
            "event",
            s.outbox_records,
            OUTBOX_EVENTS,
        )
        yield counter(
            "qxedge_setpoints_stale_dropped",
            "setpoints not sent because the plant broker link was down (never written late)",
            s.setpoints_stale_dropped,
        )
        yield gauge("qxedge_window_rows", "readings held in the feature windows", s.window_rows)
        if s.ops is not None:
            yield from ops_metrics(s.ops, "site", site)
        yield from asset_metrics(s)


def asset_metrics(s: AgentStats) -> Iterator[Metric]:
    """``qxedge_asset_score{site, asset, model}`` and ``qxedge_asset_setpoint{site, asset}``: only the
    assets a model scores and the envelopes allow writing (configured patterns), at most
    MAX_ASSET_SERIES each (by name), the rest counted in ``qxedge_asset_series_omitted``."""
    scores = GaugeMetricFamily(
        "qxedge_asset_score",
        "the newest score of each asset by each model",
        labels=["site", "asset", "model"],
    )
    keys = sorted(s.asset_scores)
    for asset, model in keys[:MAX_ASSET_SERIES]:
        scores.add_metric([s.site, asset, model], s.asset_scores[(asset, model)])
    yield scores
    setpoints = GaugeMetricFamily(
        "qxedge_asset_setpoint", "the setpoint last written to each asset", labels=["site", "asset"]
    )
    assets = sorted(s.asset_setpoints)
    for asset in assets[:MAX_ASSET_SERIES]:
        setpoints.add_metric([s.site, asset], s.asset_setpoints[asset])
    yield setpoints
    omitted = GaugeMetricFamily(
        "qxedge_asset_series_omitted",
        f"asset series left out of this scrape (over {MAX_ASSET_SERIES} per family)",
        labels=["site"],
    )
    omitted.add_metric(
        [s.site], max(0, len(keys) - MAX_ASSET_SERIES) + max(0, len(assets) - MAX_ASSET_SERIES)
    )
    yield omitted
