"""Integration: the config reloaded (SIGHUP) into a running agent: models, rules and envelopes; a bad
config changes nothing and says why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qxedge.agent.config import EdgeConfig
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.core.errors import ConfigError, Problem
from qxedge.testing import Watcher, edge_config, wait_until
from qxedge.testing.faults import Plant, agent_config, start_agent

pytestmark = pytest.mark.integration
ALARMS = "qx/v1/demo/alarms"


async def test_a_reload_applies_models_rules_and_envelopes_and_keeps_the_window(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    alarms = watch(ALARMS)
    cfg = edge_config(broker.url, window__length_s="2", window__every_s="0.1")
    assert cfg.simulator is not None
    wanted: list[EdgeConfig | ConfigError] = []

    def load() -> EdgeConfig:
        got = wanted.pop(0)
        if isinstance(got, ConfigError):
            raise got
        return got

    agent = Agent(cfg)
    agent.reloader = load
    window = agent.window
    stop = asyncio.Event()
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    async with plant, asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        simulation = tasks.create_task(plant.run())
        assert await wait_until(lambda: agent.counts.inferences > 20)
        model, rule = agent.models["anomaly"], agent.rules[0]
        # a bad config: nothing changes, an alarm says why
        wanted.append(ConfigError([Problem("rules[0].above", "Input should be a valid number")], "edge.yaml"))
        agent.request_reload()
        assert await asyncio.to_thread(alarms.wait_for, lambda ms: len(ms) > 0, 20)
        assert agent.rules[0] is rule and agent.config.rules == cfg.rules
        # a good one: the rule and the envelope change, the model (unchanged) keeps its session
        envelopes = [cfg.safety.envelopes[0].model_copy(update={"max": 0.9}), *cfg.safety.envelopes[1:]]
        good = cfg.model_copy(
            update={
                "rules": [cfg.rules[0].model_copy(update={"above": 5.0})],
                "safety": cfg.safety.model_copy(update={"envelopes": envelopes}),
            }
        )
        rows, evaluations = window.rows, agent.counts.evaluations
        wanted.append(good)
        agent.request_reload()
        assert await wait_until(lambda: agent.rules[0].config.above == 5.0)
        assert agent.rules[0] is not rule and agent.models["anomaly"] is model and agent.window is window
        envelope = agent.safety.envelope("line1/pump1")
        assert envelope is not None and envelope.max == 0.9
        assert window.rows >= rows * 0.9 > 0  # the readings stayed in the window
        assert await wait_until(lambda: agent.counts.evaluations > evaluations + 5)
        stop.set()
        simulation.cancel()
    alarm = alarms.json_on(ALARMS)[0]
    assert alarm["kind"] == "config" and "rules[0].above" in alarm["reason"]
    assert "config reload refused" in alarm["reason"]


def test_sighup_reloads_the_file_of_a_running_agent_process(
    broker: EmbeddedBroker, tmp_path: Path, watch: Callable[..., Watcher]
) -> None:
    alarms = watch("qx/v1/t/alarms")
    path = agent_config(tmp_path, broker.url)
    good = path.read_text()
    log = tmp_path / "agent.log"
    agent = start_agent(path, log)
    plant = Plant(broker.url)
    try:
        assert _wait_log(log, "listening on"), log.read_text()
        # a config that does not validate: the agent runs on and says why
        path.write_text(good.replace("every_s: 0.02", "every_s: -1"))
        os.kill(agent.pid, signal.SIGHUP)
        assert alarms.wait_for(lambda ms: len(ms) > 0, 30), log.read_text()
        reason = json.loads(alarms.messages[0].payload)["reason"]
        assert "config reload refused" in reason and "telemetry.every_s" in reason
        # a good one with a new envelope: applied
        path.write_text(
            good.replace("safety: {", 'safety: {envelopes: [{assets: ["l1/*"], min: 0, max: 1}], ')
        )
        os.kill(agent.pid, signal.SIGHUP)
        assert _wait_log(log, "config reloaded safety"), log.read_text()
        assert agent.poll() is None
    finally:
        plant.close()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:  # never left running for the tests after this one
            agent.kill()
            agent.wait()


def _wait_log(log: Path, text: str, within_s: float = 30) -> bool:
    from qxedge.testing import wait_until_sync

    return wait_until_sync(lambda: log.exists() and text in log.read_text(), within_s)
