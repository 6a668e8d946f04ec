"""``qxedge demo``: the simulated plant and the agent together, with live progress and a summary.

With a ``planning:`` section the demo runs the production day twice on the same seed: first with the
baseline controller (every order runs as soon as it is released), then optimised (the load schedule
rebuilt from live data every slot and offloaded). Both run on the plant's clock compressed by
``planning.demo_clock`` (one hour every 2.5 s), the same code a plant runs at speed 1: the agent starts
two slots before the day's ``start``, and each run keeps its plan state in a folder of its own. Each
run is measured at the plant's meter: mean power per slot against the contracted peak, energy cost at
the slot's price, and the runs each load really did.

Isolated from a real agent on the same machine: the broker is ``--broker`` if given, else a private
one on a free port (a mosquitto of its own, or amqtt where there is no mosquitto binary), never one
that merely answers at the config's address (on an edge box, the plant's); the state (audit log,
outbox, plan state) lives in a temporary folder of its own, and the ops endpoints take free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from qxedge.agent.clock import Clock, Slot, SlotGrid
from qxedge.agent.config import EdgeConfig
from qxedge.agent.day import SlotInputs
from qxedge.agent.pipeline import Agent
from qxedge.agent.planning import PlanningConfig
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.simulator import MeterSample, SimulatedPlant
from qxedge.core.errors import ConfigError, Problem, TransportError
from qxedge.core.ops_config import OpsConfig
from qxedge.core.state import use_state_dir
from qxedge.hybrid.backends import Deadline
from qxedge.hybrid.config import MilpConfig
from qxedge.hybrid.milp import solve_milp
from qxedge.hybrid.problems import scheduling
from qxedge.hybrid.problems.scheduling import LoadSchedule, ScheduledAsset
from qxedge.hybrid.service import DataCenterConfig, SolverService


@contextlib.contextmanager
def demo_broker(cfg: EdgeConfig, explicit: bool) -> Iterator[tuple[EdgeConfig, str]]:
    """Yield the config pointed at the demo's broker, and which it is: the one ``--broker`` gave
    (``explicit``), else a private one on a free port (mosquitto, or amqtt without one), never a broker
    that happens to answer at the config's address: on an edge box that is the plant's."""
    if explicit:
        yield cfg, "given"
        return
    with EmbeddedBroker() as broker:
        url = broker.url
        yield cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"url": url})}), broker.kind


@contextlib.contextmanager
def isolated(cfg: EdgeConfig, datacenter: DataCenterConfig) -> Iterator[tuple[EdgeConfig, DataCenterConfig]]:
    """The demo beside a running agent (of site ``demo`` too) or worker: a state directory of its own
    (audit log, outbox, plan state) for as long as it runs, and free ports for the ops endpoints."""

    def free_port(ops: OpsConfig | None) -> OpsConfig | None:
        return None if ops is None else ops.model_copy(update={"port": 0})

    with tempfile.TemporaryDirectory(prefix="qxedge-demo-") as folder:
        use_state_dir(Path(folder))
        try:
            yield (
                cfg.model_copy(update={"ops": free_port(cfg.ops), "state_dir": Path(folder)}),
                datacenter.model_copy(update={"ops": free_port(datacenter.ops), "state_dir": Path(folder)}),
            )
        finally:
            use_state_dir(None)


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
    if cfg.planning.demo_clock is None:
        problem = Problem("planning.demo_clock", "the demo's day needs a compressed clock: {speed, start}")
        raise ConfigError([problem])
    runs = {}
    for mode in ("baseline", "optimised"):
        if progress is not None:
            progress(f"--- production day, {mode} ---")
        with tempfile.TemporaryDirectory(prefix="qxedge-demo-plan-") as folder:  # a fresh plan state
            state = Path(folder) / "plan.json"
            planning = cfg.planning.model_copy(update={"mode": mode, "state_path": state})
            run = cfg.model_copy(update={"planning": planning})
            runs[mode] = await run_once(run, 0, progress, datacenter)
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
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    stop = asyncio.Event()
    async with plant, asyncio.TaskGroup() as tasks:
        datacenter_line = "none"
        if datacenter is not None and cfg.offload is not None:
            solver = SolverService(datacenter.model_copy(update={"broker": cfg.broker}))
            datacenter_line = await _start_worker(solver, stop, tasks)
            if progress is not None:
                progress(f"data center: {datacenter_line}")
        # the day's clock starts once the worker is warm: its warm-up is not the first plan's lead
        day = demo_day(cfg.planning, lead_slots=2) if cfg.planning is not None else None
        agent = Agent(cfg, clock=day[0] if day is not None else None)
        started = time.monotonic()
        tasks.create_task(agent.run(stop), name="agent")
        await agent.ready.wait()
        simulation = tasks.create_task(plant.run(), name="simulator")
        tick = 2.0 if progress is not None else 0.2
        while True:  # until the production day is done, or for duration_s without one
            left = duration_s - (time.monotonic() - started)
            if day is not None:
                clock, slots = day
                left = clock.real(slots[-1].end) - time.time()
            if left <= 0:
                break
            await asyncio.sleep(min(tick, left))
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
    if agent.day is not None and day is not None and cfg.planning is not None:
        measured = measure_day(cfg.planning, list(plant.model.meter), *day)
        summary["day"] = {
            **measured,
            **optimal_day(
                cfg.planning, day[0].grid, day[1], measured["ran"], list(agent.day.executed_inputs)
            ),
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


def demo_day(planning: PlanningConfig, lead_slots: int) -> tuple[Clock, list[Slot]]:
    """The demo's compressed clock, reading ``lead_slots`` slots before the day's start now, and the
    slots of its day."""
    demo = planning.demo_clock
    if demo is None:
        raise ConfigError([Problem("planning.demo_clock", "the demo's day needs a compressed clock")])
    grid = planning.grid()
    start = demo.start if demo.start.tzinfo is not None else demo.start.replace(tzinfo=grid.tz)
    first = grid.slot_at(start.timestamp())
    slots = grid.slots(first, demo.slots)
    lead = lead_slots * planning.slot_s / demo.speed
    return Clock(grid, demo.speed, anchor=(time.time() + lead, first.start)), slots


def measure_day(
    planning: PlanningConfig, meter: list[MeterSample], clock: Clock, day: list[Slot]
) -> dict[str, Any]:
    """The day as the plant's meter saw it: per slot the mean power, its cost, the cap, the loads on."""
    grid = clock.grid
    slots: list[dict[str, Any]] = []
    ran: dict[str, set[int]] = {o.asset: set() for o in planning.orders}
    for t, slot in enumerate(day):
        lo, hi = clock.real(slot.start), clock.real(slot.end)
        samples = [m for m in meter if lo <= m.ts < hi]
        kw = sum(m.total_kw for m in samples) / len(samples) if samples else 0.0
        on = sorted(a for a in ran if 2 * sum(a in m.loads_on for m in samples) > len(samples) > 0)
        for asset in on:
            ran[asset].add(slot.start)
        price = planning.tariff.price(grid.local(slot.start))
        slots.append(
            {
                "slot": t,
                "start": grid.label(slot),
                "kw": round(kw, 2),
                "cap_kw": planning.cap_kw,
                "price": price,
                "cost": round(kw * slot.hours * price, 1),
                "on": on,
            }
        )
    unmet = {}
    for o in planning.orders:
        release, due = o.window(grid.tz)
        inside = {s.start for s in day if s.start >= release and s.end <= due}
        unmet[o.id] = max(0, o.runs - len(ran[o.asset] & inside))
    return {
        "ran": {asset: sorted(starts) for asset, starts in ran.items()},
        "energy_cost": round(sum(s["cost"] for s in slots), 1),
        "peak_kw": round(max(s["kw"] for s in slots), 2),
        "cap_violations": sum(1 for s in slots if s["kw"] > s["cap_kw"]),
        "unmet_runs": sum(unmet.values()),
        "unmet_by_order": {i: n for i, n in unmet.items() if n},
        "slots": slots,
    }


def optimal_day(
    planning: PlanningConfig,
    grid: SlotGrid,
    day: list[Slot],
    ran: Mapping[str, list[int]],
    inputs: Sequence[SlotInputs],
) -> dict[str, Any]:
    """The loads' energy cost of the day as executed (the runs the meter saw) and its proven optimum,
    both under the model and inputs the plans used for each slot when it was executed (the cap left
    by the base-load forecast, the price, each order's power), and the gap between them. The optimum
    is HiGHS's on the whole day as one constrained model (:func:`scheduling.build_cqm`); None when a
    slot was executed without a plan's inputs (``baseline`` mode, or before the first plan)."""
    by_start = {i.start: i for i in inputs}
    if not day or any(s.start not in by_start for s in day):
        return {"loads_cost": None, "optimal_cost": None, "gap": None}
    power = {name: kw for i in inputs for name, kw in i.power_kw.items()}  # the latest plan's
    assets, executed = [], {}
    for o in planning.orders:
        release, due = o.window(grid.tz)
        inside = [t for t, s in enumerate(day) if s.start >= release and s.end <= due]
        if not inside:
            continue
        kw = power.get(o.id, max(planning.power_step_kw, math.ceil(o.power_kw)))
        assets.append(
            ScheduledAsset(
                name=o.id,
                power_kw=kw,
                runs=min(o.runs, len(inside)),
                earliest=inside[0],
                latest=inside[-1] + 1,
            )
        )
        executed[o.id] = [t for t, s in enumerate(day) if s.start in set(ran.get(o.asset, []))]
    if not assets:
        return {"loads_cost": None, "optimal_cost": None, "gap": None}
    problem = LoadSchedule(
        assets=assets,
        cap_kw=[by_start[s.start].cap_left_kw for s in day],
        price=[by_start[s.start].price for s in day],
        slot_hours=planning.slot_hours,
    )
    loads_cost = scheduling.cost(problem, executed)
    best = solve_milp(scheduling.build_cqm(problem), Deadline(time.time() + 60), MilpConfig())
    if not (best.status == "ok" and best.feasible and best.details.get("optimal")):
        why = best.reason or best.details.get("highs_status")
        return {"loads_cost": round(loads_cost, 1), "optimal_cost": None, "gap": None, "optimal_why": why}
    assert best.objective is not None
    optimum = best.objective
    return {
        "loads_cost": round(loads_cost, 1),
        "optimal_cost": round(optimum, 1),
        "gap": round(loads_cost / optimum - 1, 6) if optimum else 0.0,
    }


def offload_summary(agent: Agent) -> dict[str, Any]:
    stats = agent.offload.stats if agent.offload is not None else Counter[str]()
    return {
        "jobs": stats["jobs"],
        "results": stats["results"],
        "fallbacks": stats["fallbacks"],
        "late": stats["late"],
        "solver_wins": dict(agent.offload.wins) if agent.offload is not None else {},
        "plans": agent.day.job_count if agent.day is not None else 0,
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
    best = summary.get("optimised", {})
    if best.get("optimal_cost") is not None:
        lines.append(
            f"  optimised loads' energy {best['loads_cost']:,.0f} against the proven optimum "
            f"{best['optimal_cost']:,.0f} under the same inputs: gap {best['gap']:.3%}"
        )
    elif best.get("optimal_why"):
        lines.append(f"  no proven optimum of the optimised day: {best['optimal_why']}")
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
