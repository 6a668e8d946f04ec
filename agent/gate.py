"""The setpoint gate: the only way to the plant. Every proposal goes through the safety envelope, is
audited with its verdict and provenance, and only then (unless dry run or refused) is written.

Inputs it takes besides the agent's own rules:

- ``qx/v1/{site}/proposals/{asset}``: setpoint proposals from outside (an operator screen, an MES,
  the data center): ``{"value": 0.8, "data_ts": <epoch s of the newest input>, "source": "mes"}``
  (``ts`` stands in for ``data_ts``; one of them is required, epoch seconds > 0). With a ``job_id``
  the proposal derives from a solver result: the job must be one this agent sent, and its deadline is
  the job's own. A topic whose asset has empty levels (``proposals/line1/pump1/``) is refused;
- ``qx/v1/{site}/lock/{asset}`` (retained): a payload locks the asset at its current value (the
  payload says who and why) unless it is one of the unlock payloads, exactly (case and surrounding
  white space aside): empty, ``unlocked``, ``false``, ``0``, or a JSON object with ``"locked":
  false``. Anything else locks (``unlock``, ``off``, ``no``, ``{"locked": "no"}``, bytes that are not
  UTF-8). Each lock topic holds its own lock: an asset is locked while any topic locks it. A topic
  with empty levels (``lock/line1/fan1/``) is not the asset's topic: it still locks the asset it names,
  with an alarm; one that names no asset (``lock/``) locks nothing and raises an alarm;
- ``qx/v1/{site}/setpoints/#``, the agent's own topics (it writes them retained): its own messages come
  back and are dropped; at start the retained one is the last setpoint, the value in force when it is
  the one the audit log recorded, and after a reconnect the broker sends the agent's last one again;
  any other message was written by someone else: an alarm (``foreign_setpoint``), an audit row, the
  count ``foreign``, and (the plant may have applied it) the asset's value in force; repeats are
  tallied like refusals (below), not published each;
- results the offload client refused (forged, unknown, malformed, late): audited, never written.

Read-backs are checked at every evaluation; a mismatch or a missing echo raises an alarm on
``qx/v1/{site}/alarms`` and in the audit log, and so does a fresh echo that differs from the last write
once no read-back is pending (the plant set by hand, or drifted): the echo is then the value in force.

A proposal whose allowed value is the one this gate last wrote to every way to the plant (within the
envelope's read-back tolerance) is a no-op: not written again, until a read-back alarm, a foreign
setpoint, a differing echo or a lock says the value may no longer be in force. No-ops and refusals are
tallied by the audit log (a row for the first of a kind in its summary interval, then one row with the
count of the rest) and logged once per interval: a flood of them costs neither writes nor a row each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qxedge.agent._patterns import WILDCARD
from qxedge.agent.audit import AuditLog, last_setpoints
from qxedge.agent.decisions import Setpoint
from qxedge.agent.safety import Envelope, Latest, Proposal, Safety, Verdict
from qxedge.connectors.mqtt import Message, MqttClient, Subscription
from qxedge.connectors.plant import SetpointSink
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import ConnectorError

log = logging.getLogger(__name__)
UNLOCK = frozenset({"", "unlocked", "false", "0"})  # exactly these (lower case, stripped) unlock
UNECHOED_LIMIT = 10_000  # own setpoints remembered until the broker sends them back
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
        locks_unknown: Callable[..., str | None] = lambda asset=None: None,
    ) -> None:
        # why operator locks (of one asset, or of all with none given) may be missed now; None when known
        self.locks_unknown = locks_unknown
        self._lock_alarmed: set[str] = set()  # assets alarmed for a lock state that cannot be known
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
        self.in_force: dict[str, Setpoint] = {}  # asset -> the last setpoint written (the console shows it)
        self._unechoed: OrderedDict[Message, None] = OrderedDict()  # own setpoints not yet sent back
        # asset -> (value, ts) of the agent's own setpoint the broker retains (sent again at each
        # subscription: at start, from the audit log's last write, and after every reconnect)
        self._retained: dict[str, tuple[float, float]] = {}
        self._lock_topics: dict[str, tuple[str, str]] = {}  # lock topic -> (asset, who / why) locking

    def topic(self, suffix: str) -> str:
        return f"qx/v1/{self.site}/{suffix}"

    async def propose(self, p: Proposal, now: float | None = None) -> Verdict:
        """Evaluate, audit (on disk before anything is written), then write if allowed."""
        now = time.time() if now is None else now
        if p.source != "ramp":
            self.safety.drop_ramp(p.asset)
        # a lock known to be in force refuses with its own reason, whatever else is unknown
        unknown = None if p.asset in self.safety.locks else self.locks_unknown(p.asset)
        if unknown and p.asset not in self._lock_alarmed and self.locks_unknown() is None:
            self._lock_alarmed.add(p.asset)  # this asset's lock state can never be known here: say so once
            self._alarm(p.asset, "lock", p.value, None, unknown, now)
        # fail safe: while the lock channel is down, an operator's lock could be missed: nothing is written
        verdict = Verdict("refused", None, unknown, "lock") if unknown else self.safety.evaluate(p, now)
        self.verdicts[verdict.status] += 1
        if verdict.status == "refused" or self._unchanged(p.asset, verdict):
            return self._not_written(p, verdict, now)
        try:
            await self.audit.write(
                "proposal",
                verdict.status,
                **_row(p, verdict),
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
        # retained: after a restart the agent (and the plant) find the value in force there
        topic, payload = self.topic(f"setpoints/{p.asset}"), setpoint.payload()
        self._unechoed[(topic, payload)] = None
        if len(self._unechoed) > UNECHOED_LIMIT:
            self._unechoed.popitem(last=False)
        sent = self.mqtt.publish(
            topic, payload, qos=1, retain=True, expiry_s=self.safety.config.setpoint_expiry_s
        )
        if not sent:
            self._unechoed.pop((topic, payload), None)  # it will not come back
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
        self.audit.record("setpoint", "written", asset=p.asset, value=verdict.value, ts=now)
        if sent:
            self._retained[p.asset] = (verdict.value, now)
        self.current[p.asset] = verdict.value
        self._changed.add(p.asset)
        self.written.append(setpoint)
        del self.written[:-100]
        self.in_force[p.asset] = setpoint
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
            self.safety.unchanged(p, verdict)
            verdict = replace(verdict, reason=f"unchanged: {verdict.value:g} is in force")
        else:
            self.safety.drop_ramp(p.asset)
        first = self.audit.tally(
            "proposal",
            "unchanged" if unchanged else "refused",
            **_row(p, verdict),
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
        self,
        asset: str,
        kind: str,
        expected: float | None,
        observed: float | None,
        reason: str,
        now: float,
        *,
        repeats: bool = False,
        **detail: Any,
    ) -> None:
        """An alarm: published, audited, logged. One that ``repeats`` (anyone can send it, as often as
        they like) is tallied like a refusal: the first of its kind in a summary interval is published
        and has its row, the others are counted in the audit log's summary row."""
        self.verdicts["alarms"] += 1
        row: dict[str, Any] = {"value": observed, "proposed": expected, "provenance": detail, "ts": now}
        if repeats:
            if not self.audit.tally(kind, "alarm", asset=asset, reason=reason, **row):
                return
        else:
            self.audit.record(kind, "alarm", asset=asset, reason=reason, **row)
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
        alarmed = set()
        for asset, expected, observed, ok in self.safety.readbacks(now):
            if ok:
                self.audit.record(
                    "readback", "confirmed", asset=asset, value=observed, proposed=expected, ts=now
                )
                continue
            reason = ("no echo" if observed is None else f"echoed {observed:g}") + f", expected {expected:g}"
            self._settled.pop(asset, None)  # not in force: proposing it again writes it again
            self._alarm(asset, "readback", expected, observed, reason, now)
            alarmed.add(asset)
        # the plant echoes another value than the one written (changed by hand, drifted): the echo is in
        # force, and proposing the value written again writes it again (else the plant is never corrected)
        for asset, written, echoed in self.safety.drifted(now):
            self._settled.pop(asset, None)
            if asset not in alarmed:  # a failed read-back has just said so
                reason = f"echoed {echoed:g}, last written {written:g}: changed outside the agent"
                self._alarm(asset, "readback", written, echoed, reason, now)

    async def on_proposal(self, topic: str, payload: bytes) -> None:
        """A message on ``qx/v1/{site}/proposals/{asset}``."""
        now = time.time()
        asset = topic.removeprefix(self.topic("proposals/"))
        try:
            if not asset or "" in asset.split("/"):  # "line1/pump1/" would be another asset to the envelope
                raise ValueError(
                    "the topic names no asset" if not asset else "the topic's asset has empty levels"
                )
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("a proposal must be a JSON object")
            value = _number(doc.get("value"), "value")
            if "asset" in doc and doc["asset"] != asset:
                raise ValueError(f"asset {doc['asset']!r} does not match the topic's {asset!r}")
            key = "data_ts" if "data_ts" in doc else "ts"
            if key not in doc:
                raise ValueError("data_ts (epoch s of the newest input it derives from) is required")
            data_ts = _number(doc[key], key)
            if not data_ts > 0:  # like a reading's ts; 0 would be refused as "1796607030.8 s old"
                raise ValueError(f"{key}: expected epoch seconds > 0, got {data_ts:g}")
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

    async def recall(self) -> None:
        """At start: the last setpoint of each asset in the audit log is on record (the value in force
        when nothing better says), and the retained setpoint that matches it is known as the agent's."""
        self._retained = await asyncio.to_thread(last_setpoints, self.audit.path)
        now = time.time()
        for asset, (value, ts) in self._retained.items():
            self.safety.learn(asset, value, ts, now)

    def on_setpoints(self, messages: list[Message]) -> None:
        """Messages on the agent's own setpoint topics (``on_batch``: on the loop, as they are read)."""
        now = time.time()
        prefix = self.topic("setpoints/")
        for topic, payload in messages:
            if (topic, payload) in self._unechoed:
                del self._unechoed[(topic, payload)]  # one of ours, back from the broker
                continue
            asset = topic.removeprefix(prefix)
            value, ts, named = _setpoint_of(payload)
            if value is not None and ts is not None and self._retained.get(asset) == (value, ts):
                # the agent's own retained one, sent again at start (an earlier run's, as the audit log
                # recorded it) or after a reconnect
                self.safety.learn(asset, value, ts, now)
                continue
            self.verdicts["foreign"] += 1
            if value is not None:
                for changed in {asset, named or asset}:  # a plant may go by the topic or the payload
                    self.safety.foreign(changed, value, now)
                    self._settled.pop(changed, None)  # not ours in force: the next allowed value is written
                reason = f"a setpoint this agent did not write ({value:g}) on {topic}"
            else:
                reason = f"a message this agent did not write on {topic} (not a setpoint)"
            text = payload[:512].decode("utf-8", "replace")
            self._alarm(
                asset,
                "foreign_setpoint",
                self.current.get(asset),
                value,
                reason,
                now,
                repeats=True,
                payload=text,
            )

    async def on_lock(self, topic: str, payload: bytes) -> None:
        """A (retained) message on ``qx/v1/{site}/lock/{asset}``; anything unclear locks."""
        lock = self.apply_lock(topic, payload)
        if lock is not None:
            await self.audit_lock(*lock)

    async def run_locks(self, subscription: Subscription) -> None:
        """Every lock of a batch is in force before anything else runs (no await between taking the
        batch and applying it), then each is audited."""
        async for batch in subscription:
            applied = []
            for topic, payload in batch:
                try:
                    if (lock := self.apply_lock(topic, payload)) is not None:
                        applied.append(lock)
                except Exception:
                    log.exception("could not apply a lock message on %s", topic)
            for lock in applied:
                try:
                    await self.audit_lock(*lock)
                except Exception:
                    log.exception("could not audit the lock of %s", lock[0])

    def apply_lock(self, topic: str, payload: bytes) -> tuple[str, bool, str] | None:
        """Put a lock message in force at once (no await: nothing can slip in between); returns what
        :meth:`audit_lock` records (the asset's lock state after it), None for a topic naming no asset."""
        now = time.time()
        named = topic.removeprefix(self.topic("lock/"))
        asset = "/".join(level for level in named.split("/") if level)
        locked, with_reason = lock_payload(payload)
        if not asset:
            reason = f"ignored a lock message on {topic}: the topic names no asset"
            self._alarm("", "lock", None, None, reason, now, topic=topic, locks=locked)
            return None
        if locked:
            self._lock_topics[topic] = (asset, with_reason or "operator")
        else:
            self._lock_topics.pop(topic, None)
        if asset != named:
            reason = f"{topic} is not the lock topic of {asset} ({self.topic('lock/' + asset)})"
            state = "locks" if locked else "clears its own lock of"
            self._alarm(asset, "lock", None, None, f"{reason}: it {state} {asset}", now, topic=topic)
        holders = [why for held, why in self._lock_topics.values() if held == asset]
        if holders:
            self.safety.locks[asset] = holders[-1]
            self.safety.drop_ramp(asset)
            self._settled.pop(asset, None)  # an operator may change it by hand: after the lock, write again
            if not locked:
                still = f"still locked by another lock topic ({holders[-1]})"
                with_reason = f"{with_reason}; {still}" if with_reason else still
        else:
            self.safety.locks.pop(asset, None)
        log.warning("%s %s (%s)", asset, "locked" if holders else "unlocked", with_reason)
        return asset, bool(holders), with_reason

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


@dataclass(slots=True)
class LockScope:
    """Which assets' retained locks reach the agent: all (``exact`` None: the broker was seen to send a
    retained message to a wildcard subscription), else only those whose lock topic is subscribed exactly."""

    exact: frozenset[str] | None

    async def confirm(self, mqtt: MqttClient, state_topic: str) -> None:
        """Once the broker is reachable, look whether retained messages reach wildcard subscriptions (an
        agent started while the broker was away); all assets' locks are known from then on if so."""
        await mqtt.wait_connected()
        if await retained_reaches_wildcards(mqtt, state_topic):
            self.exact = None
            log.info(
                "the plant broker sends retained messages to wildcard subscriptions: every lock is known"
            )


def inputs_unknown(
    mqtt: MqttClient,
    locks: Subscription,
    setpoints: Subscription,
    scope: LockScope | None = None,
    asset: str | None = None,
) -> str | None:
    """Why an operator lock or the retained value in force may be missed right now; None when known.
    ``scope``: where the broker was not seen to send retained messages to wildcard subscriptions, the
    assets whose lock topic is subscribed exactly; another ``asset``'s retained lock may be missed."""
    exact = scope.exact if scope is not None else None
    if exact is not None and asset is not None and asset not in exact:
        return (
            f"operator locks unknown for {asset}: the plant broker was not seen to send retained messages "
            "to wildcard subscriptions (RabbitMQ sends them to exact topics only) and no envelope names "
            f"{asset} exactly (patterns cannot be subscribed exactly): name it in an envelope's assets"
        )
    if not mqtt.connected:
        return "operator locks unknown: the plant broker is not reachable"
    if not (locks.active.is_set() and setpoints.active.is_set()):
        return "operator locks unknown: the plant broker has not acknowledged the lock subscription yet"
    if locks.backlog:
        return f"operator locks unknown: {locks.backlog} lock messages received, not yet applied"
    return None


def named_assets(envelopes: Sequence[Envelope]) -> list[str]:
    """The assets envelopes name exactly (patterns without wildcards): their lock topics can be
    subscribed exactly."""
    return sorted({name for e in envelopes for name in e.assets if not WILDCARD.search(name)})


async def retained_reaches_wildcards(mqtt: MqttClient, state_topic: str, within_s: float = 2.0) -> bool:
    """Whether the broker sends a retained message to a wildcard subscription: the agent's own retained
    state (its birth, published before this subscription on the same connection) must arrive on
    ``<state_topic's parent>/+`` within ``within_s``. False when the broker is away (not seen)."""
    if not mqtt.connected:
        return False
    seen = asyncio.Event()

    def on_batch(batch: list[Message]) -> None:
        if any(topic == state_topic for topic, _ in batch):
            seen.set()

    await mqtt.subscribe(state_topic.rsplit("/", 1)[0] + "/+", qos=1, on_batch=on_batch)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            await seen.wait()
    return seen.is_set()


def lock_payload(payload: bytes) -> tuple[bool, str]:
    """Whether a lock message locks, and who / why (see the module docstring for the exact forms)."""
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return True, text[:120]
        if not isinstance(doc, dict):
            return True, text[:120]
        who = str(doc.get("by") or doc.get("reason") or "operator")[:120]
        return doc.get("locked", True) is not False, who
    return text.lower() not in UNLOCK, text[:120]


def _setpoint_of(payload: bytes) -> tuple[float | None, float | None, str | None]:
    """(value, ts, asset) of a setpoint document as :class:`Setpoint` writes it, None where missing."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    out: list[float | None] = []
    for key in ("value", "ts"):
        try:
            out.append(_number(doc.get(key), key))
        except (ValueError, OverflowError):
            out.append(None)
    asset = doc.get("asset")
    return out[0], out[1], asset if isinstance(asset, str) and asset else None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: not a finite number")
    return number


def _row(p: Proposal, verdict: Verdict) -> dict[str, Any]:
    """The audit row's fields for a proposal and its verdict."""
    return {
        "asset": p.asset,
        "source": p.source,
        "proposed": p.value,
        "value": verdict.value,
        "reason": verdict.reason,
        "limit": verdict.limit,
        "dry_run": verdict.dry_run,
        "provenance": {**p.provenance, "data_ts": p.data_ts, "deadline_at": p.deadline_at},
    }
