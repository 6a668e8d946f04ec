"""History upstream end to end: the agent's batches through its outbox to the historian's Parquet,
counted in readings (not records), across a broker kill -9, a historian kill -9 and an agent kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import polars as pl

from qxedge.agent.config import load_config
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.hybrid.historian import Historian, HistorianConfig
from qxedge.testing import Watcher, wait_until, wait_until_sync
from qxedge.testing.history import CountingPlant, agent_config, count, historian_config, parquet, start


async def test_every_reading_lands_once_in_parquet_and_the_outbox_empties(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    root = tmp_path / "history"
    cfg = load_config(agent_config(tmp_path, broker.url, broker.url))
    cfg = cfg.model_copy(update={"history": cfg.history.model_copy(update={"exclude": ["l1/fan*"]})})
    agent = Agent(cfg)
    historian = Historian(HistorianConfig(broker=cfg.broker, root=root, flush_s=0.1))
    watcher = Watcher(broker.url)
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
        watcher.publish("qx/v1/t/history", b'{"v": 1}\n')
        produced = plant.frame().filter(~pl.col("asset").str.starts_with("l1/fan"))
        assert await wait_until(lambda: historian.stats().rows == produced.height, 30)
        assert await wait_until(lambda: historian.stats().deadletters == 2)
        assert await wait_until(lambda: agent.outbox is not None and agent.outbox.depth == 0)  # all confirmed
        stop_agent.set()
        stop_historian.set()
    watcher.close()
    result, _ = count(produced, parquet(root))
    assert (result.lost, result.duplicates, result.unknown) == (0, 0, 0), result
    assert agent.stats().history["excluded"] == plant.count - produced.height
    assert historian.stats().missing == {("t", "history"): 0}
    assert len(list((root / "_deadletter").glob("*.json"))) == 2


def committed_batches(outbox: Path) -> int:
    db = sqlite3.connect(outbox)
    try:
        row = db.execute("SELECT next_seq FROM streams WHERE name = 'history'").fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def ledger(root: Path) -> tuple[int, int, int]:
    """(batches, max seq + 1, rows) in the historian's ledger."""
    path = root / "_historian" / "ledger.sqlite"
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(path)
    try:
        n, top, rows = db.execute("SELECT COUNT(*), MAX(seq), SUM(rows) FROM batches").fetchone()
    except sqlite3.OperationalError:  # the historian is creating it
        return 0, 0, 0
    finally:
        db.close()
    return int(n), (int(top) + 1 if top is not None else 0), int(rows or 0)


def test_nothing_lost_across_broker_historian_and_agent_kill_9(tmp_path: Path) -> None:
    """The plant broker stays up (what the plant publishes while the uplink is down is the agent's to
    keep); the data-center broker (persistence on), the historian and the agent are each killed with
    SIGKILL mid-stream and started again. Every reading the agent committed to its outbox is in the
    Parquet once; the only readings missing are one run per asset around the agent's kill: those it held
    in memory (at most history.every_s) and those published while no agent listened."""
    root = tmp_path / "history"
    with EmbeddedBroker() as plant_broker, EmbeddedBroker(persistence=True) as dc:
        edge = agent_config(tmp_path, plant_broker.url, dc.url)
        hcfg = historian_config(tmp_path, dc.url, root)
        log = tmp_path / "run.log"
        historian = start(["historian", "--config", str(hcfg)], tmp_path, log)
        agent = start(["run", "--config", str(edge)], tmp_path, log)
        assert wait_until_sync(lambda: "listening on plant/#" in log.read_text(), 60), log.read_text()
        plant = CountingPlant(plant_broker.url)
        try:

            def rows_above(n: int) -> bool:
                return ledger(root)[2] >= n

            assert wait_until_sync(lambda: rows_above(500), 60), log.read_text()
            dc.kill()  # the data-center broker, mid-stream
            time.sleep(1.0)  # an outage: the agent stores batches meanwhile
            dc.start()
            n = plant.count
            assert wait_until_sync(lambda: rows_above(n), 60), log.read_text()
            os.kill(historian.pid, signal.SIGKILL)
            historian.wait()
            time.sleep(0.5)  # batches queue at the broker for its persistent session
            historian = start(["historian", "--config", str(hcfg)], tmp_path, log)
            n = plant.count
            assert wait_until_sync(lambda: rows_above(n), 60), log.read_text()
            killed_at = time.time()
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
            agent = start(["run", "--config", str(edge)], tmp_path, log)
            n = plant.count + 500
            assert wait_until_sync(lambda: rows_above(n), 60), log.read_text()
        finally:
            plant.close()
        try:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
            batches = committed_batches(tmp_path / "outbox.sqlite")
            assert wait_until_sync(lambda: ledger(root)[0] >= batches, 30), log.read_text()
            historian.send_signal(signal.SIGTERM)
            assert historian.wait(30) == 0
        finally:
            for proc in (agent, historian):
                if proc.poll() is None:
                    proc.kill()
    n, top, rows = ledger(root)
    assert n == top == batches  # every batch the agent committed, once, no gap
    df = parquet(root)
    assert df.height == rows
    result, lost = count(plant.frame(), df)
    print(result)
    assert (result.duplicates, result.unknown) == (0, 0), result
    assert "sending" in log.read_text()  # the agent sent again what the historian had not confirmed
    for (asset, signal_), part in lost.group_by("asset", "signal"):
        produced = plant.frame().filter((pl.col("asset") == asset) & (pl.col("signal") == signal_)).sort("ts")
        index = {ts: i for i, ts in enumerate(produced.get_column("ts").to_list())}
        positions = [index[ts] for ts in part.get_column("ts").to_list()]
        assert positions == list(range(positions[0], positions[0] + len(positions))), (asset, signal_)
        assert part.get_column("ts").min() <= killed_at + 0.5 < part.get_column("ts").max() + 30
    print(f"lost around the agent's kill -9: {result.lost} readings")
