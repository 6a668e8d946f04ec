"""Production on the plant's clock: each slot's setpoints at its boundary, the next plan in between,
for as long as the agent runs (a rolling horizon across midnight, not a one-shot day).

At the boundary of slot s the planner's run/standby values for s go through the setpoint gate (the
safety envelope decides; a load whose score flags it at that moment stays in standby; the data time of
each decision is the load's newest reading, so a load that stopped reporting is never switched). A run
counts as done only when the gate wrote it. Then the horizon from the slot after s is planned again
(``optimised``: offloaded with a deadline of ``plan_share`` of a slot, so it is there before the next
boundary; ``baseline``: every order as soon as it is released). Slots are executed one after the other
on the grid, so none is skipped or executed twice, daylight-saving days included; a slot reached more
than half-way through (the agent was down or stalled) is executed in standby and its runs re-planned.

Orders arrive from the config and on ``qx/v1/{site}/orders`` (:mod:`qxedge.agent.orders`); the bad ones
are dead-lettered with the reason, the good ones re-plan the slots not yet executed at once. The orders,
the runs done, the last slot executed and the plan are on disk (:mod:`qxedge.agent.planstate`): after
a restart in a slot already executed the agent asserts that slot's setpoints again without counting its
runs twice, and goes on with the next.

Between boundaries the base load is sampled ``samples_per_slot`` times; each slot's mean teaches the
forecast. The first plan waits (at most ``forecast.wait_s``) for base-load readings unless
``forecast.base_kw`` gives a forecast to start with. The solve step is one method, :meth:`solve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from qxedge.agent.clock import Clock, Slot
from qxedge.agent.orders import CancelOrder, merge_config, parse_message
from qxedge.agent.planning import Horizon, Planner, PlanningConfig, baseline, blocks, fix
from qxedge.agent.planstate import encode, load_state, write_atomic
from qxedge.agent.safety import Latest, Proposal, Verdict
from qxedge.connectors.readings import Rejected
from qxedge.core.errors import PayloadError
from qxedge.hybrid.client import Decision, OffloadClient
from qxedge.hybrid.problems import scheduling

log = logging.getLogger(__name__)

Inputs = Callable[[], tuple[Latest, Mapping[str, float], float]]  # readings, scores, when evaluated
LATE_SHARE = 0.5  # a slot reached later than this share of it is executed in standby
KEEP_DONE_S = 7 * 86_400  # orders due longer ago than this are forgotten


class Gate(Protocol):
    """What the day needs of the setpoint gate."""

    async def propose(self, p: Proposal, now: float | None = None) -> Verdict: ...

    async def record_decision(self, kind: str, provenance: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class SlotInputs:
    """What the plan in force when a slot was executed assumed of it."""

    start: int  # the slot's start (epoch s)
    cap_left_kw: int  # the cap less the base-load forecast: what the loads could draw
    price: float  # per kWh, as billed for the slot's real length
    power_kw: dict[str, int]  # each order's power in the plan (by order id)


@dataclass(slots=True)
class PlanJob:
    slot: str  # planned during this slot (local start), for the slots after it
    first: str  # the block's first slot
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
        site: str,
        gate: Gate,
        offload: OffloadClient | None,
        inputs: Inputs,
        clock: Clock,
        *,
        deadletter: Callable[[Rejected], None] = lambda _bad: None,
        allowed: Callable[[str], str | None] = lambda _asset: None,
        plan_share: float = 0.6,
    ) -> None:
        self.config = config
        self.clock = clock
        self.grid = clock.grid
        self.gate = gate
        self.offload = offload
        self.inputs = inputs
        self.deadletter = deadletter
        self.allowed = allowed
        self.path = config.resolved_state(site)
        self.state = load_state(self.path)
        merge_config(self.state.book, {o.id: o for o in config.orders})
        self.planner = Planner(config, self.grid, self.state)
        self.deadline_ms = max(50, int(clock.real_seconds(config.slot_s) * plan_share * 1000))
        if offload is not None:
            self.deadline_ms = min(self.deadline_ms, offload.config.deadline_ms)
        self.executed: Slot | None = None  # the last slot executed by this run
        self.history: deque[tuple[Slot, dict[str, float]]] = deque(maxlen=10_000)  # slots executed
        self.executed_inputs: deque[SlotInputs] = deque(maxlen=10_000)  # what each assumed, when executed
        self._inputs: dict[int, SlotInputs] = {}  # of the slots ahead, from the last plan
        self.jobs: deque[PlanJob] = deque(maxlen=1000)  # the last plan jobs (the agent runs for months)
        self.job_count = 0
        self.wins: Counter[str] = Counter()
        self.order_log: Counter[str] = Counter()  # added, changed, cancelled, duplicate, refused
        self.late = 0  # slots executed in standby because they were reached too late
        self._wake = asyncio.Event()  # the orders changed, or (before the first plan) readings came
        self._orders_changed = False
        self._needs_data = config.forecast.base_kw is None  # the first plan waits for base-load readings
        self._data_by = 0.0  # ... until then (real time)
        self._write = asyncio.Lock()
        self._sampled: tuple[Slot | None, float, int] = (None, 0.0, 0)  # the slot, sum of samples, count

    # --- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Plan and execute slot after slot until cancelled."""
        clock, grid = self.clock, self.grid
        now = clock.now()
        self.state.prune(now - KEEP_DONE_S, grid.tz)
        current = grid.slot_at(now)
        planned_here = any(current.start in ts for ts in self.state.plan.values())
        if self.state.executed == current.start:  # a restart within a slot already executed
            log.info("production: resuming in slot %s (executed before the restart)", grid.label(current))
            await self._guarded(self._execute(current, resumed=True), current)
            nxt = grid.after(current)
        elif planned_here and now - current.start < LATE_SHARE * current.seconds:
            nxt = current  # its plan is on disk: run it, a little late
        else:
            if self.state.executed is not None:  # a restart that missed the boundary: stand by
                await self._guarded(self._execute(current, standby=True), current)
            nxt = grid.after(current)  # (a first start leaves the loads alone until the first boundary)
        self._data_by = time.time() + self.config.forecast.wait_s
        await self._guarded(self._replan(nxt), nxt)
        while True:
            await self._wait_for(nxt)
            await self._guarded(self._execute(nxt), nxt)
            following = grid.after(nxt)
            await self._guarded(self._replan(following), nxt)
            nxt = following

    async def _guarded(self, step: Any, slot: Slot) -> None:
        """A failure in a step is logged and the plan kept: production must never take the agent down."""
        try:
            await step
        except Exception:
            log.exception("production, slot %s: keeping the plan it has", self.grid.label(slot))

    def on_evaluated(self) -> None:
        """The agent evaluated new readings: the first plan may be waiting for them."""
        if self._needs_data:
            self._wake.set()

    def _have_data(self, latest: Latest) -> bool:
        """Whether the plan may be built: base-load readings are there, or a configured forecast, or
        the wait for them (``forecast.wait_s``) is over (then with the margin alone, said once)."""
        if not self._needs_data:
            return True
        if self.planner.base_now(latest) is None:
            if time.time() < self._data_by:
                return False
            log.warning(
                "production: no base-load readings after %g s: planning with the margin alone",
                self.config.forecast.wait_s,
            )
        self._needs_data = False
        return True

    async def _wait_for(self, slot: Slot) -> None:
        """Until ``slot`` starts: sample the base load; plan again at once when the orders change (or
        the first readings come), if there is time for it before the boundary."""
        boundary = self.clock.real(slot.start)
        every = self.clock.real_seconds(self.config.slot_s) / self.config.forecast.samples_per_slot
        sample_at = time.time() + every
        while (left := boundary - time.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, max(0.0, sample_at - time.time()))):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake.clear()
                waiting = self._needs_data
                if (self._orders_changed or (waiting and self._have_data(self.inputs()[0]))) and (
                    boundary - time.time() > self.deadline_ms / 1000
                ):
                    self._orders_changed = False
                    await self._guarded(self._replan(slot), slot)
            if time.time() >= sample_at:
                self._sample()
                sample_at += every

    def _sample(self) -> None:
        slot, total, n = self._sampled
        kw = self.planner.base_now(self.inputs()[0])
        if slot is not None and kw is not None:
            self._sampled = (slot, total + kw, n + 1)

    def _learn(self, starting: Slot) -> None:
        """The slot that ends as ``starting`` starts teaches the forecast its mean base load."""
        slot, total, n = self._sampled
        if slot is not None and n and slot.end == starting.start:
            self.planner.forecast.observe(self.grid.slot_of_day(slot), total / n)
        self._sampled = (starting, 0.0, 0)

    # --- execution --------------------------------------------------------------------------------------
    async def _execute(self, slot: Slot, *, resumed: bool = False, standby: bool = False) -> None:
        """The slot's setpoints through the gate; the runs the gate wrote are done (on disk).
        ``resumed``: the slot was executed before a restart; its setpoints are asserted again."""
        now = self.clock.now()
        if not (resumed or standby) and now - slot.start > LATE_SHARE * slot.seconds:
            log.warning(
                "production: slot %s reached %.0f s late: in standby, its runs planned again",
                self.grid.label(slot),
                now - slot.start,
            )
            self.late += 1
            standby = True
        self._learn(slot)
        self.state.prune(now - KEEP_DONE_S, self.grid.tz)
        latest, scores, _ = self.inputs()
        self.planner.observe(latest)
        self.planner.held |= self.planner.held_now(scores)
        setpoints = sorted(self.planner.setpoints(slot).items())
        if standby:
            setpoints = [(asset, (0.0, None)) for asset, _ in setpoints]
        done = self.state.done
        # on disk before any write: the slot as executed and its runs as done, so a restart in it
        # resumes it and a crash between the write and the record loses no run; a run the gate refuses
        # is taken back below
        self.state.executed = slot.start
        for _, (value, order_id) in setpoints:
            if order_id is not None and value >= 0.5:
                done.setdefault(order_id, set()).add(slot.start)
        await self.save()
        label = self.grid.label(slot)
        values: dict[str, float] = {}
        for asset, (value, order_id) in setpoints:
            reading = latest.get((asset, self.config.power_signal))  # the load's own data time
            proposal = Proposal(
                asset,
                value,
                f"plan:{self.config.mode}",
                None if reading is None else reading[0],
                time.time(),
                provenance={"slot": label, "order": order_id, "plan": self.config.mode},
            )
            verdict = await self.gate.propose(proposal)
            values[asset] = value
            ran = verdict.write and verdict.value is not None and verdict.value >= 0.5
            if order_id is not None and not ran and not resumed:  # (resumed: it ran before the restart)
                done[order_id].discard(slot.start)
        self.executed = slot
        self.history.append((slot, values))
        inputs = self._inputs.pop(slot.start, None)
        if inputs is not None:
            self.executed_inputs.append(inputs)
        self._inputs = {start: i for start, i in self._inputs.items() if start > slot.start}
        await self.save()

    # --- planning -----------------------------------------------------------------------------------------
    async def _replan(self, first: Slot) -> None:
        latest, scores, _ = self.inputs()
        if not self._have_data(latest):
            return  # the plan on disk (if any) stands until the readings come
        self.planner.observe(latest)
        horizon = self.planner.horizon(first, latest, scores)
        if horizon is None:
            self.planner.adopt_nothing(first)
        elif self.config.mode == "baseline":
            self.planner.adopt(horizon, baseline(horizon.problem))
        else:
            plan = await self.solve(horizon)
            fixed, _ = await asyncio.to_thread(fix, horizon.problem, plan)
            self.planner.adopt(horizon, fixed)
        if horizon is not None:
            problem = horizon.problem
            power = {a.name: a.power_kw for a in problem.assets}
            for slot, cap, price in zip(horizon.slots, problem.cap_kw, problem.price, strict=True):
                self._inputs[slot.start] = SlotInputs(slot.start, cap, price, power)
        await self.save()

    async def solve(self, horizon: Horizon) -> scheduling.Plan:
        """The plan of one horizon, by ``route``: ``cqm``, the whole horizon as one constrained model
        (a ``cqm`` job: the data center's MILP proves its optimum in milliseconds; HiGHS locally when
        it does not answer); ``bqm``, the problem (in slot blocks with ``max_variables``) as penalty
        BQMs, each sample decoded and repaired when infeasible."""
        problem = horizon.problem
        if self.config.route == "cqm":
            return await self._solve_cqm(horizon)
        limit = self.config.max_variables
        parts = [(0, problem)] if limit is None else await asyncio.to_thread(blocks, problem, limit)
        results = await asyncio.gather(*(self._solve_block(horizon, off, part) for off, part in parts))
        plan: scheduling.Plan = {a.name: [] for a in problem.assets}
        for offset, part_plan in results:
            for name, slots in part_plan.items():
                plan[name].extend(t + offset for t in slots)
        return plan

    async def _solve_cqm(self, horizon: Horizon) -> scheduling.Plan:
        if self.offload is None:
            raise RuntimeError("optimised planning needs an offload: section")
        problem = horizon.problem
        cqm = await asyncio.to_thread(scheduling.build_cqm, problem)
        first = self.grid.label(horizon.slots[0])
        decision = await self.offload.solve_cqm(
            cqm, deadline_ms=self.deadline_ms, meta={"plan": "load-schedule", "slot": first}
        )
        plan = scheduling.decode(problem, decision.sample)
        feasible = not scheduling.violations(problem, plan)
        await self._record(decision, first, len(cqm.variables), feasible)
        return plan

    async def _solve_block(
        self, horizon: Horizon, offset: int, problem: scheduling.LoadSchedule
    ) -> tuple[int, scheduling.Plan]:
        if self.offload is None:
            raise RuntimeError("optimised planning needs an offload: section")
        bqm = await asyncio.to_thread(scheduling.build, problem)
        first = self.grid.label(horizon.slots[offset])
        decision = await self.offload.solve(
            bqm, deadline_ms=self.deadline_ms, meta={"plan": "load-schedule", "slot": first}
        )
        plan = scheduling.decode(problem, decision.sample)
        feasible = not scheduling.violations(problem, plan)
        await self._record(decision, first, bqm.num_variables, feasible)
        return offset, plan if feasible else await asyncio.to_thread(scheduling.repair, problem, plan)

    async def _record(self, decision: Decision, first: str, variables: int, feasible: bool) -> None:
        """A plan job in the summary and the audit log: who answered, and whether its sample was
        feasible as found."""
        during = self.grid.label(self.executed) if self.executed is not None else "-"
        self.jobs.append(
            PlanJob(
                during,
                first,
                decision.job_id,
                decision.solver,
                decision.source,
                round(decision.seconds, 3),
                variables,
                feasible,
            )
        )
        self.job_count += 1
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
                "first_slot": first,
                "feasible": feasible,
            },
        )

    # --- orders and state -------------------------------------------------------------------------------
    async def on_order(self, topic: str, payload: bytes) -> None:
        """A message on ``qx/v1/{site}/orders``: applied, or dead-lettered with the reason."""
        try:
            message = parse_message(payload)
            what = self.state.book.apply(message, self.grid, self.clock.now(), self.allowed)
        except PayloadError as exc:
            self.order_log["refused"] += 1
            log.warning("order refused: %s", exc)
            self.deadletter(Rejected(topic, payload, str(exc), exc.code))
            return
        self.order_log[what] += 1
        if what == "duplicate":
            return
        order_id = message.id if isinstance(message, CancelOrder) else message.order.id
        log.info("order %s %s", order_id, what)
        await self.gate.record_decision(
            f"order:{what}",
            {"source": "topic", "order": order_id, "message": message.model_dump(mode="json")},
        )
        await self.save()
        self._orders_changed = True
        self._wake.set()

    async def save(self) -> None:
        """The state on disk (encoded here, written in a thread, one write at a time)."""
        data = encode(self.state)
        async with self._write:
            await asyncio.to_thread(write_atomic, self.path, data)

    def _label(self, start: int) -> str:
        return self.grid.local(start).isoformat(timespec="minutes")

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "executed": None if self.executed is None else self.grid.label(self.executed),
            "jobs": self.job_count,
            "infeasible_samples": sum(1 for j in self.jobs if not j.feasible),
            "solver_wins": dict(self.wins),
            "job_log": [asdict(job) for job in self.jobs],  # which solver won each job
            "sources": dict(Counter(j.source for j in self.jobs)),
            "held": sorted(self.planner.held),
            "late_slots": self.late,
            "orders": dict(self.order_log),
            "done": {i: [self._label(t) for t in sorted(ts)] for i, ts in self.state.done.items()},
            "plan": {i: [self._label(t) for t in ts] for i, ts in self.state.plan.items()},
        }
