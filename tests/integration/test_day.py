"""Production on the plant's clock against a real broker: an agent whose plant sends nothing, orders
over MQTT (one bad, dead-lettered), and a restart mid-day counted at the simulated plant's meter."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import pytest

from qxedge.agent.audit import query
from qxedge.agent.demo import measure_day
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.testing import Watcher, compressed, edge_config, wait_until

pytestmark = pytest.mark.integration


async def test_a_plan_without_any_reading_is_refused_as_having_no_data(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = edge_config(broker.url, planning=True, planning__mode="baseline")
    agent = Agent(cfg, clock=compressed(cfg, "2026-06-01T09:30", 0.3))  # no simulator: no reading arrives
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="qxedge"):
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 30)
            assert await wait_until(lambda: agent.day is not None and len(agent.day.history) >= 2, 60)
            stop.set()
    rows = [r for r in query(cfg.safety.audit.resolved(cfg.site)) if r["source"] == "plan:baseline"]
    assert rows and {r["verdict"] for r in rows} == {"refused"}
    # the first refusal of a kind has a row of its own, repeats a summary row ("N more in ..., the last: ...")
    assert all(r["reason"].endswith("no input data has arrived yet") for r in rows)
    assert agent.gate is not None and agent.gate.verdicts["written"] == 0
    assert "no input data has arrived yet" in caplog.text and " s old" not in caplog.text
    assert agent.day is not None and not agent.day.state.done.get("demo-comp1")  # refused: not done


async def test_orders_over_mqtt_and_a_bad_one_dead_lettered(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/demo/deadletter")
    cfg = edge_config(
        broker.url,
        planning=True,
        planning__mode="baseline",
        planning__orders="[]",
        planning__forecast__base_kw="60",
    )
    agent = Agent(cfg, clock=compressed(cfg, "2026-06-01T06:00", 2.0))
    order = {
        "id": "mes-7",
        "asset": "line1/comp1",
        "runs": 2,
        "release": "2026-06-01T10:00",
        "due": "2026-06-01T16:00+09:00",
        "power_kw": 30,
    }
    messages = [
        {"op": "add", "order": order},
        {"op": "add", "order": {**order, "id": "mes-8", "asset": "line9/press"}},  # no safety envelope
        {"op": "add", "order": {**order, "id": "mes-9", "runs": "many"}},
        {"op": "change", "order": {**order, "runs": 3}},
        {"op": "add", "order": {**order, "id": "mes-10", "asset": "line1/oven1"}},
        {"op": "cancel", "id": "mes-10"},
        {"op": "cancel", "id": "nope"},
    ]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        for doc in messages:
            watcher.publish("qx/v1/demo/orders", json.dumps(doc), qos=1)
        watcher.publish("qx/v1/demo/orders", b"\xff\xfe not json", qos=1)
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) == 4, 30)
        day = agent.day
        assert day is not None
        assert await wait_until(lambda: sum(day.order_log.values()) == len(messages) + 1, 30)
        assert await wait_until(lambda: "mes-7" in day.state.plan, 30)  # planned before the boundary
        stop.set()
    assert day.order_log == {"added": 2, "changed": 1, "cancelled": 1, "refused": 4}
    book = day.state.book
    assert book.orders["mes-7"].runs == 3 and book.cancelled == {"mes-10"}
    assert "mes-8" not in book.orders and "mes-9" not in book.orders
    letters = {d["payload"]: d for d in watcher.json_on("qx/v1/demo/deadletter")}
    reasons = sorted(d["reason"] for d in letters.values())
    assert any("no safety envelope for 'line9/press'" in r for r in reasons), reasons
    assert any("order.runs" in r for r in reasons) and any("cancel: no order 'nope'" in r for r in reasons)
    assert {d["code"] for d in letters.values()} == {"invalid", "wrong_shape", "invalid_json"}
    assert all(d["topic"] == "qx/v1/demo/orders" for d in letters.values())
    assert agent.stats().deadletters == 4
    # on disk: a new agent knows the order, changed and planned
    again = Agent(cfg, clock=compressed(cfg, "2026-06-01T07:00", 2.0))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(again.run(stop))
        await asyncio.wait_for(again.ready.wait(), 30)
        stop.set()
    assert again.day is not None and again.day.state.book.orders["mes-7"].runs == 3


async def test_a_restart_mid_day_neither_repeats_nor_loses_a_run(broker: EmbeddedBroker) -> None:
    """The simulated plant runs on; the agent is stopped abruptly mid-day and started again with its
    state on disk. The plant's meter says which loads ran in which slot."""
    cfg = edge_config(broker.url, planning=True, planning__mode="baseline", simulator__faults="[]")
    planning, simulator = cfg.planning, cfg.simulator
    assert planning is not None and simulator is not None
    clock = compressed(cfg, "2026-06-01T07:00", 2.5)
    grid = clock.grid
    day = grid.slots(grid.slot_at(clock.now() + 3600), 8)  # 08:00 to 16:00
    plant = SimulatedPlant(simulator, cfg.broker, cfg.site)
    lives = []
    async with plant, asyncio.TaskGroup() as tasks:
        simulation = tasks.create_task(plant.run())
        for until in (day[3].start + 1800, day[-1].end):  # killed half-way through 11:00
            agent = Agent(cfg, clock=clock)
            lives.append(agent)
            life = tasks.create_task(agent.run())
            await asyncio.wait_for(agent.ready.wait(), 30)
            assert await wait_until(lambda t=until: clock.now() >= t, 60)
            life.cancel()
            await asyncio.gather(life, return_exceptions=True)
        simulation.cancel()
    measured = measure_day(planning, list(plant.model.meter), clock, day)
    assert measured["unmet_runs"] == 0, measured  # none lost
    for order in planning.orders:  # none repeated: each load ran exactly its runs
        ran = [s["start"] for s in measured["slots"] if order.asset in s["on"]]
        assert len(ran) == order.runs, (order.id, ran)
    first, second = (life.day for life in lives)
    assert first is not None and second is not None
    assert second.state.done == {o.id: second.state.done[o.id] for o in planning.orders}
    assert all(len(second.state.done[o.id]) == o.runs for o in planning.orders)
    assert 0 < sum(len(ts) for ts in first.state.done.values()) < sum(o.runs for o in planning.orders)
