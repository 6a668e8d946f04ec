"""The production day of an agent whose plant sends nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from qxedge.agent.audit import query
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker

from .conftest import edge_config, wait_until

pytestmark = pytest.mark.integration


async def test_a_plan_without_any_reading_is_refused_as_having_no_data(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = edge_config(broker.url, planning=True, planning__mode="baseline", planning__slot_s="0.2")
    agent = Agent(cfg)  # no simulator: not one reading arrives
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="qxedge"):
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 30)
            assert await wait_until(lambda: agent.day is not None and agent.day.slot >= 1, 60)
            stop.set()
    rows = [r for r in query(cfg.safety.audit.resolved(cfg.site)) if r["source"] == "plan:baseline"]
    assert rows and {r["verdict"] for r in rows} == {"refused"}
    # the first refusal of a kind has a row of its own, repeats a summary row ("N more in ..., the last: ...")
    assert all(r["reason"].endswith("no input data has arrived yet") for r in rows)
    assert agent.gate is not None and agent.gate.verdicts["written"] == 0
    assert "no input data has arrived yet" in caplog.text and " s old" not in caplog.text
