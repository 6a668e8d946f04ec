"""The safety envelope: nothing proposed by a rule, a model, an operator topic or the data center
reaches the plant unchecked.

Every proposal gets a :class:`Verdict`, checked in this order (the first failure refuses):

1. the asset has an envelope (assets without one are never written);
2. the value is a finite number;
3. expiry: the data it derives from is at most ``max_input_age_s`` old (and not stamped in the future
   beyond ``max_clock_skew_s``), and a solver result arrived before its job's deadline;
4. no operator lock (config, or a retained message on ``qx/v1/{site}/lock/{asset}``);
5. every interlock holds on a reading no older than its ``max_age_s`` (a stale or missing reading
   fails it);
6. the value is clamped to ``[min, max]``, then towards the value in force by ``max_rate_per_s`` times
   the time since the last change, counted up to ``max_step_s`` (``clamped``, with the limit that
   clamped it), and to ``[min, max]`` again (a value in force outside the range moves into it at once);
   a rate-limited asset whose value in force is unknown is not written;
7. with ``allowed`` values, the result must be one of them;
8. a change within ``min_dwell_s`` of the previous change is refused.

In dry-run (global or per asset) the verdict is computed and audited but nothing is written. A
proposal clamped by the rate limit becomes a ramp: the rest is proposed again at each evaluation
after the dwell time, through every check (with the data time of the original decision, so a ramp
stops when its data expires), until reached or replaced. After a write, an envelope with ``readback`` expects
the plant to echo the value on a signal within ``timeout_s``, and raises an alarm otherwise.

The value in force. Until the agent writes an asset itself, the value the asset holds is learned, in
order of trust: a fresh read-back echo (the plant says what it applies); else the newest command on
record, from the asset's setpoint topic (the retained last setpoint, or one the agent did not write:
see :meth:`Safety.foreign`) or from the audit log's last write (:meth:`Safety.learn`); else, only for
an envelope without ``readback`` (nothing could report it), the envelope's ``initial``. When none is
known, a rate-limited asset is refused (``limit`` ``in force``): writing blind could jump. The last
change is the time of the command on record when the echo agrees with it, else the agent's start
(unknown counts as recent), so dwell and rate limits hold across a restart. After the agent's own
write, a fresh echo that differs from it while no read-back is pending is in force again, from the
time it was read (:meth:`Safety.drifted`), as a foreign setpoint is.
This module is pure logic (no I/O): the pipeline feeds it readings, locks and the clock.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qxedge.agent._patterns import names
from qxedge.core.state import state_dir

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
ENVELOPE_CACHE = 4096  # asset names whose envelope lookup is remembered (proposal topics are anyone's)
_CONDITION = re.compile(r"^\s*(\S+)\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class Interlock(BaseModel):
    """``when``: ``<asset>/<signal> <op> <number>``; ``{asset}`` stands for the asset being written."""

    model_config = ConfigDict(extra="forbid")
    when: str
    max_age_s: float = Field(5.0, gt=0, description="an older (or missing) reading fails the interlock")

    @field_validator("when")
    @classmethod
    def _parse(cls, when: str) -> str:
        match = _CONDITION.match(when)
        if match is None or "/" not in match.group(1):
            raise ValueError(f"expected `<asset>/<signal> <op> <number>` with op one of {' '.join(_OPS)}")
        return when

    def parts(self, asset: str) -> tuple[str, str, str, float]:
        match = _CONDITION.match(self.when)
        assert match is not None  # validated
        path = match.group(1).replace("{asset}", asset)
        where, _, signal = path.rpartition("/")
        return where, signal, match.group(2), float(match.group(3))


class Readback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: str = Field(description="the asset's signal on which the plant echoes the value it applied")
    timeout_s: float = Field(5.0, gt=0)
    tolerance: float = Field(1e-6, ge=0)


class Envelope(BaseModel):
    """Limits for every asset matching ``assets`` (glob patterns); the first matching envelope applies."""

    model_config = ConfigDict(extra="forbid")
    assets: list[str] = Field(min_length=1)
    min: float
    max: float
    allowed: list[float] | None = Field(None, description="discrete values the asset accepts")
    max_rate_per_s: float | None = Field(None, gt=0)
    max_step_s: float = Field(
        1.0, gt=0, description="one write moves at most max_rate_per_s x min(time since last change, this)"
    )
    min_dwell_s: float = Field(0.0, ge=0, description="minimum time between two changes")
    initial: float | None = Field(
        None,
        description="the value at commissioning: assumed before the first write only without readback, when "
        "no setpoint or audit row says otherwise",
    )
    interlocks: list[Interlock] = Field(default_factory=list)
    readback: Readback | None = None
    dry_run: bool = False
    locked: bool = Field(False, description="frozen by configuration")

    @model_validator(mode="after")
    def _check(self) -> Envelope:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError("min and max must be finite with min <= max")
        if self.allowed is not None and not all(self.min <= v <= self.max for v in self.allowed):
            raise ValueError("every allowed value must lie within [min, max]")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError("initial must lie within [min, max]")
        return self


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="default: $XDG_STATE_HOME/qxedge/audit-<site>.sqlite")
    retention_days: float = Field(30.0, gt=0)
    key_file: Path | None = Field(
        None, description="HMAC-SHA256 key of the hash chain (>= 16 bytes; default: plain SHA-256)"
    )
    checkpoint_rows: int = Field(1000, gt=0, description="a checkpoint upstream at least every N rows")
    checkpoint_s: float = Field(60.0, gt=0, description="... and every T seconds while rows come")
    summary_s: float = Field(60.0, gt=0, description="repeated refusals and no-ops: one row per interval")

    def resolved(self, site: str) -> Path:
        if self.path is not None:
            return self.path
        return state_dir() / f"audit-{site}.sqlite"


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(False, description="evaluate and audit every proposal, write nothing")
    max_input_age_s: float = Field(15.0, gt=0, description="a proposal derived from older data is refused")
    max_clock_skew_s: float = Field(2.0, ge=0, description="tolerated clock difference with the plant")
    setpoint_expiry_s: float | None = Field(
        None,
        gt=0,
        description="MQTT 5 (broker.protocol 5): the broker discards a setpoint message this long after it "
        "was written, queued copies and the retained one alike; default: never",
    )
    envelopes: list[Envelope] = Field(default_factory=list)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    def envelope(self, asset: str) -> Envelope | None:
        """The first envelope matching ``asset``."""
        return next((e for e in self.envelopes if names(e.assets, asset)), None)


@dataclass(frozen=True, slots=True)
class Proposal:
    asset: str
    value: float
    source: str  # "rule:<name>", "topic", "ramp", "offload:<job>"
    data_ts: float | None  # the newest input it derives from; None: no input has arrived yet
    arrived_at: float
    deadline_at: float | None = None  # a solver-derived proposal: its job's deadline
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Literal["accepted", "clamped", "refused"]
    value: float | None  # what is written (or would be, in dry run)
    reason: str = ""
    limit: str | None = None
    dry_run: bool = False

    @property
    def write(self) -> bool:
        return self.status != "refused" and not self.dry_run


@dataclass(slots=True)
class _State:
    value: float | None  # the value in force (None: unknown)
    changed_at: float  # the last change (the agent's start when unknown)
    own: bool = False  # the value is the agent's own write (else learned; see the module docstring)
    ramp: Proposal | None = None
    expect: tuple[float, float, float] | None = None  # (value, written at, due by)


Latest = Mapping[tuple[str, str], tuple[float, float]]  # (asset, signal) -> (ts, value)


class Safety:
    def __init__(self, config: SafetyConfig, started_at: float) -> None:
        self.config = config
        self.started_at = started_at
        self.locks: dict[str, str] = {}  # asset -> who / why (retained lock messages)
        self.latest: Latest = {}
        self._states: dict[str, _State] = {}
        # asset -> its envelope (the config is fixed), the most recently used only: anyone may propose
        # on a topic naming a new asset, and each would be remembered for good
        self.envelope = functools.lru_cache(maxsize=ENVELOPE_CACHE)(config.envelope)
        self.commanded: dict[str, tuple[float, float]] = {}  # asset -> the newest (value, time) on record

    def reconfigure(self, config: SafetyConfig) -> None:
        """New limits (a config reload) from the next proposal on; what is known of each asset (values
        in force, ramps, read-backs, locks) stays."""
        self.config = config
        self.envelope = functools.lru_cache(maxsize=ENVELOPE_CACHE)(config.envelope)

    def learn(self, asset: str, value: float, at: float, now: float) -> None:
        """A command on record for ``asset`` (the audit log's last write, the retained setpoint): the
        value in force until an echo or the agent's own write says otherwise; the newest one counts."""
        if not math.isfinite(value) or not math.isfinite(at):
            return
        at = min(at, now)  # a time ahead of the clock counts from now
        known = self.commanded.get(asset)
        if known is None or at >= known[1]:
            self.commanded[asset] = (value, at)

    def foreign(self, asset: str, value: float, now: float) -> None:
        """A setpoint on the asset's topic that the agent did not write: the plant may apply it, so it is
        the value in force from now (a fresh echo still says better); the ramp and read-back end."""
        if not math.isfinite(value) or self.config.envelope(asset) is None:  # (never written: no state)
            return
        self.commanded[asset] = (value, now)
        state = self._states.get(asset)
        if state is not None:
            state.own, state.ramp, state.expect = False, None, None

    def _state(self, asset: str, env: Envelope, now: float) -> _State:
        state = self._states.get(asset)
        if state is None:
            state = self._states[asset] = _State(None, self.started_at)
        if not state.own:
            state.value, state.changed_at = self._in_force(asset, env, now)
        return state

    def _in_force(self, asset: str, env: Envelope, now: float) -> tuple[float | None, float]:
        """The value in force of an asset the agent has not written itself, and its last change."""
        commanded = self.commanded.get(asset)
        recent = max(self.started_at, commanded[1]) if commanded is not None else self.started_at
        if env.readback is not None:
            echo = self.latest.get((asset, env.readback.signal))
            age = now - echo[0] if echo is not None else math.inf
            if echo is not None and -self.config.max_clock_skew_s <= age <= self.config.max_input_age_s:
                if commanded is not None and abs(commanded[0] - echo[1]) <= env.readback.tolerance:
                    return echo[1], commanded[1]
                return echo[1], recent  # changed at a time nothing says: counted as recent
        if commanded is not None:
            return commanded
        if env.readback is None and env.initial is not None:
            return env.initial, self.started_at
        return None, self.started_at

    def evaluate(self, p: Proposal, now: float) -> Verdict:
        env = self.envelope(p.asset)
        if env is None:
            return Verdict("refused", None, "no safety envelope for this asset")
        dry = self.config.dry_run or env.dry_run

        def refuse(reason: str, limit: str | None = None) -> Verdict:
            return Verdict("refused", None, reason, limit, dry)

        if not math.isfinite(p.value):
            return refuse(f"not a finite number ({p.value})")
        if p.data_ts is None:
            return refuse("no input data has arrived yet", "expiry")
        age = now - p.data_ts
        if age < -self.config.max_clock_skew_s:
            return refuse(f"input data is stamped {-age:.4g} s in the future", "expiry")  # 1e300: 4 digits
        if age > self.config.max_input_age_s:
            return refuse(
                f"input data is {age:.1f} s old (limit {self.config.max_input_age_s:g} s)", "expiry"
            )
        if p.deadline_at is not None and p.arrived_at > p.deadline_at:
            late = p.arrived_at - p.deadline_at
            return refuse(f"the solver result arrived {late:.3f} s after its job's deadline", "expiry")
        if env.locked or p.asset in self.locks:
            return refuse(f"locked by operator ({self.locks.get(p.asset, 'config')})", "lock")
        for interlock in env.interlocks:
            failure = self._interlock_failure(p.asset, interlock, now)
            if failure:
                return refuse(failure, "interlock")
        state = self._state(p.asset, env, now)
        if env.max_rate_per_s is not None and state.value is None:
            known = f"no fresh echo on {env.readback.signal}" if env.readback else "no readback, no initial"
            return refuse(f"the value in force is unknown ({known}, no setpoint on record)", "in force")
        value, status, limit = p.value, "accepted", None
        if value > env.max or value < env.min:
            value, limit = (
                min(env.max, max(env.min, value)),
                f"max {env.max:g}" if value > env.max else f"min {env.min:g}",
            )
        if env.max_rate_per_s is not None and state.value is not None:
            step = env.max_rate_per_s * min(max(0.0, now - state.changed_at), env.max_step_s)
            if abs(value - state.value) > step * (1 + 1e-9) + 1e-12:  # float noise is no violation
                ramped = state.value + math.copysign(step, value - state.value)
                # to 12 significant digits, so that what is audited and published carries no float noise
                # (0.6 - 0.2 = 0.39999999999999997), unless that would step further than the rate allows
                settled = float(f"{ramped:.12g}")
                value = settled if abs(settled - state.value) <= step * (1 + 1e-9) + 1e-12 else ramped
                limit = f"rate {env.max_rate_per_s:g}/s"
            # a current value outside the range (an echo) moves into it at once: range beats rate
            value = min(env.max, max(env.min, value))
        if value != p.value:
            status = "clamped"
        if env.allowed is not None and not any(abs(value - a) <= 1e-9 for a in env.allowed):
            return refuse(f"{value:g} is not an allowed value {env.allowed}", limit or "allowed")
        changes = state.value is None or value != state.value
        if changes and now - state.changed_at < env.min_dwell_s:
            waited = now - state.changed_at
            return refuse(f"last change {waited:.1f} s ago (min dwell {env.min_dwell_s:g} s)", "dwell")
        reason = f"clamped by {limit}" if status == "clamped" else "within the envelope"
        return Verdict(status, value, reason, limit, dry)  # type: ignore[arg-type]

    def _interlock_failure(self, asset: str, interlock: Interlock, now: float) -> str:
        where, signal, op, threshold = interlock.parts(asset)
        reading = self.latest.get((where, signal))
        name = f"{where}/{signal} {op} {threshold:g}"
        if reading is None or now - reading[0] > interlock.max_age_s:
            return f"interlock {name}: no reading in the last {interlock.max_age_s:g} s"
        if not _OPS[op](reading[1], threshold):
            return f"interlock {name} fails ({signal} = {reading[1]:g})"
        return ""

    def committed(self, p: Proposal, verdict: Verdict, now: float) -> None:
        """Record a write: the current value, the time of the change, the ramp and the read-back."""
        env = self.envelope(p.asset)
        if env is None or verdict.value is None:
            return
        state = self._state(p.asset, env, now)
        changed = state.value is None or verdict.value != state.value
        if changed:
            state.changed_at = now
        state.value, state.own = verdict.value, True
        self.commanded[p.asset] = (verdict.value, state.changed_at)
        state.ramp = _ramp(p, verdict)
        if env.readback is not None and changed:  # devices that echo on change only send nothing otherwise
            state.expect = (verdict.value, now, now + env.readback.timeout_s)

    def unchanged(self, p: Proposal, verdict: Verdict) -> None:
        """A proposal not written as its allowed value is in force: one clamped by the rate (its first
        step too small to matter yet) still ramps on to its target."""
        state = self._states.get(p.asset)
        if state is not None:
            state.ramp = _ramp(p, verdict)

    def drop_ramp(self, asset: str) -> None:
        """A new proposal replaces the asset's ramp; a refused step ends it."""
        state = self._states.get(asset)
        if state is not None:
            state.ramp = None

    def ramps(self, now: float) -> list[Proposal]:
        """The remaining steps of rate-limited proposals, once their dwell time has passed. A step keeps
        the data time of the decision it continues, so a ramp stops when that data expires."""
        out = []
        for asset, state in self._states.items():
            if state.ramp is None or (env := self.envelope(asset)) is None:
                continue
            if now - state.changed_at >= env.min_dwell_s:
                out.append(replace(state.ramp, arrived_at=now))
        return out

    def drifted(self, now: float) -> list[tuple[str, float, float]]:
        """Assets whose plant echoes, freshly and with no read-back pending, a value other than the
        agent's last write (changed by hand at the plant, drifted, or never applied): (asset, written,
        echoed). As with a foreign setpoint, the echo is the value in force from the time it was read,
        and the ramp ends: the next write starts from what the plant holds, within the rate limit."""
        out: list[tuple[str, float, float]] = []
        for asset, state in list(self._states.items()):
            if not state.own or state.expect is not None or state.value is None:
                continue
            if (env := self.envelope(asset)) is None or env.readback is None:
                continue
            echo = self.latest.get((asset, env.readback.signal))
            if (
                echo is None
                or not -self.config.max_clock_skew_s <= now - echo[0] <= self.config.max_input_age_s
            ):
                continue
            if abs(echo[1] - state.value) > env.readback.tolerance:
                out.append((asset, state.value, echo[1]))
                self.foreign(asset, echo[1], min(echo[0], now))
        return out

    def readbacks(self, now: float) -> list[tuple[str, float, float | None, bool]]:
        """Finished read-backs: (asset, expected, observed, ok). Pending ones stay until due."""
        out: list[tuple[str, float, float | None, bool]] = []
        for asset, state in self._states.items():
            if state.expect is None or (env := self.envelope(asset)) is None or env.readback is None:
                continue
            expected, written_at, due = state.expect
            echo = self.latest.get((asset, env.readback.signal))
            fresh = echo is not None and echo[0] >= written_at - self.config.max_clock_skew_s
            if fresh and echo is not None and abs(echo[1] - expected) <= env.readback.tolerance:
                out.append((asset, expected, echo[1], True))
                state.expect = None
            elif now >= due:
                out.append((asset, expected, echo[1] if fresh and echo is not None else None, False))
                state.expect = None
        return out


def _ramp(p: Proposal, verdict: Verdict) -> Proposal | None:
    """What is left to propose after a verdict: the proposal again, when the rate limit clamped it."""
    return replace(p, source="ramp") if verdict.limit and verdict.limit.startswith("rate") else None
