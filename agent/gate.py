"""The setpoint gate: the only way to the plant. Every proposal goes through the safety envelope, is
audited with its verdict and provenance, and only then (unless dry run or refused) is written.

Inputs it takes besides the agent's own rules:

- ``qx/v1/{site}/proposals/{asset}``: setpoint proposals from outside (an operator screen, an MES,
  the data center): ``{"value": 0.8, "data_ts": <epoch s of the newest input>, "source": "mes"}``
  (``ts`` stands in for ``data_ts``; one of them is required). With a ``job_id`` the proposal derives
  from a solver result: the job must be one this agent sent, and its deadline is the job's own;
- ``qx/v1/{site}/lock/{asset}`` (retained): any payload locks the asset at its current value (the
  payload says who and why); an empty payload, ``unlocked``, ``0``, ``false`` or ``{"locked": false}``
  unlocks it;
- results the offload client refused (forged, unknown, malformed, late): audited, never written.

Read-backs are checked at every evaluation; a mismatch or a missing echo raises an alarm on
``qx/v1/{site}/alarms`` and in the audit log.

A proposal whose allowed value is the one this gate last wrote to every way to the plant (within the
envelope's read-back tolerance) is a no-op: not written again. No-ops and refusals are tallied by the
audit log (a row for the first of a kind in its summary interval, then one row with the count of the
rest) and logged once per interval: a flood of them costs neither writes nor a row each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from qxedge.agent.audit import AuditLog
from qxedge.agent.decisions import Setpoint
from qxedge.agent.safety import Latest, Proposal, Safety, Verdict
from qxedge.connectors.mqtt import MqttClient
from qxedge.connectors.plant import SetpointSink
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)
_UNLOCK = {"", "unlocked", "unlock", "0", "false", "off", "no"}
PROVENANCE_KEYS = (
    "source",
    "by",
    "job_id",
    "solver",
    "energy",
    "model",
    "model_sha256",
    "provider",
    "window",
    "rule",
)


class SetpointGate:
    def __init__(
        self,
        safety: Safety,
        audit: AuditLog,
        mqtt: MqttClient,
        site: str,
        job_deadline: Callable[[str], float | None] = lambda _job_id: None,
        sinks: Sequence[SetpointSink] = (),
        write_timeout_s: float = 5.0,
        locks_unknown: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.locks_unknown = locks_unknown  # why operator locks may be missed right now, None when known
        self.sinks = sinks  # plant connectors that write setpoints (OPC UA, Modbus, ...)
        self.write_timeout_s = write_timeout_s
        self.current: dict[str, float] = {}  # the last value written per asset
        self._settled: dict[str, float] = {}  # the last value written by every way: proposing it is a no-op
        self._changed: set[str] = set()  # assets whose current value changed since take_changed()
        self.safety = safety
        self.job_deadline = job_deadline  # the deadline of a job this agent sent, None if it sent none
        self.audit = audit
        self.mqtt = mqtt
        self.site = site
        self.verdicts: Counter[str] = Counter()
        self.written: list[Setpoint] = []

    def topic(self, suffix: str) -> str:
        return f"qx/v1/{self.site}/{suffix}"

    async def propose(self, p: Proposal, now: float | None = None) -> Verdict:
        """Evaluate, audit (on disk before anything is written), then write if allowed."""
        now = time.time() if now is None else now
        if p.source != "ramp":
            self.safety.drop_ramp(p.asset)
        unknown = self.locks_unknown()
        # fail safe: while the lock channel is down, an operator's lock could be missed: nothing is written
        verdict = Verdict("refused", None, unknown, "lock") if unknown else self.safety.evaluate(p, now)
        self.verdicts[verdict.status] += 1
        if verdict.status == "refused" or self._unchanged(p.asset, verdict):
            return self._not_written(p, verdict, now)
        try:
            await self.audit.write(
                "proposal",
                verdict.status,
                asset=p.asset,
                source=p.source,
                proposed=p.value,
                value=verdict.value,
                reason=verdict.reason,
                limit=verdict.limit,
                dry_run=verdict.dry_run,
                provenance={**p.provenance, "data_ts": p.data_ts, "deadline_at": p.deadline_at},
                ts=now,
            )
        except Exception:  # no audit row, no write
            log.exception("the audit log failed: %s = %s is not written", p.asset, verdict.value)
            self.verdicts["unaudited"] += 1
            return Verdict("refused", None, "the audit log could not record the verdict", "audit")
        if not verdict.write:
            log.info("dry run: %s would be set to %s (%s)", p.asset, verdict.value, verdict.reason)
            return verdict
        assert verdict.value is not None
        setpoint = Setpoint(
            p.asset,
            verdict.value,
            now,
            {
                **p.provenance,
                "source": p.source,
                "proposed": p.value,
                "verdict": verdict.status,
                "limit": verdict.limit,
            },
        )
        # every way to the plant is tried: the setpoint topic on the plant broker, then each connector
        # that maps the asset; a setpoint is never held for later (it would be stale by then)
        sent = self.mqtt.publish(self.topic(f"setpoints/{p.asset}"), setpoint.payload(), qos=1)
        if not sent:
            self.audit.record(
                "write",
                "unsent",
                asset=p.asset,
                value=verdict.value,
                reason="plant broker unreachable",
                ts=now,
            )
        written, failed = await self._write_to_plant(p.asset, verdict.value, now)
        if not (sent or written):
            self.verdicts["unsent"] += 1
            log.warning("setpoint %s = %s reached no way to the plant", p.asset, verdict.value)
            return Verdict("refused", None, "no way to the plant was reachable", "link")
        self.safety.committed(p, verdict, now)  # commanded on at least one way: limits count from now
        self.current[p.asset] = verdict.value
        self._changed.add(p.asset)
        self.written.append(setpoint)
        del self.written[:-100]
        self._settled.pop(p.asset, None)
        if failed:  # written somewhere, not everywhere: the caller must not count it as done
            self.verdicts["partial"] += 1
            return Verdict("refused", verdict.value, f"not written by {', '.join(failed)}", "link")
        self.verdicts["written"] += 1
        self._settled[p.asset] = verdict.value
        # every setpoint is in the audit log; at a hundred a second a log line each would cost more than
        # the publish (measured with py-spy in bench/latency.py)
        log.debug("setpoint %s = %s (%s; %s)", p.asset, verdict.value, verdict.status, verdict.reason)
        return verdict

    def _unchanged(self, asset: str, verdict: Verdict) -> bool:
        """The value allowed is the one in force (written by every way): writing it changes nothing."""
        settled = self._settled.get(asset)
        if not verdict.write or settled is None or verdict.value is None:
            return False
        env = self.safety.envelope(asset)
        tolerance = env.readback.tolerance if env is not None and env.readback is not None else 0.0
        return abs(verdict.value - settled) <= max(tolerance, 1e-9 * abs(settled))

    def _not_written(self, p: Proposal, verdict: Verdict, now: float) -> Verdict:
        """A refusal or a no-op: tallied in the audit log, logged once per summary interval."""
        unchanged = verdict.status != "refused"
        if unchanged:
            self.verdicts["unchanged"] += 1
            verdict = replace(verdict, reason=f"unchanged: {verdict.value:g} is in force")
        else:
            self.safety.drop_ramp(p.asset)
        first = self.audit.tally(
            "proposal",
            "unchanged" if unchanged else "refused",
            asset=p.asset,
            source=p.source,
            proposed=p.value,
            value=verdict.value,
            reason=verdict.reason,
            limit=verdict.limit,
            dry_run=verdict.dry_run,
            provenance={**p.provenance, "data_ts": p.data_ts, "deadline_at": p.deadline_at},
            ts=now,
        )
        if first and not unchanged:  # the repeats: counted in the audit log's summary row
            log.warning("refused %s = %s from %s: %s", p.asset, p.value, p.source, verdict.reason)
        return verdict

    def take_changed(self) -> set[str]:
        """The assets written since the last call (what the agent tells upstream connectors)."""
        changed, self._changed = self._changed, set()
        return changed

    async def _write_to_plant(self, asset: str, value: float, now: float) -> tuple[bool, list[str]]:
        """The allowed value to every connector that maps the asset; a failed write is an alarm.
        Returns whether one connector wrote it and the names of those that failed."""
        written, failed = False, []
        for sink in self.sinks:
            if not sink.writes(asset):
                continue
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await sink.write(asset, value)
            except Exception as exc:  # ConnectorError, a timeout, or a bug: never past the gate
                if isinstance(exc, TimeoutError):
                    reason = f"{sink.name}: no answer within {self.write_timeout_s:g} s"
                else:
                    reason = f"{sink.name}: {exc}"
                    if not isinstance(exc, ConnectorError):
                        log.exception("connector %s failed to write %s", sink.name, asset)
                self._alarm(asset, "write", value, None, reason, now)
                failed.append(sink.name)
            else:
                written = True
                self.audit.record("write", "written", asset=asset, value=value, source=sink.name, ts=now)
        raise_if_cancelling()  # a connector's library (pymodbus: wait_for on 3.11) may have eaten our cancel
        return written, failed

    def _alarm(
        self, asset: str, kind: str, expected: float, observed: float | None, reason: str, now: float
    ) -> None:
        self.verdicts["alarms"] += 1
        self.audit.record(
            kind, "alarm", asset=asset, value=observed, proposed=expected, reason=reason, ts=now
        )
        alarm = {
            "asset": asset,
            "kind": kind,
            "expected": expected,
            "observed": observed,
            "reason": reason,
            "ts": now,
        }
        self.mqtt.publish(self.topic("alarms"), json.dumps(alarm), qos=1)
        log.error("%s alarm on %s: %s", kind, asset, reason)

    async def tick(self, latest: Latest, now: float) -> None:
        """Each evaluation: fresh readings for interlocks and read-backs, ramp steps, read-back results."""
        self.safety.latest = latest
        for step in self.safety.ramps(now):
            await self.propose(step, now)
        for asset, expected, observed, ok in self.safety.readbacks(now):
            if ok:
                self.audit.record(
                    "readback", "confirmed", asset=asset, value=observed, proposed=expected, ts=now
                )
                continue
            reason = ("no echo" if observed is None else f"echoed {observed:g}") + f", expected {expected:g}"
            self._settled.pop(asset, None)  # not in force: proposing it again writes it again
            self._alarm(asset, "readback", expected, observed, reason, now)

    async def on_proposal(self, topic: str, payload: bytes) -> None:
        """A message on ``qx/v1/{site}/proposals/{asset}``."""
        now = time.time()
        asset = topic.removeprefix(self.topic("proposals/"))
        try:
            if not asset:
                raise ValueError("the topic names no asset")
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("a proposal must be a JSON object")
            value = _number(doc.get("value"), "value")
            if "asset" in doc and doc["asset"] != asset:
                raise ValueError(f"asset {doc['asset']!r} does not match the topic's {asset!r}")
            if "data_ts" not in doc and "ts" not in doc:
                raise ValueError("data_ts (epoch s of the newest input it derives from) is required")
            data_ts = _number(doc.get("data_ts", doc.get("ts")), "data_ts")
            deadline_at = None
            if "job_id" in doc:  # a solver-derived proposal: only for a job this agent sent
                deadline_at = self.job_deadline(str(doc["job_id"]))
                if deadline_at is None:
                    raise ValueError(f"job_id {str(doc['job_id'])[:64]!r} is not a job this agent sent")
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            self.verdicts["refused"] += 1
            self.audit.tally(
                "proposal",
                "refused",
                asset=asset or None,
                source="topic",
                reason=f"invalid proposal: {exc}",
                provenance={"payload": payload[:512].decode("utf-8", "replace")},
                ts=now,
            )
            return
        provenance = {k: doc[k] for k in PROVENANCE_KEYS if k in doc}
        source = f"topic:{str(doc.get('source', 'unknown'))[:40]}"
        await self.propose(Proposal(asset, value, source, data_ts, now, deadline_at, provenance), now)

    async def on_lock(self, topic: str, payload: bytes) -> None:
        """A (retained) message on ``qx/v1/{site}/lock/{asset}``; anything unclear locks."""
        await self.audit_lock(*self.apply_lock(topic, payload))

    def apply_lock(self, topic: str, payload: bytes) -> tuple[str, bool, str]:
        """Put a lock message in force at once (no await: nothing can slip in between); returns what
        :meth:`audit_lock` records."""
        asset = topic.removeprefix(self.topic("lock/"))
        text = payload.decode("utf-8", "replace").strip()
        locked = text.lower() not in _UNLOCK
        with_reason = text[:120]
        if text.startswith("{"):
            try:
                doc = json.loads(text)
                locked = doc.get("locked", True) is not False
                with_reason = str(doc.get("by") or doc.get("reason") or "operator")[:120]
            except (ValueError, AttributeError, RecursionError):
                locked = True
        if locked:
            self.safety.locks[asset] = with_reason or "operator"
            self.safety.drop_ramp(asset)
        else:
            self.safety.locks.pop(asset, None)
        log.warning("%s %s (%s)", asset, "locked" if locked else "unlocked", with_reason)
        return asset, locked, with_reason

    async def audit_lock(self, asset: str, locked: bool, with_reason: str) -> None:
        await self.audit.write(
            "lock", "locked" if locked else "unlocked", asset=asset, reason=with_reason or None
        )

    async def record_decision(self, kind: str, provenance: dict[str, Any]) -> None:
        """An offloaded decision (from the data center or the local fallback), for the record."""
        await self.audit.write(
            "decision", str(provenance.get("source", "?")), source=kind, provenance=provenance
        )

    def on_refused_result(self, topic: str, job_id: str | None, reason: str, detail: dict[str, Any]) -> None:
        self.verdicts["refused_results"] += 1
        self.audit.tally(
            "result",
            "refused",
            source=f"offload:{job_id}",
            reason=reason,
            provenance={"topic": topic, **detail},
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: not a finite number")
    return number
