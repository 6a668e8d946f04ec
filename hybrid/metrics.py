"""A solver worker's Prometheus metrics, read from a snapshot of its counters (``SolverService.stats()``)
at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qxedge.core.ops_server import build_info, ops_metrics, process_registry

if TYPE_CHECKING:
    from qxedge.hybrid.service import SolverStats


class SolverMetrics(Collector):
    """The registry of one worker: what ``stats`` (``SolverService.stats``) says at each scrape, and the
    histogram of solve times (every series labelled with its ``worker``, as the dashboards filter on
    it), and the process's own collectors."""

    def __init__(self, stats: Callable[[], SolverStats]) -> None:
        self.stats = stats
        self.registry = process_registry()
        self.solve_seconds = Histogram(
            "qxedge_solver_solve_seconds",
            "wall time from the start of solving to the answer",
            ["worker", "solver"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
        )
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        worker = s.worker
        yield build_info("worker", worker)
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

        def one(family: CounterMetricFamily | GaugeMetricFamily, value: float) -> Metric:
            family.add_metric([worker], float(value))
            return family

        def counter(name: str, doc: str, value: float) -> Metric:
            return one(CounterMetricFamily(name, doc, labels=["worker"]), value)

        def gauge(name: str, doc: str, value: float) -> Metric:
            return one(GaugeMetricFamily(name, doc, labels=["worker"]), value)

        yield counter("qxedge_solver_deadline_misses", "answers that were late", s.results["late"])
        yield counter(
            "qxedge_solver_duplicates", "duplicate deliveries answered from the job ledger", s.duplicates
        )
        yield counter("qxedge_solver_received", "messages received on the jobs subscription", s.received)
        yield gauge("qxedge_solver_queue_depth", "jobs accepted and not answered yet", s.queue_depth)
        yield counter("qxedge_solver_jobs_cut", "jobs cut to their site's fair share", s.cut)
        yield counter(
            "qxedge_solver_processes_recycled",
            "solver processes stopped because their work overran",
            s.recycled,
        )
        used = CounterMetricFamily(
            "qxedge_solver_site_solver_seconds", "solver-seconds used, by site", labels=["worker", "site"]
        )
        for site, seconds in s.solver_seconds.items():
            used.add_metric([worker, site], seconds)
        yield used
        yield gauge("qxedge_solver_broker_connected", "1 while the broker link is up", s.broker_connected)
        yield counter("qxedge_solver_ledger_errors", "job ledger calls that failed", s.ledger_errors)
        yield counter(
            "qxedge_solver_claims_taken_over",
            "jobs claimed from a worker presumed gone: its claim expired, the job was redelivered, or it "
            "stopped writing its heartbeat",
            s.took_over,
        )
        yield from pool_metrics(s)
        if s.ops is not None:
            yield from ops_metrics(s.ops, "worker", worker)


def pool_metrics(s: SolverStats) -> Iterator[Metric]:
    """The pool's usage from the job ledger: the same figures on every worker sharing it (no ``worker``
    label; aggregate with ``max by (site, ...)``, never ``sum``), as of the last refresh."""
    jobs = CounterMetricFamily(
        "qxedge_pool_jobs", "jobs answered by the pool sharing the job ledger", labels=["site", "status"]
    )
    used = CounterMetricFamily(
        "qxedge_pool_solver_seconds", "solver-seconds used by the pool, by site", labels=["site"]
    )
    wins = CounterMetricFamily(
        "qxedge_pool_wins", "jobs answered ok by the pool, by the solver credited", labels=["site", "solver"]
    )
    for row in s.pool:
        for status, n in row.statuses.items():
            jobs.add_metric([row.site, status], n)
        used.add_metric([row.site], row.solver_seconds)
        for solver, n in row.wins.items():
            wins.add_metric([row.site, solver], n)
    yield from (jobs, used, wins)
