"""History upstream end to end: the agent's batches through its outbox to the historian's Parquet,
counted in readings (not records), across a broker kill -9, a historian kill -9 and an agent kill -9."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl

from qxedge.agent.config import load_config
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.hybrid.historian import Historian, HistorianConfig
from qxedge.testing import Watcher, wait_until
from qxedge.testing.history import CountingPlant, agent_config, count, kill_run, parquet


async def test_every_reading_lands_once_in_parquet_and_the_outbox_empties(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    root = tmp_path / "history"
    cfg = load_config(agent_config(tmp_path, broker.url, broker.url))
    cfg = cfg.model_copy(update={"history": cfg.history.model_copy(update={"exclude": ["l1/fan*"]})})
    agent = Agent(cfg)
    historian = Historian(HistorianConfig(broker=cfg.broker, root=root, flush_s=0.1))
    watcher = Watcher(broker.url, "qx/v1/t/history")
    stop_agent, stop_historian = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(historian.run(stop_historian))
        tasks.create_task(agent.run(stop_agent))
        await agent.ready.wait()
        await historian.ready.wait()
        plant = CountingPlant(broker.url)
        try:
            assert await wait_until(lambda: plant.count >= 900)
        finally:
            plant.close()
        # a bad batch and garbage on the history topic: dead-lettered, the historian goes on
        watcher.publish("qx/v1/t/history", b"garbage")
        first = watcher.on("qx/v1/t/history")[0].payload
        watcher.publish("qx/v1/t/history", first)  # delivered again: written once, confirmed again
        watcher.publish("qx/v1/t/history", b'{"v": 1}\n')
        produced = plant.frame().filter(~pl.col("asset").str.starts_with("l1/fan"))
        assert await wait_until(lambda: historian.stats().rows == produced.height, 30)
        assert await wait_until(lambda: historian.stats().deadletters == 2)
        assert await wait_until(lambda: historian.stats().duplicates >= 1)
        assert await wait_until(lambda: agent.outbox is not None and agent.outbox.depth == 0)  # all confirmed
        stop_agent.set()
        stop_historian.set()
    watcher.close()
    result, _ = count(produced, parquet(root))
    assert (result.lost, result.duplicates, result.unknown) == (0, 0, 0), result
    assert agent.stats().history["excluded"] == plant.count - produced.height
    assert historian.stats().missing == {("t", "history"): 0}
    assert len(list((root / "_deadletter").glob("*.json"))) == 2


def test_nothing_lost_across_broker_historian_and_agent_kill_9(tmp_path: Path) -> None:
    """The plant broker stays up; the data-center broker (persistence on), the historian and the agent
    are each killed with SIGKILL mid-stream and started again (``qxedge.testing.history.kill_run``);
    the agent while its journal holds readings of no batch yet (a cut every 2 s). Every reading the
    plant published is in the Parquet exactly once: every batch the agent committed to its outbox
    once, without a gap in its seq, the batches sent again after the kills de-duplicated; the readings
    in the agent's journal at its kill sent by the restarted agent; those accepted but not on disk yet
    at the kill, and those published while no agent listened, sent again by the plant broker to the
    agent's persistent session (QoS 1 readings are acknowledged only once journaled)."""
    run = kill_run(tmp_path, period_s=0.005)
    print(run.count, f"journaled at the kill {run.journaled}; batches {run.committed}")
    batches, top, rows = run.ledger
    assert batches == top == run.committed  # every committed batch once, no gap
    assert run.count.rows == rows
    assert run.journaled >= 300  # held by the agent when it died: before the journal, all lost
    assert (run.count.lost, run.count.duplicates, run.count.unknown) == (0, 0, 0), run.count
