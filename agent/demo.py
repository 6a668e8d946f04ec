"""``qxedge demo``: the simulated plant and the agent together, with live progress and a summary.

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

from agent.config import EdgeConfig
from agent.pipeline import Agent
from connectors.embedded_broker import EmbeddedBroker, port_open
from connectors.errors import ConfigError, Problem
from connectors.simulator import SimulatedPlant
from hybrid.service import DataCenterConfig, SolverService


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
    s = agent.stats
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
    """The plant, the agent and (with ``datacenter``) a solver worker, all on ``cfg.broker``."""
    if cfg.simulator is None:
        raise ConfigError([Problem("simulator", "the demo needs a `simulator:` section")])
    agent = Agent(cfg)
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    stop = asyncio.Event()
    async with plant, asyncio.TaskGroup() as tasks:
        if datacenter is not None and cfg.offload is not None:
            solver = SolverService(datacenter.model_copy(update={"broker": cfg.broker}))
            tasks.create_task(solver.run(stop), name="solver")
            await solver.ready.wait()
            if progress is not None:
                progress(f"data center: solver worker {solver.worker_id} ready")
        started = time.monotonic()
        tasks.create_task(agent.run(stop), name="agent")
        await agent.ready.wait()
        simulation = tasks.create_task(plant.run(duration_s), name="simulator")
        while not simulation.done():
            await asyncio.wait([simulation], timeout=2.0)
            if progress is not None:
                progress(_progress_line(time.monotonic() - started, agent, plant))
        await asyncio.sleep(cfg.window.every_s * 1.5)  # let the last readings be evaluated
        stop.set()
    stats = agent.stats
    verdicts = agent.gate.verdicts if agent.gate else Counter[str]()
    elapsed = time.monotonic() - started
    return {
        "site": cfg.site,
        "broker": cfg.broker.url,
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
        ],
    }


def offload_summary(agent: Agent) -> dict[str, Any]:
    stats = agent.offload.stats if agent.offload is not None else Counter[str]()
    return {
        "jobs": stats["jobs"],
        "results": stats["results"],
        "fallbacks": stats["fallbacks"],
        "late": stats["late"],
        "solver_wins": dict(agent.offload.wins) if agent.offload is not None else {},
        "plans": agent.stats.plans,
        "last_plan": agent.stats.last_plan,
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"qxedge demo: site {summary['site']} on {summary['broker']} for {summary['duration_s']} s",
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
    if summary["last_plan"]:
        plan = summary["last_plan"]
        lines.append(
            f"  last plan: keep {', '.join(plan['in_service'])} in service "
            f"({plan['source']}, {plan['solver']}, {plan['seconds']} s)"
        )
    for sp in summary["setpoint_log"]:
        how = sp["verdict"] + (f" by {sp['limit']}" if sp.get("limit") else "")
        lines.append(f"  setpoint: {sp['asset']} -> {sp['value']:g} ({sp['reason']}; {how})")
    return "\n".join(lines)
