"""The agent's dead letters against a real broker: what the metrics count them by."""

import asyncio
from collections.abc import Callable

import pytest

from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.core.errors import RejectCode
from qxedge.testing import Watcher, edge_config, wait_until
from tests.unit.connectors.test_readings import A, S

pytestmark = pytest.mark.integration


async def test_deadletter_metric_labels_come_from_the_fixed_set_of_codes(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Issue 25: every distinct bad ``ts`` used to add a label value (1,414 series after a fuzz run)."""
    watcher = watch("qx/v1/demo/deadletter")
    agent = Agent(edge_config(broker.url))
    bad = [
        *((S, f'{{"ts": "garbage {i}", "value": 1}}'.encode()) for i in range(60)),
        *((S, f'{{"ts": {-i}, "value": 1}}'.encode()) for i in range(60)),
        *((A, f'{{"values": {{"a/{i}": 1}}}}'.encode()) for i in range(60)),
        *((S, f'{{"value": "{i}"}}'.encode()) for i in range(60)),
        *((S, f"not json {i}".encode()) for i in range(60)),
    ]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        publisher = watcher.client
        for topic, payload in bad:
            publisher.publish(topic, payload, qos=1)
        assert await wait_until(lambda: agent.stats().deadletters == len(bad), 30)
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) == len(bad), 30)
        stop.set()
    families = [f for f in agent.metrics.collect() if f.name == "qxedge_deadletters"]
    labels = {s.labels["reason"] for f in families for s in f.samples if s.name.endswith("_total")}
    assert labels == {"bad_ts", "bad_name", "bad_value", "invalid_json"}
    assert labels <= {c.value for c in RejectCode}
    assert sum(s.value for f in families for s in f.samples if s.name.endswith("_total")) == len(bad)
    letters = {(d["payload"], d["code"]): d["reason"] for d in watcher.json_on("qx/v1/demo/deadletter")}
    assert "'garbage 7'" in letters[('{"ts": "garbage 7", "value": 1}', "bad_ts")], "the full reason"
