"""``qxedge demo``: the simulated plant and the agent together, with live progress and a summary.

With a ``planning:`` section the demo runs the production day twice on the same seed: first with the
baseline controller (every order runs as soon as it is released), then optimised (the load schedule
rebuilt from live data every slot and offloaded). Each run is measured at the plant's meter: mean power
per slot against the contracted peak, energy cost at the slot's price, and the runs each load really did.

Broker: ``--broker`` if given, else the config's broker when it answers, else an embedded one
(a private mosquitto, or amqtt where there is no mosquitto binary) on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from qxedge.agent.config import EdgeConfig
from qxedge.agent.pipeline import Agent
from qxedge.agent.planning import PlanningConfig
from qxedge.connectors.embedded_broker import EmbeddedBroker, port_open
from qxedge.connectors.simulator import MeterSample, SimulatedPlant
from qxedge.core.errors import ConfigError, Problem, TransportError
from qxedge.hybrid.service import DataCenterConfig, SolverService


@contextlib.contextmanager
def demo_broker(cfg: EdgeConfig, explicit: bool) -> Iterator[tuple[EdgeConfig, str]]:
    """Yield the config pointed at a usable broker, and how it was found."""
    if explicit:
        yield cfg, "given"
    elif port_open(cfg.broker.host, cfg.broker.port):
        yield cfg, "found"
    else:
        with EmbeddedBroker() as broker:
            url = broker.url
            yield cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"url": url})}), broker.kind


def _progress_line(elapsed: float, agent: Agent, plant: SimulatedPlant) -> str:
    s = agent.counts
    worst = max(s.scores.items(), key=lambda kv: kv[1], default=("-", 0.0))
    return (
        f"t={elapsed:5.1f}s  published {plant.published:>7,}  readings {s.readings:>7,}  "
        f"inferences {s.inferences:>5,}  top score {worst[0]} {worst[1]:7.2f}  "
        f"setpoints {agent.gate.verdicts['written'] if agent.gate else 0}  dead letters {s.deadletters}"
    )


async def run_demo(
    cfg: EdgeConfig,
    duration_s: float,
    progress: Callable[[str], None] | None = None,
    datacenter: DataCenterConfig | None = None,
) -> dict[str, Any]:
    """The plant, the agent and (with ``datacenter``) a solver worker, all on ``cfg.broker``; with a
    production day, once with the baseline controller and once optimised."""
    if cfg.planning is None:
        return await run_once(cfg, duration_s, progress, datacenter)
    if cfg.offload is None:
        raise ConfigError([Problem("offload", "the demo's optimised day needs an `offload:` section")])
    runs = {}
    for mode in ("baseline", "optimised"):
        if progress is not None:
            progress(f"--- production day, {mode} ---")
        planning = cfg.planning.model_copy(update={"mode": mode})
        runs[mode] = await run_once(cfg.model_copy(update={"planning": planning}), 0, progress, datacenter)
    summary = runs["optimised"]
    for mode in ("baseline", "optimised"):
        summary[mode] = runs[mode].pop("day")
    summary["solver_wins"] = summary["optimised"]["solver_wins"]
    return summary


async def run_once(
    cfg: EdgeConfig,
    duration_s: float,
    progress: Callable[[str], None] | None = None,
    datacenter: DataCenterConfig | None = None,
) -> dict[str, Any]:
    """One run: for ``duration_s``, or for the production day when ``cfg.planning`` has one."""
    if cfg.simulator is None:
        raise ConfigError([Problem("simulator", "the demo needs a `simulator:` section")])
    agent = Agent(cfg)
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    stop = asyncio.Event()
    async with plant, asyncio.TaskGroup() as tasks:
        datacenter_line = "none"
        if datacenter is not None and cfg.offload is not None:
            solver = SolverService(datacenter.model_copy(update={"broker": cfg.broker}))
            datacenter_line = await _start_worker(solver, stop, tasks)
            if progress is not None:
                progress(f"data center: {datacenter_line}")
        started = time.monotonic()
        tasks.create_task(agent.run(stop), name="agent")
        await agent.ready.wait()
        simulation = tasks.create_task(plant.run(), name="simulator")
        tick = 2.0 if progress is not None else 0.2
        while True:  # until the production day is done, or for duration_s without one
            left = duration_s - (time.monotonic() - started)
            if agent.day.done.is_set() if agent.day is not None else left <= 0:
                break
            await asyncio.sleep(tick if agent.day is not None else min(tick, left))
            if progress is not None:
                progress(_progress_line(time.monotonic() - started, agent, plant))
        await asyncio.sleep(cfg.window.every_s * 1.5)  # let the last readings be evaluated
        simulation.cancel()
        stop.set()
    stats = agent.counts
    verdicts = agent.gate.verdicts if agent.gate else Counter[str]()
    elapsed = time.monotonic() - started
    summary = {
        "site": cfg.site,
        "broker": cfg.broker.url,
        "datacenter": datacenter_line,
        "duration_s": round(elapsed, 2),
        "published": plant.published,
        "messages": stats.messages,
        "readings": stats.readings,
        "readings_per_s": round(stats.readings / elapsed, 1),
        "evaluations": stats.evaluations,
        "inferences": stats.inferences,
        "setpoints": verdicts["written"],
        "proposals": stats.proposals,
        "verdicts": {k: verdicts[k] for k in ("accepted", "clamped", "refused", "alarms")},
        "setpoints_applied": plant.setpoints_applied,
        "deadletters": stats.deadletters,
        "provider": next(iter(agent.providers.values()), None),
        "providers": agent.providers,
        "faults": [f.model_dump() for f in cfg.simulator.faults],
        "max_scores": {a: round(v, 3) for a, v in sorted(stats.max_scores.items())},
        **offload_summary(agent),
        "setpoint_log": [
            {
                "asset": sp.asset,
                "value": sp.value,
                "ts": sp.ts,
                "reason": sp.provenance.get("reason"),
                "verdict": sp.provenance.get("verdict"),
                "limit": sp.provenance.get("limit"),
            }
            for sp in (agent.gate.written if agent.gate else [])
            if not sp.provenance.get("source", "").startswith("plan:")  # the day has its own report
        ],
    }
    if agent.day is not None and agent.day.start is not None and cfg.planning is not None:
        summary["day"] = {
            **measure_day(cfg.planning, list(plant.model.meter), agent.day.start),
            **agent.day.summary(),
        }
    return summary


async def _start_worker(solver: SolverService, stop: asyncio.Event, tasks: asyncio.TaskGroup) -> str:
    """Start the demo's worker; what it says once its probe came through, or why no job can reach it (the
    demo goes on: every offload then falls back locally, and the summary says so)."""
    failed: list[str] = []

    async def run() -> None:
        try:
            await solver.run(stop)
        except TransportError as exc:
            failed.append(str(exc))
        except ExceptionGroup as group:
            found = group.subgroup(TransportError)
            if found is None:
                raise
            failed.append(str(found.exceptions[0]))

    worker = tasks.create_task(run(), name="solver")
    ready = tasks.create_task(solver.ready.wait(), name="solver-ready")
    await asyncio.wait([worker, ready], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if failed:
        return f"NO WORKER, every offload falls back locally: {failed[0]}"
    transport = solver.transport.name if solver.transport is not None else "?"
    return f"solver worker {solver.worker_id} ready, jobs through {transport}"


def measure_day(planning: PlanningConfig, meter: list[MeterSample], start: float) -> dict[str, Any]:
    """The day as the plant's meter saw it: per slot the mean power, its cost, the cap, the loads on."""
    caps, prices = planning.caps(), planning.prices()
    slots: list[dict[str, Any]] = []
    ran: dict[str, set[int]] = {o.asset: set() for o in planning.orders}
    for t in range(planning.slots):
        lo, hi = start + t * planning.slot_s, start + (t + 1) * planning.slot_s
        samples = [m for m in meter if lo <= m.ts < hi]
        kw = sum(m.total_kw for m in samples) / len(samples) if samples else 0.0
        on = sorted(a for a in ran if 2 * sum(a in m.loads_on for m in samples) > len(samples) > 0)
        for asset in on:
            ran[asset].add(t)
        slots.append(
            {
                "slot": t,
                "kw": round(kw, 2),
                "cap_kw": caps[t],
                "price": prices[t],
                "cost": round(kw * planning.slot_hours * prices[t], 1),
                "on": on,
            }
        )
    unmet = {
        o.asset: max(0, o.runs - sum(1 for t in ran[o.asset] if o.release <= t < planning.due(o)))
        for o in planning.orders
    }
    return {
        "energy_cost": round(sum(s["cost"] for s in slots), 1),
        "peak_kw": round(max(s["kw"] for s in slots), 2),
        "cap_violations": sum(1 for s in slots if s["kw"] > s["cap_kw"]),
        "unmet_runs": sum(unmet.values()),
        "unmet_by_asset": {a: n for a, n in unmet.items() if n},
        "slots": slots,
    }


def offload_summary(agent: Agent) -> dict[str, Any]:
    stats = agent.offload.stats if agent.offload is not None else Counter[str]()
    return {
        "jobs": stats["jobs"],
        "results": stats["results"],
        "fallbacks": stats["fallbacks"],
        "late": stats["late"],
        "solver_wins": dict(agent.offload.wins) if agent.offload is not None else {},
        "plans": len(agent.day.jobs) if agent.day is not None else 0,
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"qxedge demo: site {summary['site']} on {summary['broker']} for {summary['duration_s']} s",
        f"  data center   {summary.get('datacenter', 'none')}",
        f"  readings      {summary['readings']:,} ({summary['readings_per_s']:,}/s) "
        f"from {summary['published']:,} published",
        f"  inferences    {summary['inferences']:,} in {summary['evaluations']} evaluations "
        f"on {summary['provider']}",
        f"  setpoints     {summary['setpoints']} written, {summary['setpoints_applied']} applied by the "
        f"plant; safety verdicts {summary['verdicts']}",
        f"  dead letters  {summary['deadletters']}",
        f"  offload       {summary['jobs']} jobs, {summary['results']} results, "
        f"{summary['fallbacks']} local fallbacks, {summary['late']} late; wins {summary['solver_wins']}",
        "  max anomaly score per asset (1.0 = edge of normal operation):",
        *(f"    {asset:<14} {score:8.2f}" for asset, score in summary["max_scores"].items()),
    ]
    for fault in summary["faults"]:
        lines.append(f"  injected fault: {fault['kind']} on {fault['asset']} at t={fault['at_s']} s")
    for mode in ("baseline", "optimised"):
        if mode in summary:
            d = summary[mode]
            lines.append(
                f"  {mode:<10} energy cost {d['energy_cost']:>10,.0f}  peak {d['peak_kw']:6.1f} kW  "
                f"over the cap in {d['cap_violations']} slots  unmet runs {d['unmet_runs']}"
            )
    if "baseline" in summary and summary["baseline"]["energy_cost"]:
        saved = 1 - summary["optimised"]["energy_cost"] / summary["baseline"]["energy_cost"]
        lines.append(
            f"  optimised vs baseline: {abs(saved):.1%} {'lower' if saved >= 0 else 'higher'} energy cost; "
            f"solver wins {summary['solver_wins']}"
        )
    for sp in summary["setpoint_log"]:
        how = sp["verdict"] + (f" by {sp['limit']}" if sp.get("limit") else "")
        lines.append(f"  setpoint: {sp['asset']} -> {sp['value']:g} ({sp['reason']}; {how})")
    return "\n".join(lines)
