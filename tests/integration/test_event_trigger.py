"""window.trigger: readings — an evaluation as soon as readings are pending, coalescing what arrives
during one; against a real broker, with the interval set far beyond the test's length."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from qxedge.agent.config import WindowConfig
from qxedge.agent.decisions import Scored
from qxedge.agent.features import Features
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.readings import ReadingBatch
from qxedge.core.errors import ConfigError
from qxedge.testing import Watcher, edge_config, wait_until

pytestmark = pytest.mark.integration


class HeldAgent(Agent):
    """The real agent; its first evaluation waits for ``release`` and every batch size is recorded."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release = threading.Event()
        self.batches: list[int] = []

    def evaluate(
        self, batch: ReadingBatch, now: float, only: set[str] | None = None
    ) -> tuple[list[Scored], Features]:
        self.batches.append(len(batch))
        if len(self.batches) == 1:  # the first evaluation (of unknown cost) runs in a worker thread
            assert self.release.wait(30), "the test never released the first evaluation"
        return super().evaluate(batch, now, only)


def test_trigger_defaults_to_interval_and_names_its_path_when_wrong() -> None:
    assert WindowConfig().trigger == "interval"
    assert WindowConfig(trigger="readings").trigger == "readings"
    with pytest.raises(ConfigError, match=r"window\.trigger"):
        edge_config("mqtt://127.0.0.1:1883", window__trigger="sometimes")


async def test_readings_start_an_evaluation_long_before_the_interval(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(broker.url, window__trigger="readings", window__every_s="3600")
    agent = Agent(cfg)
    plant = watch()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        before = agent.stats().evaluations
        await asyncio.to_thread(plant.publish, "plant/line1/pump1/temp", b'{"value": 70.5}')
        evaluated = await wait_until(lambda: agent.stats().evaluations > before)
        stop.set()
    assert evaluated, "no evaluation after a reading, with every_s = 3600"
    assert agent.stats().readings == 1 and agent.window.rows == 1


async def test_without_readings_every_asset_is_still_evaluated_every_interval(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(broker.url, window__trigger="readings", window__every_s="0.05")
    agent = HeldAgent(cfg)
    agent.release.set()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        evaluated = await wait_until(lambda: len(agent.batches) >= 5)
        stop.set()
    assert evaluated, "no evaluation without readings: the interval's timer did not wake the loop"
    assert set(agent.batches) == {0}


async def test_readings_during_an_evaluation_are_coalesced_into_the_next(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(broker.url, window__trigger="readings", window__every_s="3600")
    agent = HeldAgent(cfg)
    plant = watch()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.to_thread(plant.publish, "plant/line1/pump1/temp", b'{"value": 70.0}')
        first = await wait_until(lambda: len(agent.batches) == 1)
        for i in range(50):  # all of them arrive while the first evaluation is held
            await asyncio.to_thread(plant.publish, "plant/line1/pump1/temp", b'{"value": %d}' % (71 + i))
        arrived = await wait_until(lambda: agent.stats().readings == 51)
        agent.release.set()
        second = await wait_until(lambda: agent.stats().evaluations == 2)
        await asyncio.to_thread(plant.publish, "plant/line1/pump1/power", b'{"value": 12.5}')
        third = await wait_until(lambda: agent.stats().evaluations == 3)
        stop.set()
    assert first and arrived and second and third
    assert agent.batches == [1, 50, 1], "one evaluation for the 50 readings that came during the first"
    assert agent.window.rows == 52
