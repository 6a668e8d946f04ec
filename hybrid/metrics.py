"""A solver worker's Prometheus metrics, read from its counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from qxedge.hybrid.service import SolverService


class SolverMetrics(Collector):
    def __init__(self, service: SolverService) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.solve_seconds = Histogram(
            "qxedge_solver_solve_seconds",
            "wall time from the start of solving to the answer",
            ["solver"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
        )
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        s, worker = self.service, self.service.worker_id
        jobs = CounterMetricFamily(
            "qxedge_solver_jobs", "jobs answered, by site and status", labels=["worker", "site", "status"]
        )
        for (site, status), n in s.by_site.items():
            jobs.add_metric([worker, site, status], n)
        yield jobs
        wins = CounterMetricFamily(
            "qxedge_solver_wins", "jobs whose best answer came from this solver", labels=["worker", "solver"]
        )
        for solver, n in s.wins.items():
            wins.add_metric([worker, solver], n)
        yield wins
        misses = CounterMetricFamily(
            "qxedge_solver_deadline_misses", "answers that were late", labels=["worker"]
        )
        misses.add_metric([worker], sum(n for (_, status), n in s.by_site.items() if status == "late"))
        yield misses
        for name, doc, value in (
            (
                "qxedge_solver_duplicates",
                "duplicate deliveries answered from the cache",
                s.stats["duplicates"],
            ),
            ("qxedge_solver_received", "messages received on the jobs subscription", s.stats["received"]),
        ):
            family = CounterMetricFamily(name, doc, labels=["worker"])
            family.add_metric([worker], value)
            yield family
        queue = GaugeMetricFamily(
            "qxedge_solver_queue_depth", "jobs accepted and not answered yet", labels=["worker"]
        )
        queue.add_metric([worker], s.queue_depth)
        yield queue
        connected = GaugeMetricFamily(
            "qxedge_solver_broker_connected", "1 while the broker link is up", labels=["worker"]
        )
        connected.add_metric([worker], 1.0 if s.mqtt is not None and s.mqtt.connected else 0.0)
        yield connected
