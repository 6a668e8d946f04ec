"""The agent's side of model deployment: verify, assemble, shadow, promote or refuse, roll back.

One subscription, ``qx/v1/{site}/models/#``, brings for each configured model name ``N``:

- ``models/N``: the retained signed manifest. Verified against ``deploy.public_key`` and checked
  against the agent (its window, its features: count and names) before anything else; a failure is
  refused with the reason (audit row, alarm, log) and the model in force runs on;
- ``models/N/chunks/I``: the retained chunks. Once every chunk matches its sha256 and the whole file
  its own, the file is saved in the store and its ONNX Runtime session built, both off the event loop;
- ``models/N/command``: ``{"action": "approve" | "reject" | "rollback", "sha256": ...}``.

The new model then runs in shadow (:mod:`.shadow`) beside the model in force, on the same features,
for ``shadow.evaluations`` evaluations (and ``shadow.seconds``). Judged against the bounds, it is
refused, or promoted (``promote: auto``), or waits for ``approve`` (``promote: manual``). Promotion
replaces the model between two evaluations, on the loop: the feature window is not touched and no
evaluation is skipped. ``rollback`` puts back the model it replaced (held in memory) and marks the
rolled-back one so that its retained manifest is not taken again. The model in force and the refused
hashes are kept in ``{store}/{N}.json``, so a restart runs the promoted model.

Every step is an audit row of kind ``model`` (verdicts ``received``, ``shadow``, ``passed``,
``promoted``, ``refused``, ``rejected``, ``rolled_back``, ``restored``, ``command``) and is shown by
:meth:`ModelDeployer.stats`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qxedge.agent.audit import AuditLog
from qxedge.agent.config import ModelConfig, WindowConfig
from qxedge.agent.inference import OnnxModel
from qxedge.agent.models.chunks import assemble, missing
from qxedge.agent.models.config import DeployConfig
from qxedge.agent.models.manifest import Manifest, ModelRefused, SignedManifest
from qxedge.agent.models.shadow import Shadow
from qxedge.agent.models.signing import load_public_key, verify
from qxedge.connectors.mqtt import MqttClient, Subscription, site_topic
from qxedge.core.errors import ModelError

log = logging.getLogger(__name__)

MAX_CHUNKS = 65_536
COMMANDS = ("approve", "reject", "rollback")


class ModelHost(Protocol):
    """What the deployer needs of the agent: the models in force and a place for shadows."""

    def in_force(self, name: str) -> OnnxModel | None: ...

    def put_model(self, model: OnnxModel) -> None:
        """``model`` in force (under its name) from the next evaluation on."""
        ...

    def put_shadow(self, name: str, shadow: Shadow | None) -> None: ...

    def threshold(self, name: str) -> float:
        """The score threshold the rules act at for model ``name`` (agreement is counted there)."""
        ...


@dataclass(frozen=True, slots=True)
class ModelLifecycle:
    """One configured model's deployment state, as of one moment (``qxedge status``, /status)."""

    name: str
    state: str  # idle | receiving | shadow | awaiting_approval
    in_force_sha256: str
    in_force_source: str  # config | deployed
    candidate_sha256: str | None
    chunks_missing: int | None  # while receiving
    shadow: Mapping[str, Any] | None  # the comparison so far (evaluations, agreement, distributions...)
    shadow_needed: int
    previous_sha256: str | None  # what rollback puts back
    received: int
    promoted: int
    refused: int
    rolled_back: int
    last_event: str | None
    last_refusal: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Slot:
    """One configured model name."""

    config: ModelConfig
    deployed: Manifest | None = None  # the deployed model in force (None: the config's)
    manifest: Manifest | None = None  # the candidate being received
    chunks: dict[int, bytes] = field(default_factory=dict)
    deadline: asyncio.TimerHandle | None = None
    shadow: Shadow | None = None
    awaiting: bool = False  # passed its shadow, waiting for an operator's approve
    previous: OnnxModel | None = None
    previous_deployed: Manifest | None = None
    refused_shas: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(
        default_factory=lambda: {"received": 0, "promoted": 0, "refused": 0, "rolled_back": 0}
    )
    last_event: str | None = None
    last_refusal: str | None = None


class ModelDeployer:
    """Receives, verifies, shadows and promotes deployed models for ``host``; ``async with`` it, then
    ``await run()``; call :meth:`evaluated` after each evaluation (on the loop)."""

    def __init__(
        self,
        config: DeployConfig,
        site: str,
        window: WindowConfig,
        models: list[ModelConfig],
        host: ModelHost,
        audit: AuditLog,
        alarm: Callable[[str, str], None],
    ) -> None:
        self.config = config
        self.site = site
        self.window = window
        self.host = host
        self.audit = audit
        self.alarm = alarm  # (model name, reason): published on qx/v1/{site}/alarms
        self.key = load_public_key(config.public_key)
        self.store = config.resolved_store(site)
        self.slots = {m.name: _Slot(m) for m in models}
        self._prefix = site_topic(site, "models/")
        self._ignored: set[str] = set()

    # ----------------------------------------------------------------- lifecycle
    async def restore(self) -> None:
        """The promoted models of the last run back in force (before the first evaluation)."""
        for name, slot in self.slots.items():
            record = self._read_state(name)
            slot.refused_shas = set(record.get("refused", []))
            kept = record.get("in_force")
            if not isinstance(kept, dict):
                continue
            try:
                manifest = Manifest.parse(json.dumps(kept["manifest"]), f"{self._state_path(name)}")
                path = self.store / f"{name}-{manifest.model.sha256[:16]}.onnx"
                model = await asyncio.to_thread(self._load_file, slot, manifest, path)
            except (ModelError, KeyError, OSError) as exc:
                reason = (
                    f"the deployed model of the last run cannot be restored, the configured one runs: {exc}"
                )
                self._refused(slot, None, reason)
                continue
            self.host.put_model(model)
            slot.deployed = manifest
            self._event(slot, "restored", f"deployed model {manifest.model.sha256[:12]} restored", manifest)

    async def run(self, subscription: Subscription) -> None:
        async for batch in subscription:
            for topic, payload in batch:
                try:
                    await self.on_message(topic, payload)
                except Exception:  # one bad message never ends the loop
                    log.exception("could not handle a message on %s", topic)

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.deadline is not None:
                slot.deadline.cancel()

    async def subscribe(self, mqtt: MqttClient) -> Subscription:
        return await mqtt.subscribe(site_topic(self.site, "models/#"), qos=1, high_water=1024)

    # ----------------------------------------------------------------- messages
    async def on_message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self._prefix):
            return
        parts = topic[len(self._prefix) :].split("/")
        slot = self.slots.get(parts[0])
        if slot is None:
            if parts[0] not in self._ignored:
                self._ignored.add(parts[0])
                log.warning("%s: no configured model named %r: ignored", topic, parts[0])
            return
        if len(parts) == 1:
            await self._on_manifest(slot, topic, payload)
        elif len(parts) == 3 and parts[1] == "chunks":
            await self._on_chunk(slot, parts[2], payload)
        elif len(parts) == 2 and parts[1] == "command":
            self._on_command(slot, topic, payload)

    async def _on_manifest(self, slot: _Slot, topic: str, payload: bytes) -> None:
        if not payload:  # a retained manifest cleared
            return
        try:
            manifest = verify(SignedManifest.parse(payload, topic), self.key, topic)
            self._check(slot, manifest, topic)
        except ModelRefused as exc:
            self._refused(slot, None, str(exc))
            return
        sha = manifest.model.sha256
        in_force = self.host.in_force(slot.config.name)
        if in_force is not None and in_force.sha256 == sha:
            log.info("%s: model %s is already in force", topic, sha[:12])
            return
        if sha in slot.refused_shas:
            log.info("%s: model %s was refused, rejected or rolled back before: ignored", topic, sha[:12])
            return
        current = slot.manifest or (slot.shadow.manifest if slot.shadow is not None else None)
        if current is not None:
            if current.model.sha256 == sha:
                return  # (the same manifest again)
            self._drop(slot, f"superseded by {sha[:12]}", "superseded")
        slot.manifest = manifest
        slot.counts["received"] += 1
        self._event(slot, "received", f"manifest of {sha[:12]} verified (key {self.key_id})", manifest)
        loop = asyncio.get_running_loop()
        slot.deadline = loop.call_later(self.config.chunk_timeout_s, self._chunks_late, slot, sha)
        await self._try_assemble(slot)

    @property
    def key_id(self) -> str:
        from qxedge.agent.models.signing import key_id

        return key_id(self.key)

    def _check(self, slot: _Slot, m: Manifest, topic: str) -> None:
        """ModelRefused when the model cannot run here: its name, size, window, features."""
        name, cfg, w = slot.config.name, slot.config, self.window
        if m.name != name:
            raise ModelRefused(f"{topic}: the manifest is for model {m.name!r}, not {name!r}")
        if m.model.bytes > self.config.max_model_bytes:
            raise ModelRefused(f"{topic}: {m.model.bytes} bytes is over deploy.max_model_bytes")
        if m.chunks is None or m.chunks.count > MAX_CHUNKS:
            raise ModelRefused(f"{topic}: the manifest lists no chunks (or too many)")
        trained = (m.window.length_s, m.window.every_s, m.window.min_samples, m.window.min_coverage)
        here = (w.length_s, w.every_s, w.min_samples, w.min_coverage)
        if trained != here:
            raise ModelRefused(
                f"{topic}: trained on windows of length_s/every_s/min_samples/min_coverage {trained}, "
                f"the agent's are {here}: its features would not be the ones it learned"
            )
        absent = sorted({f.rpartition(".")[2] for f in m.inputs} - set(w.stats))
        if absent:
            raise ModelRefused(f"{topic}: its inputs need stats {absent} the agent's window does not compute")
        if self.config.same_inputs and m.inputs != cfg.inputs:
            if len(m.inputs) != len(cfg.inputs):
                raise ModelRefused(
                    f"{topic}: wrong feature count: it takes {len(m.inputs)} features, model {name!r} "
                    f"takes {len(cfg.inputs)} ({', '.join(cfg.inputs)})"
                )
            raise ModelRefused(f"{topic}: its features {m.inputs} are not model {name!r}'s {cfg.inputs}")

    async def _on_chunk(self, slot: _Slot, index: str, payload: bytes) -> None:
        if not index.isdigit() or int(index) >= MAX_CHUNKS or len(payload) > self.config.max_model_bytes:
            return
        if payload:
            slot.chunks[int(index)] = payload
        else:
            slot.chunks.pop(int(index), None)
        if slot.manifest is not None:
            await self._try_assemble(slot)

    async def _try_assemble(self, slot: _Slot) -> None:
        manifest = slot.manifest
        if manifest is None or manifest.chunks is None:
            return
        data = assemble(slot.chunks, manifest.chunks, manifest.model)
        if data is None:
            return
        slot.manifest = None
        if slot.deadline is not None:
            slot.deadline.cancel()
            slot.deadline = None
        try:
            model = await asyncio.to_thread(self._save_and_load, slot, manifest, data)
        except ModelError as exc:
            self._refused(slot, manifest, f"model {manifest.model.sha256[:12]}: {exc}")
            return
        if slot.manifest is not None:  # superseded while it loaded
            return
        shadow = Shadow(model, manifest, self.host.threshold(slot.config.name), time.monotonic())
        slot.shadow = shadow
        self.host.put_shadow(slot.config.name, shadow)
        needed = self.config.shadow
        self._event(
            slot,
            "shadow",
            f"{manifest.model.sha256[:12]} in shadow on {model.provider} for {needed.evaluations} "
            f"evaluations" + (f" and {needed.seconds:g} s" if needed.seconds else ""),
            manifest,
        )

    def _chunks_late(self, slot: _Slot, sha: str) -> None:
        slot.deadline = None
        m = slot.manifest
        if m is None or m.model.sha256 != sha or m.chunks is None:
            return
        slot.manifest = None
        gap = missing(slot.chunks, m.chunks)
        self._refused(
            slot, m, f"{gap} of its {m.chunks.count} chunks missing after {self.config.chunk_timeout_s:g} s"
        )

    # ----------------------------------------------------------------- off the loop
    def _save_and_load(self, slot: _Slot, manifest: Manifest, data: bytes) -> OnnxModel:
        self.store.mkdir(parents=True, exist_ok=True)
        path = self.store / f"{slot.config.name}-{manifest.model.sha256[:16]}.onnx"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return self._load_file(slot, manifest, path)

    def _load_file(self, slot: _Slot, manifest: Manifest, path: Path) -> OnnxModel:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.model.sha256:
            raise ModelError(f"{path}: not the file the manifest describes (sha256)")
        config = slot.config.model_copy(
            update={"path": path, "inputs": list(manifest.inputs), "output": manifest.output}
        )
        return OnnxModel(config)  # ModelError: cannot load, wrong feature count, no such output

    # ----------------------------------------------------------------- the shadow's verdict
    def evaluated(self) -> None:
        """After each evaluation, on the loop: judge the shadows whose period is over."""
        for slot in self.slots.values():
            shadow = slot.shadow
            if shadow is None:
                continue
            if shadow.failed is not None:
                self._refuse_shadow(slot, shadow, shadow.failed)
                continue
            if slot.awaiting:
                continue
            bounds = self.config.shadow
            if shadow.comparison.evaluations < bounds.evaluations:
                continue
            if time.monotonic() - shadow.started_at < bounds.seconds:
                continue
            failure = shadow.comparison.failure(bounds)
            if failure is not None:
                self._refuse_shadow(slot, shadow, f"failed its shadow: {failure}")
            elif self.config.promote == "auto":
                self._promote(slot, shadow, "passed its shadow (promote: auto)")
            else:
                slot.awaiting = True
                self._event(
                    slot,
                    "passed",
                    f"{shadow.sha256[:12]} passed its shadow: waiting for approve on "
                    f"{site_topic(self.site, f'models/{slot.config.name}/command')}",
                    shadow.manifest,
                    comparison=shadow.comparison.summary(),
                )

    def _promote(self, slot: _Slot, shadow: Shadow, why: str) -> None:
        name = slot.config.name
        slot.previous, slot.previous_deployed = self.host.in_force(name), slot.deployed
        self.host.put_shadow(name, None)
        self.host.put_model(shadow.model)  # (the next evaluation scores with it: nothing skipped)
        slot.shadow, slot.awaiting, slot.deployed = None, False, shadow.manifest
        slot.counts["promoted"] += 1
        self._save_state(slot)
        self._event(
            slot,
            "promoted",
            f"{shadow.sha256[:12]} in force: {why}",
            shadow.manifest,
            comparison=shadow.comparison.summary(),
        )

    def _refuse_shadow(self, slot: _Slot, shadow: Shadow, reason: str) -> None:
        self.host.put_shadow(slot.config.name, None)
        slot.shadow, slot.awaiting = None, False
        self._refused(
            slot, shadow.manifest, f"model {shadow.sha256[:12]} {reason}", shadow.comparison.summary()
        )

    def _drop(self, slot: _Slot, why: str, verdict: str) -> None:
        """The candidate (receiving, in shadow or awaiting approval) dropped."""
        manifest = slot.manifest or (slot.shadow.manifest if slot.shadow is not None else None)
        if slot.deadline is not None:
            slot.deadline.cancel()
            slot.deadline = None
        if slot.shadow is not None:
            self.host.put_shadow(slot.config.name, None)
        slot.manifest, slot.shadow, slot.awaiting = None, None, False
        if manifest is not None:
            self._event(slot, verdict, f"{manifest.model.sha256[:12]} dropped: {why}", manifest)

    # ----------------------------------------------------------------- operator commands
    def _on_command(self, slot: _Slot, topic: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            action = doc["action"] if isinstance(doc, dict) else None
            sha = doc.get("sha256") if isinstance(doc, dict) else None
            by = str(doc.get("by") or "operator") if isinstance(doc, dict) else "operator"
        except (ValueError, UnicodeDecodeError):
            action, sha, by = None, None, "operator"
        if action not in COMMANDS or (sha is not None and not isinstance(sha, str)):
            self._command_refused(slot, f'{topic}: not a command (expected {{"action": one of {COMMANDS}}})')
            return
        name = slot.config.name
        candidate = slot.shadow.manifest if slot.shadow is not None else slot.manifest
        if action == "approve":
            shadow = slot.shadow
            if shadow is None or not slot.awaiting:
                state = "in shadow, not judged yet" if shadow is not None else "no model waits for approval"
                self._command_refused(slot, f"approve {name}: {state}")
            elif sha is not None and not shadow.sha256.startswith(sha):
                self._command_refused(
                    slot, f"approve {name}: {sha[:12]} is not the waiting {shadow.sha256[:12]}"
                )
            else:
                self._promote(slot, shadow, f"approved by {by}")
        elif action == "reject":
            if candidate is None:
                self._command_refused(slot, f"reject {name}: no model in shadow or waiting")
            elif sha is not None and not candidate.model.sha256.startswith(sha):
                self._command_refused(slot, f"reject {name}: {sha[:12]} is not the candidate")
            else:
                slot.refused_shas.add(candidate.model.sha256)
                self._save_state(slot)
                self._drop(slot, f"rejected by {by}", "rejected")
        else:
            self._rollback(slot, sha, by)

    def _rollback(self, slot: _Slot, sha: str | None, by: str) -> None:
        name = slot.config.name
        current, previous = self.host.in_force(name), slot.previous
        if previous is None or current is None:
            self._command_refused(slot, f"rollback {name}: no earlier model to put back (in this run)")
            return
        if sha is not None and not current.sha256.startswith(sha):
            self._command_refused(slot, f"rollback {name}: {sha[:12]} is not the model in force")
            return
        self.host.put_model(previous)
        slot.refused_shas.add(current.sha256)
        slot.deployed, slot.previous, slot.previous_deployed = slot.previous_deployed, None, None
        slot.counts["rolled_back"] += 1
        self._save_state(slot)
        self._event(
            slot, "rolled_back", f"{current.sha256[:12]} rolled back by {by}: {previous.sha256[:12]} in force"
        )

    def _command_refused(self, slot: _Slot, reason: str) -> None:
        slot.last_event = reason
        self.audit.record("model", "command", source=f"model:{slot.config.name}", reason=f"refused: {reason}")
        log.warning("model command refused: %s", reason)

    # ----------------------------------------------------------------- reload
    def reconfigured(self, models: list[ModelConfig], changed: set[str]) -> None:
        """The models section was reloaded: ``changed`` names got a new config (their candidates go)."""
        new = {m.name: m for m in models}
        for name in list(self.slots):
            if name not in new:
                self._drop(self.slots.pop(name), "the model left the config", "superseded")
        for name, cfg in new.items():
            slot = self.slots.get(name)
            if slot is None:
                self.slots[name] = _Slot(cfg)
            elif name in changed:
                self._drop(slot, "the model's config was reloaded", "superseded")
                slot.config, slot.deployed, slot.previous, slot.previous_deployed = cfg, None, None, None
                self._save_state(slot)

    # ----------------------------------------------------------------- records
    def _event(
        self, slot: _Slot, verdict: str, reason: str, manifest: Manifest | None = None, **extra: Any
    ) -> None:
        slot.last_event = f"{verdict}: {reason}"
        provenance: dict[str, Any] = dict(extra)
        if manifest is not None:
            provenance.update(
                sha256=manifest.model.sha256, bytes=manifest.model.bytes, inputs=manifest.n_inputs
            )
            if manifest.training is not None:
                provenance["training"] = {"since": manifest.training.since, "until": manifest.training.until}
        self.audit.record(
            "model",
            verdict,
            source=f"model:{slot.config.name}",
            reason=reason,
            provenance=_finite(provenance),
        )
        log.info("model %s: %s: %s", slot.config.name, verdict, reason)

    def _refused(
        self, slot: _Slot, manifest: Manifest | None, reason: str, comparison: Mapping[str, Any] | None = None
    ) -> None:
        slot.counts["refused"] += 1
        slot.last_refusal = reason
        if manifest is not None:
            slot.refused_shas.add(manifest.model.sha256)
            self._save_state(slot)
        extra = {} if comparison is None else {"comparison": comparison}
        self._event(slot, "refused", reason, manifest, **extra)
        self.alarm(slot.config.name, reason)

    def _state_path(self, name: str) -> Path:
        return self.store / f"{name}.json"

    def _read_state(self, name: str) -> dict[str, Any]:
        path = self._state_path(name)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("model state %s unreadable (%s): starting from the config's models", path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save_state(self, slot: _Slot) -> None:
        """``{store}/{name}.json``: the deployed model in force (null: the config's), the refused hashes."""
        path = self._state_path(slot.config.name)
        in_force = (
            None if slot.deployed is None else {"manifest": json.loads(slot.deployed.model_dump_json())}
        )
        doc = {"in_force": in_force, "refused": sorted(slot.refused_shas)}
        try:
            self.store.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.error("model state %s not saved (%s): a restart may run another model", path, exc)

    # ----------------------------------------------------------------- snapshot
    def stats(self) -> dict[str, ModelLifecycle]:
        out = {}
        for name, slot in self.slots.items():
            in_force = self.host.in_force(name)
            shadow = slot.shadow
            receiving = slot.manifest
            state = (
                "awaiting_approval"
                if slot.awaiting
                else "shadow"
                if shadow is not None
                else "receiving"
                if receiving is not None
                else "idle"
            )
            candidate = shadow.sha256 if shadow is not None else receiving.model.sha256 if receiving else None
            out[name] = ModelLifecycle(
                name=name,
                state=state,
                in_force_sha256=in_force.sha256 if in_force is not None else "",
                in_force_source="config" if slot.deployed is None else "deployed",
                candidate_sha256=candidate,
                chunks_missing=(
                    missing(slot.chunks, receiving.chunks)
                    if receiving is not None and receiving.chunks is not None
                    else None
                ),
                shadow=_finite(shadow.comparison.summary()) if shadow is not None else None,
                shadow_needed=self.config.shadow.evaluations,
                previous_sha256=slot.previous.sha256 if slot.previous is not None else None,
                received=slot.counts["received"],
                promoted=slot.counts["promoted"],
                refused=slot.counts["refused"],
                rolled_back=slot.counts["rolled_back"],
                last_event=slot.last_event,
                last_refusal=slot.last_refusal,
            )
        return out


def _finite(doc: Any) -> Any:
    """``doc`` with NaN and infinities as None (JSON for the audit log and /status)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, Mapping):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_finite(v) for v in doc]
    return doc
