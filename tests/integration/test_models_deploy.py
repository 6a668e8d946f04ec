"""Integration: models published signed and in chunks on a real broker, verified, shadowed, promoted,
refused or rolled back by a running agent."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from qxedge.agent.config import WindowConfig
from qxedge.agent.models.publish import publish_model, send_command
from qxedge.agent.models.signing import keygen
from qxedge.agent.pipeline import Agent
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig
from qxedge.connectors.plant import Evaluation
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.testing import Watcher, edge_config, wait_until
from qxedge.testing.training import linear_model, model_dir, relabelled

pytestmark = pytest.mark.integration
ALARMS = "qx/v1/demo/alarms"


class Recorder:
    """An evaluation observer: per evaluation, the agent's counts and the model in force after it."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.rows: list[tuple[int, int, str, int]] = []

    def evaluated(self, evaluation: Evaluation) -> None:
        c = self.agent.counts
        self.rows.append(
            (c.evaluations, c.inferences, self.agent.models["anomaly"].sha256, self.agent.window.rows)
        )


@contextlib.asynccontextmanager
async def running(
    broker: EmbeddedBroker, tmp_path: Path, *, plant: bool = True, **env: str
) -> AsyncIterator[tuple[Agent, Recorder]]:
    """The demo agent (2 s windows every 0.1 s, deploy: on) and, with ``plant``, the simulated plant."""
    public = tmp_path / "keys" / "model-signing.pub.pem"
    if not public.exists():  # (a restart keeps the key)
        keygen(tmp_path / "keys")
    cfg = edge_config(
        broker.url,
        window__length_s="2",
        window__every_s="0.1",
        deploy__public_key=str(public),
        deploy__shadow__evaluations="10",
        **env,
    )
    assert cfg.simulator is not None
    agent = Agent(cfg)
    recorder = Recorder(agent)
    agent.observers.append(recorder)
    stop = asyncio.Event()
    sim = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    async with sim, asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        async with asyncio.timeout(10):
            await agent.ready.wait()
        simulation = tasks.create_task(sim.run()) if plant else None
        try:
            yield agent, recorder
        finally:
            stop.set()
            if simulation is not None:
                simulation.cancel()


async def _publish(
    broker: EmbeddedBroker,
    tmp_path: Path,
    data: bytes,
    *,
    window: WindowConfig,
    inputs: list[str],
    key: str = "keys",
) -> str:
    """``data`` as model ``anomaly`` of site demo, signed with the key in ``tmp_path / key``."""
    folder = model_dir(
        tmp_path / f"model-{hashlib.sha256(data).hexdigest()[:8]}", "anomaly", data, inputs, window
    )
    private = tmp_path / key / "model-signing.pem"
    summary = await publish_model(
        folder,
        private,
        "demo",
        "anomaly",
        BrokerConfig(url=broker.url),
        chunk_bytes=1024,
        progress=lambda _: None,
    )
    return str(summary["sha256"])


def _lifecycle(agent: Agent) -> dict[str, Any]:
    return dict(agent.stats().model_lifecycle["anomaly"])


async def test_a_good_model_is_shadowed_then_promoted_without_a_missed_evaluation(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with running(broker, tmp_path) as (agent, recorder):
        cfg = agent.config.models[0]
        old = agent.models["anomaly"].sha256
        assert await wait_until(lambda: agent.counts.inferences > 0)
        data = relabelled(cfg.path, "retrained")  # the same scores: it agrees everywhere
        sha = await _publish(broker, tmp_path, data, window=agent.config.window, inputs=cfg.inputs)
        assert await wait_until(lambda: _lifecycle(agent)["state"] == "shadow")
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == sha)
        promoted_at = len(recorder.rows)
        assert await wait_until(lambda: len(recorder.rows) > promoted_at + 10)
    life = _lifecycle(agent)
    assert life["state"] == "idle" and life["in_force_source"] == "deployed" and life["promoted"] == 1
    assert life["previous_sha256"] == old and life["refused"] == 0
    rows = recorder.rows
    # every evaluation was observed once, in order: none skipped across the swap ...
    assert [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + len(rows)))
    shas = [r[2] for r in rows]
    assert shas.count(old) + shas.count(sha) == len(shas) and shas.index(sha) > 0
    first = next(i for i, r in enumerate(rows) if r[1] > 0)
    # ... each one scored the four motors, with the old model, then (at once) with the new one ...
    scored = [b[1] - a[1] for a, b in zip(rows[first:], rows[first + 1 :], strict=False)]
    assert set(scored) == {4}
    # ... and the window kept its readings through it (it only grows to its steady size)
    swap = shas.index(sha)
    assert rows[swap][3] >= rows[swap - 1][3] * 0.9 > 0
    assert list((tmp_path / "state" / "qxedge" / "models-demo").glob("anomaly-*.onnx"))


async def test_a_model_signed_with_another_key_is_refused_and_alarmed(
    broker: EmbeddedBroker, tmp_path: Path, watch: Callable[..., Watcher]
) -> None:
    alarms = watch(ALARMS)
    keygen(tmp_path / "intruder")
    async with running(broker, tmp_path, plant=False) as (agent, _):
        cfg = agent.config.models[0]
        old = agent.models["anomaly"].sha256
        data = relabelled(cfg.path, "forged")
        await _publish(broker, tmp_path, data, key="intruder", window=agent.config.window, inputs=cfg.inputs)
        assert await asyncio.to_thread(alarms.wait_for, lambda ms: len(ms) > 0, 20)
    alarm = alarms.json_on(ALARMS)[0]
    assert alarm["kind"] == "model" and alarm["model"] == "anomaly"
    assert "signed with key" in alarm["reason"] and "trusts key" in alarm["reason"]
    assert agent.models["anomaly"].sha256 == old
    assert "signed with key" in (_lifecycle(agent)["last_refusal"] or "")


@pytest.mark.parametrize(
    ("n_listed", "n_model", "reason"),
    [
        (7, 7, "wrong feature count: it takes 7 features, model 'anomaly' takes 8"),
        (8, 7, "expects 7 features per row"),
    ],
    ids=["manifest", "onnx"],
)
async def test_a_model_with_the_wrong_feature_count_is_refused(
    broker: EmbeddedBroker,
    tmp_path: Path,
    watch: Callable[..., Watcher],
    n_listed: int,
    n_model: int,
    reason: str,
) -> None:
    alarms = watch(ALARMS)
    async with running(broker, tmp_path, plant=False) as (agent, _):
        cfg = agent.config.models[0]
        old = agent.models["anomaly"].sha256
        await _publish(
            broker, tmp_path, linear_model(n_model), window=agent.config.window, inputs=cfg.inputs[:n_listed]
        )
        assert await asyncio.to_thread(alarms.wait_for, lambda ms: len(ms) > 0, 20)
    assert reason in alarms.json_on(ALARMS)[0]["reason"]
    assert agent.models["anomaly"].sha256 == old and _lifecycle(agent)["refused"] == 1


async def test_a_failing_shadow_is_refused_and_the_model_in_force_runs_on(
    broker: EmbeddedBroker, tmp_path: Path, watch: Callable[..., Watcher]
) -> None:
    alarms = watch(ALARMS)
    async with running(broker, tmp_path) as (agent, _):
        cfg = agent.config.models[0]
        old = agent.models["anomaly"].sha256
        before = agent.counts.evaluations
        alarming = linear_model(8, weight=0.0, bias=100.0)  # above every threshold, always
        await _publish(broker, tmp_path, alarming, window=agent.config.window, inputs=cfg.inputs)
        assert await asyncio.to_thread(
            alarms.wait_for,
            lambda ms: any(m["kind"] == "model" for m in map(json.loads, (x.payload for x in ms))),
            30,
        )
        assert await wait_until(lambda: agent.counts.evaluations > before + 15)
    refusal = next(a for a in alarms.json_on(ALARMS) if a["kind"] == "model")
    assert "failed its shadow: agreement" in refusal["reason"]
    assert agent.models["anomaly"].sha256 == old and _lifecycle(agent)["state"] == "idle"


async def test_manual_promotion_waits_for_approve_and_rollback_puts_the_old_model_back(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    dc = BrokerConfig(url=broker.url)
    async with running(broker, tmp_path, deploy__promote="manual") as (agent, _):
        cfg = agent.config.models[0]
        old = agent.models["anomaly"].sha256
        sha = await _publish(
            broker, tmp_path, relabelled(cfg.path, "v2"), window=agent.config.window, inputs=cfg.inputs
        )
        assert await wait_until(lambda: _lifecycle(agent)["state"] == "awaiting_approval")
        assert agent.models["anomaly"].sha256 == old
        await send_command("demo", "anomaly", "approve", dc, sha[:12], by="test")
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == sha)
        await send_command("demo", "anomaly", "rollback", dc, by="test")
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == old)
        await send_command("demo", "anomaly", "rollback", dc, by="test")  # nothing left to roll back
        assert await wait_until(lambda: "no earlier model" in (_lifecycle(agent)["last_event"] or ""))
    life = _lifecycle(agent)
    assert life["promoted"] == 1 and life["rolled_back"] == 1 and life["in_force_source"] == "config"
    state = json.loads((tmp_path / "state" / "qxedge" / "models-demo" / "anomaly.json").read_text())
    assert sha in state["refused"] and state.get("in_force") is None


async def test_a_promoted_model_is_in_force_after_a_restart(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async with running(broker, tmp_path) as (agent, _):
        cfg = agent.config.models[0]
        sha = await _publish(
            broker, tmp_path, relabelled(cfg.path, "v3"), window=agent.config.window, inputs=cfg.inputs
        )
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == sha)
    (tmp_path / "keys" / "model-signing.pem").rename(tmp_path / "old.pem")
    (tmp_path / "keys" / "model-signing.pub.pem").rename(tmp_path / "old.pub.pem")
    async with running(broker, tmp_path, plant=False) as (again, _):
        # (the new key refuses the retained manifest of the old one: the restored model still runs)
        assert again.models["anomaly"].sha256 == sha
        assert _lifecycle(again)["in_force_source"] == "deployed"


def test_the_cli_makes_keys_publishes_retained_chunks_and_sends_commands(
    broker: EmbeddedBroker, tmp_path: Path, watch: Callable[..., Watcher], capsys: pytest.CaptureFixture[str]
) -> None:
    from qxedge.agent.cli import main
    from qxedge.agent.models.manifest import SignedManifest
    from qxedge.agent.models.signing import load_public_key, verify

    assert main(["models", "keygen", "--out", str(tmp_path / "keys")]) == 0
    assert main(["models", "keygen", "--out", str(tmp_path / "keys")]) == 1  # never overwritten
    data = linear_model(8)
    folder = model_dir(tmp_path / "m", "anomaly", data, [f"s{i}.mean" for i in range(8)], WindowConfig())
    where = ["--site", "demo", "--name", "anomaly", "--broker", broker.url]
    key = ["--key", str(tmp_path / "keys" / "model-signing.pem")]
    capsys.readouterr()
    assert main(["models", "publish", *key, *where, str(folder)]) == 0
    summary = json.loads(capsys.readouterr().out)
    late = watch("qx/v1/demo/models/#")  # retained: a subscriber that comes later gets it all
    count = summary["chunks"]
    assert late.wait_for(lambda ms: len(ms) >= count + 1, 20)
    topics = {m.topic: m.payload for m in late.messages}
    assert set(topics) == {
        "qx/v1/demo/models/anomaly",
        *(f"qx/v1/demo/models/anomaly/chunks/{i}" for i in range(count)),
    }
    signed = SignedManifest.parse(topics["qx/v1/demo/models/anomaly"], "t")
    manifest = verify(signed, load_public_key(tmp_path / "keys" / "model-signing.pub.pem"), "t")
    assert manifest.model.sha256 == summary["sha256"] and manifest.chunks is not None
    assert b"".join(topics[f"qx/v1/demo/models/anomaly/chunks/{i}"] for i in range(count)) == data
    assert main(["models", "approve", *where, "--by", "ops"]) == 0
    assert late.wait_for(lambda ms: any(m.topic.endswith("/command") for m in ms), 20)


async def test_a_rollback_to_an_earlier_deployed_model_survives_a_restart(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    dc = BrokerConfig(url=broker.url)
    async with running(broker, tmp_path) as (agent, _):
        cfg, window = agent.config.models[0], agent.config.window
        first = await _publish(broker, tmp_path, relabelled(cfg.path, "a"), window=window, inputs=cfg.inputs)
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == first)
        second = await _publish(broker, tmp_path, relabelled(cfg.path, "b"), window=window, inputs=cfg.inputs)
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == second)
        await send_command("demo", "anomaly", "rollback", dc, second[:8], by="test")
        assert await wait_until(lambda: agent.models["anomaly"].sha256 == first)
        assert _lifecycle(agent)["in_force_source"] == "deployed"
    async with running(broker, tmp_path, plant=False) as (again, _):
        # the retained manifest is the rolled-back one: it is not taken again
        assert again.models["anomaly"].sha256 == first
        assert await wait_until(lambda: again.counts.evaluations > 5)
        assert again.models["anomaly"].sha256 == first and _lifecycle(again)["received"] == 0
