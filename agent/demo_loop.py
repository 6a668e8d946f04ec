"""``qxedge demo --loop``: the learning loop end to end, in one process, in about a minute.

1. the simulated plant and the agent run with history on (a batch every second) and a ``deploy:``
   section whose key pair the demo makes; an in-process historian (:mod:`qxedge.hybrid.historian`)
   writes the batches to Parquet and confirms them, as ``qxedge historian`` does;
2. after ``history_s`` seconds the "data center" trains the anomaly model from that Parquet with
   ``qxedge train``'s own code (:func:`~qxedge.agent.models.training.request_for` and ``train``: the
   agent's feature window, calibrated on held-back windows), in a worker thread while the agent runs on;
3. the model is signed and published, retained and in chunks, as ``qxedge models publish`` does;
4. the agent verifies it, runs it in shadow beside the model in force, and promotes it (``promote:
   auto``) once it stays within the shadow bounds; the demo runs a few seconds more under it.

The summary gives each step's figures: readings up (batches, bytes per reading, Parquet rows), the
training (windows, calibration), the model (sha256, chunks, key), the shadow (evaluations, agreement
at the rule threshold, median shift, latency) and when the promotion came.

The loop's settings differ from the plain demo's: evaluations every 0.2 s (the window's length is
kept, so the features are the ones the shipped model learned) to get enough feature windows in
``history_s``; no injected faults (the history is normal operation, what the model must learn); no
production day and no offload. It runs isolated like the plain demo (``qxedge demo``): a private
broker and a temporary state folder.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qxedge.agent.config import EdgeConfig
from qxedge.agent.models.config import DeployConfig, ShadowConfig
from qxedge.agent.models.publish import publish_model
from qxedge.agent.models.shadow import Shadow
from qxedge.agent.models.signing import keygen
from qxedge.agent.models.training import request_for, train, training_tools
from qxedge.agent.pipeline import Agent
from qxedge.connectors.plant import Evaluation
from qxedge.connectors.simulator import SimulatedPlant
from qxedge.core.errors import ConfigError, ModelError, Problem
from qxedge.hybrid.historian import Historian, HistorianConfig

EVERY_S = 0.2  # evaluations (and so feature windows) five times a second
HOLDOUT = 0.3  # the latest 30 % of the windows held back to calibrate
HISTORY_EVERY_S = 1.0  # a history batch every second
SHADOW_EVALUATIONS = 20
PROMOTION_TIMEOUT_S = 60.0
AFTER_S = 3.0  # the demo runs on this long under the promoted model


def loop_config(cfg: EdgeConfig, public_key: Path) -> EdgeConfig:
    """``cfg`` for the loop: history on, evaluations every 0.2 s, no faults, no production day, no
    offload, and a ``deploy:`` section that trusts ``public_key`` and promotes automatically."""
    if cfg.simulator is None:
        raise ConfigError([Problem("simulator", "the demo needs a `simulator:` section")])
    if not cfg.models:
        raise ConfigError([Problem("models", "the learning loop retrains a model: the config has none")])
    history = cfg.history.model_copy(
        update={"enabled": True, "every_s": HISTORY_EVERY_S, "include": ["*"], "exclude": []}
    )
    deploy = DeployConfig(
        public_key=public_key, promote="auto", shadow=ShadowConfig(evaluations=SHADOW_EVALUATIONS)
    )
    return cfg.model_copy(
        update={
            "simulator": cfg.simulator.model_copy(update={"faults": []}),
            "window": cfg.window.model_copy(update={"every_s": EVERY_S, "trigger": "interval"}),
            "history": history,
            "deploy": deploy,
            "planning": None,
            "offload": None,
            "uplink": None,  # the demo's data center is on the demo's broker
        }
    )


@dataclass(slots=True)
class _Watch:
    """An evaluation observer: the shadow of model ``model`` while there is one, and when the model in
    force changed (evaluation number, seconds since ``started``)."""

    agent: Agent
    model: str
    started: float
    name: str = "loop-watch"
    shadow: Shadow | None = None
    first_sha: str = ""
    promoted_at_s: float | None = None
    promoted_at_evaluation: int | None = None
    evaluations: list[int] = field(default_factory=list)  # the evaluation count at each evaluation

    def evaluated(self, evaluation: Evaluation) -> None:
        self.evaluations.append(self.agent.counts.evaluations)
        deployer = self.agent.deployer
        if deployer is not None and (shadow := deployer.slots[self.model].shadow) is not None:
            self.shadow = shadow
        sha = self.agent.models[self.model].sha256
        if not self.first_sha:
            self.first_sha = sha
        elif sha != self.first_sha and self.promoted_at_s is None:
            self.promoted_at_s = time.monotonic() - self.started
            self.promoted_at_evaluation = self.agent.counts.evaluations


def _progress_line(t: float, agent: Agent, historian: Historian) -> str:
    h = agent.history.stats if agent.history is not None else {}
    hs = historian.stats()
    return (
        f"t={t:5.1f}s  readings {agent.counts.readings:>7,}  history up {h.get('readings', 0):>7,} "
        f"in {h.get('batches', 0)} batches  Parquet rows {hs.rows:>7,}  "
        f"model {agent.models[next(iter(agent.models))].sha256[:12]}"
    )


async def run_loop(
    cfg: EdgeConfig,
    work: Path,
    history_s: float = 25.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The loop on ``cfg`` (pointed at the demo's broker), its files under ``work``; the summary."""
    training_tools()  # before anything starts: how to install them, when they are missing
    say = progress or (lambda _line: None)
    private, public = keygen(work / "keys")
    cfg = loop_config(cfg, public)
    assert cfg.simulator is not None
    name = cfg.models[0].name
    root = work / "history"
    historian = Historian(HistorianConfig(historian_id="demo-dc", broker=cfg.broker, root=root, flush_s=0.5))
    agent = Agent(cfg)
    started = time.monotonic()
    watch = _Watch(agent, name, started)
    agent.observers.append(watch)
    plant = SimulatedPlant(cfg.simulator, cfg.broker, cfg.site)
    stop_agent, stop_historian = asyncio.Event(), asyncio.Event()
    steps: dict[str, Any] = {}

    def at() -> float:
        return round(time.monotonic() - started, 2)

    async with plant, asyncio.TaskGroup() as tasks:
        tasks.create_task(historian.run(stop_historian), name="historian")
        await historian.ready.wait()
        tasks.create_task(agent.run(stop_agent), name="agent")
        await agent.ready.wait()
        simulation = tasks.create_task(plant.run(), name="simulator")
        since = time.time()
        old_sha = agent.models[name].sha256
        say(f"1. history up: the agent sends every reading to the historian for {history_s:g} s")
        while (left := history_s - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(5.0, left))
            say(_progress_line(time.monotonic() - started, agent, historian))
        until = time.time()
        assert agent.history is not None
        cut = agent.history.stats["readings"]  # in the outbox by now: the historian must have them
        for _ in range(300):  # 30 s at most
            if historian.stats().rows >= cut:
                break
            await asyncio.sleep(0.1)
        hs = historian.stats()
        steps["history"] = {
            "at_s": at(),
            "readings": agent.counts.readings,
            "sent": agent.history.stats["readings"],
            "batches": agent.history.stats["batches"],
            "bytes": agent.history.stats["bytes"],
            "bytes_per_reading": round(
                agent.history.stats["bytes"] / max(1, agent.history.stats["readings"]), 2
            ),
            "parquet_rows": hs.rows,
            "parquet_files": hs.files,
            "historian_batches": hs.batches,
            "root": str(root),
        }

        say("2. the data center trains the model from the Parquet (qxedge train's code)")
        request = request_for(
            cfg,
            name,
            site=cfg.site,
            since=since,
            until=until,
            history=root,
            out=work / "model",
            holdout=HOLDOUT,
        )
        took = time.monotonic()
        manifest = await asyncio.to_thread(train, request, say)
        training = manifest.training
        assert training is not None
        steps["training"] = {
            "at_s": at(),
            "seconds": round(time.monotonic() - took, 2),
            "readings": training.readings,
            "windows": training.windows,
            "train_windows": training.train_windows,
            "calibration_windows": training.calibration_windows,
            "calibration_above_1": manifest.metrics.get("calibration_above_1"),
        }

        say("3. the data center signs and publishes it, retained, in chunks")
        published = await publish_model(work / "model", private, cfg.site, name, cfg.broker, progress=say)
        new_sha = str(published["sha256"])
        steps["model"] = {"at_s": at(), **published, "previous_sha256": old_sha}

        say(f"4. the agent verifies it, runs it in shadow for {SHADOW_EVALUATIONS} evaluations, promotes it")
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        refused: str | None = None
        while time.monotonic() < deadline:
            lifecycle = agent.stats().model_lifecycle.get(name, {})
            if agent.models[name].sha256 == new_sha:
                break
            if lifecycle.get("refused"):
                refused = str(lifecycle.get("last_refusal"))
                break
            await asyncio.sleep(0.1)
        promoted = agent.models[name].sha256 == new_sha
        if promoted:
            inferences = agent.counts.inferences
            await asyncio.sleep(AFTER_S)
            after = agent.counts.inferences - inferences
        else:
            after = 0
        simulation.cancel()
        stop_agent.set()
        stop_historian.set()
    shadow = watch.shadow.comparison.summary() if watch.shadow is not None else {}
    counts = watch.evaluations
    steps["shadow"] = {
        "evaluations": shadow.get("evaluations"),
        "pairs": shadow.get("pairs"),
        "agreement": shadow.get("agreement"),
        "median_shift": shadow.get("median_shift"),
        "latency_us": shadow.get("latency_us"),
        "threshold": shadow.get("threshold"),
    }
    steps["promotion"] = {
        "promoted": promoted,
        "refused": refused,
        "at_s": watch.promoted_at_s and round(watch.promoted_at_s, 2),
        "at_evaluation": watch.promoted_at_evaluation,
        "in_force_sha256": agent.models[name].sha256,
        "inferences_after": after,
        # every evaluation was observed once, in order: none skipped across the swap
        "evaluations_skipped": sum(b - a - 1 for a, b in itertools.pairwise(counts)),
    }
    if not promoted and refused is None:
        refused = f"not promoted within {PROMOTION_TIMEOUT_S:g} s"
        steps["promotion"]["refused"] = refused
    return {
        "site": cfg.site,
        "broker": cfg.broker.url,
        "model_name": name,
        "duration_s": round(time.monotonic() - started, 2),
        **steps,
    }


def format_loop(summary: dict[str, Any]) -> str:
    h, t, m = summary["history"], summary["training"], summary["model"]
    s, p = summary["shadow"], summary["promotion"]
    lines = [
        f"qxedge demo --loop: site {summary['site']} on {summary['broker']} in {summary['duration_s']} s",
        f"  1. history up     {h['sent']:,} readings in {h['batches']} batches, {h['bytes_per_reading']} "
        f"bytes/reading; the historian wrote {h['parquet_rows']:,} Parquet rows in {h['parquet_files']} "
        f"files (t={h['at_s']} s)",
        f"  2. trained        {t['windows']} feature windows of {t['readings']:,} readings: "
        f"{t['train_windows']} to train, {t['calibration_windows']} held back to calibrate "
        f"(score > 1 on {t['calibration_above_1']:.1%}); {t['seconds']} s (t={t['at_s']} s)",
        f"  3. published      {summary['model_name']} sha256 {m['sha256'][:12]} ({m['bytes']:,} bytes, "
        f"{m['chunks']} chunks), signed by key {m['key_id']} (t={m['at_s']} s)",
    ]
    if s["evaluations"] is not None:
        lat = s["latency_us"]
        lines.append(
            f"  4. shadow         {s['evaluations']} evaluations, {s['pairs']} scores: agreement "
            f"{s['agreement']:.1%} at the rule threshold {s['threshold']:g}, median shift "
            f"{s['median_shift']:+.3f} x threshold, {lat['shadow']:.0f} µs vs {lat['in_force']:.0f} µs a run"
        )
    if p["promoted"]:
        lines.append(
            f"  5. promoted       at t={p['at_s']} s (evaluation {p['at_evaluation']}): "
            f"{m['previous_sha256'][:12]} -> {p['in_force_sha256'][:12]}; {p['inferences_after']} "
            f"inferences under it in {AFTER_S:g} s, {p['evaluations_skipped']} evaluations skipped"
        )
    else:
        lines.append(f"  5. NOT promoted:  {p['refused']}")
    return "\n".join(lines)


def loop_failed(summary: dict[str, Any]) -> ModelError | None:
    """The error to exit with when the loop did not end with the new model in force."""
    p = summary["promotion"]
    return None if p["promoted"] else ModelError(f"the retrained model was not promoted: {p['refused']}")
