"""The production day against the clock: each slot's setpoints at its boundary, the next plan in between.

At the boundary of slot t the planner's run/standby values for t go through the setpoint gate (the
safety envelope decides; a load whose score flags it at that moment stays in standby; the data time of
each decision is the load's newest reading, so a load that stopped reporting is never switched). A run
counts as done only when the gate wrote it. Then, in
``optimised`` mode, the schedule of slots t+1.. is rebuilt from live data and offloaded with a deadline
of ``plan_share`` of a slot, so it is there before the next boundary. Every job is recorded with the
solver that won it, whether its sample was feasible as found, and the plan it led to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from qxedge.agent.gate import SetpointGate
from qxedge.agent.planning import DayPlanner, PlanningConfig, blocks
from qxedge.agent.safety import Latest, Proposal
from qxedge.hybrid.client import OffloadClient
from qxedge.hybrid.problems import scheduling

log = logging.getLogger(__name__)

Inputs = Callable[[], tuple[Latest, Mapping[str, float], float]]  # readings, scores, when evaluated


@dataclass(slots=True)
class PlanJob:
    slot: int  # planned during this slot, for the slots after it
    first: int  # the block's first slot
    job_id: str
    solver: str
    source: str
    seconds: float
    variables: int
    feasible: bool


class ProductionDay:
    def __init__(
        self,
        config: PlanningConfig,
        gate: SetpointGate,
        offload: OffloadClient | None,
        inputs: Inputs,
        plan_share: float = 0.6,
    ) -> None:
        self.config = config
        self.planner = DayPlanner(config)
        self.gate = gate
        self.offload = offload
        self.inputs = inputs
        self.deadline_ms = max(50, int(config.slot_s * plan_share * 1000))
        if offload is not None:
            self.deadline_ms = min(self.deadline_ms, offload.config.deadline_ms)
        self.start: float | None = None
        self.slot = -1
        self.jobs: list[PlanJob] = []
        self.wins: Counter[str] = Counter()
        self.done = asyncio.Event()

    async def run(self, lead_s: float | None = None) -> None:
        """The whole day; it starts ``lead_s`` (default: one slot) from now, after a first plan."""
        cfg = self.config
        self.start = start = time.time() + (cfg.slot_s if lead_s is None else lead_s)
        if cfg.mode == "optimised":
            try:
                await self._replan(0)
            except Exception:
                log.exception("production day: no first plan")
        for slot in range(cfg.slots):
            await asyncio.sleep(max(0.0, start + slot * cfg.slot_s - time.time()))
            self.slot = slot
            try:
                await self._execute(slot)
                if cfg.mode == "optimised" and slot + 1 < cfg.slots:
                    await self._replan(slot + 1)
            except Exception:  # the day must never take the agent down: keep the plan it has
                log.exception("production day, slot %d: keeping the previous plan", slot)
        await asyncio.sleep(max(0.0, start + cfg.slots * cfg.slot_s - time.time()))
        self.done.set()
        log.info("production day done: %d plan jobs, wins %s", len(self.jobs), dict(self.wins))

    async def _execute(self, slot: int) -> None:
        latest, scores, _ = self.inputs()
        self.planner.observe(latest)
        held = {o.asset for o in self.config.orders if scores.get(o.asset, 0.0) > self.config.flag_above}
        self.planner.held |= held
        for asset, value in self.planner.setpoints(slot).items():
            # the decision holds only while the load itself reports: its newest reading is the data time
            reading = latest.get((asset, self.config.power_signal))
            proposal = Proposal(
                asset,
                value,
                f"plan:{self.config.mode}",
                None if reading is None else reading[0],
                time.time(),
                provenance={"slot": slot, "plan": self.config.mode},
            )
            verdict = await self.gate.propose(proposal)
            if verdict.write and verdict.value is not None and verdict.value >= 0.5:
                self.planner.ran[asset].add(slot)

    async def _replan(self, first: int) -> None:
        assert self.offload is not None
        latest, scores, _ = self.inputs()
        self.planner.observe(latest)
        # building, decomposing, repairing and polishing run in a worker thread: never on the loop
        problem = await asyncio.to_thread(self.planner.problem, first, latest, scores)
        if problem is None:
            return
        limit = self.config.max_variables
        parts = [(0, problem)] if limit is None else await asyncio.to_thread(blocks, problem, limit)
        results = await asyncio.gather(*(self._solve(first, offset, part) for offset, part in parts))
        plan: scheduling.Plan = {a.name: [] for a in problem.assets}
        for offset, part_plan in results:
            for asset, slots in part_plan.items():
                plan[asset].extend(t + offset for t in slots)
        await asyncio.to_thread(self.planner.adopt, first, problem, plan)

    async def _solve(
        self, first: int, offset: int, problem: scheduling.LoadSchedule
    ) -> tuple[int, scheduling.Plan]:
        assert self.offload is not None
        bqm = await asyncio.to_thread(scheduling.build, problem)
        decision = await self.offload.solve(
            bqm, deadline_ms=self.deadline_ms, meta={"plan": "load-schedule", "slot": first + offset}
        )
        plan = scheduling.decode(problem, decision.sample)
        feasible = not scheduling.violations(problem, plan)
        job = PlanJob(
            self.slot,
            first + offset,
            decision.job_id,
            decision.solver,
            decision.source,
            round(decision.seconds, 3),
            bqm.num_variables,
            feasible,
        )
        self.jobs.append(job)
        self.wins[decision.solver] += 1
        await self.gate.record_decision(
            "offload:load-schedule",
            {
                "job_id": decision.job_id,
                "source": decision.source,
                "solver": decision.solver,
                "energy": decision.energy,
                "seconds": decision.seconds,
                "reason": decision.reason,
                "first_slot": first + offset,
                "feasible": feasible,
            },
        )
        return offset, plan if feasible else await asyncio.to_thread(scheduling.repair, problem, plan)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "start": self.start,
            "slot": self.slot,
            "jobs": len(self.jobs),
            "infeasible_samples": sum(1 for j in self.jobs if not j.feasible),
            "solver_wins": dict(self.wins),
            "job_log": [asdict(job) for job in self.jobs],  # which solver won each job
            "sources": dict(Counter(j.source for j in self.jobs)),
            "held": sorted(self.planner.held),
            "plan": self.planner.plan,
        }
