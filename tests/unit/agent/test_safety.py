import asyncio
import contextlib
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qxedge.agent.audit import AuditLog, query
from qxedge.agent.gate import SetpointGate
from qxedge.agent.safety import Envelope, Proposal, Safety, SafetyConfig

T0 = 1_795_629_600.0
ASSET = "line1/pump1"


def safety(**envelope: Any) -> Safety:
    env = {"assets": ["line1/*"], "min": 0.3, "max": 1.0, **envelope}
    return Safety(SafetyConfig(envelopes=[Envelope.model_validate(env)], max_input_age_s=10), started_at=T0)


def fresh(s: Safety, now: float, **signals: float) -> None:
    s.latest = {(ASSET, name): (now - 0.5, value) for name, value in signals.items()}


def proposal(value: float, now: float, *, data_age: float = 0.0, **kw: Any) -> Proposal:
    return Proposal(ASSET, value, "test", now - data_age, now, **kw)


def test_accepts_within_and_clamps_at_the_limits() -> None:
    s = safety()
    assert s.evaluate(proposal(0.6, T0 + 1), T0 + 1).status == "accepted"
    high = s.evaluate(proposal(1.7, T0 + 1), T0 + 1)
    assert (high.status, high.value, high.limit) == ("clamped", 1.0, "max 1")
    low = s.evaluate(proposal(-5, T0 + 1), T0 + 1)
    assert (low.status, low.value, low.limit) == ("clamped", 0.3, "min 0.3")


@pytest.mark.parametrize(
    ("changes", "prop", "reason"),
    [
        ({}, Proposal("line2/x", 0.5, "t", T0, T0), "no safety envelope"),
        ({}, Proposal(ASSET, math.nan, "t", T0, T0), "not a finite number"),
        ({}, Proposal(ASSET, 0.5, "t", T0 - 11, T0), "input data is 11.0 s old"),
        (
            {},
            Proposal(ASSET, 0.5, "t", T0, T0, deadline_at=T0 - 0.25),
            "arrived 0.250 s after its job's deadline",
        ),
        ({"locked": True}, Proposal(ASSET, 0.5, "t", T0, T0), "locked by operator (config)"),
        ({"allowed": [0.5, 1.0]}, Proposal(ASSET, 0.7, "t", T0, T0), "0.7 is not an allowed value"),
    ],
)
def test_refusals_say_why(changes: dict[str, Any], prop: Proposal, reason: str) -> None:
    verdict = safety(**changes).evaluate(prop, T0)
    assert verdict.status == "refused" and verdict.value is None and not verdict.write
    assert reason in verdict.reason


def test_operator_lock_holds_until_unlocked() -> None:
    s = safety()
    s.locks[ASSET] = "j.kim: maintenance"
    assert "j.kim: maintenance" in s.evaluate(proposal(0.5, T0), T0).reason
    del s.locks[ASSET]
    assert s.evaluate(proposal(0.5, T0), T0).status == "accepted"


def test_interlock_needs_a_fresh_reading_that_holds() -> None:
    s = safety(interlocks=[{"when": "{asset}/temp < 90", "max_age_s": 2}])
    assert "no reading in the last 2 s" in s.evaluate(proposal(0.5, T0), T0).reason  # missing
    s.latest = {(ASSET, "temp"): (T0 - 3, 50.0)}
    assert "no reading" in s.evaluate(proposal(0.5, T0), T0).reason  # stale
    fresh(s, T0, temp=95.0)
    assert "fails (temp = 95)" in s.evaluate(proposal(0.5, T0), T0).reason
    fresh(s, T0, temp=60.0)
    assert s.evaluate(proposal(0.5, T0), T0).status == "accepted"


def test_rate_limit_ramps_and_dwell_spaces_changes() -> None:
    s = safety(initial=1.0, max_rate_per_s=0.1, min_dwell_s=2)
    assert "min dwell 2 s" in s.evaluate(proposal(0.5, T0 + 1), T0 + 1).reason  # counted from the start
    first = proposal(0.5, T0 + 3)
    verdict = s.evaluate(first, T0 + 3)
    assert (verdict.status, verdict.limit) == ("clamped", "rate 0.1/s") and verdict.value == pytest.approx(
        0.9
    )
    s.committed(first, verdict, T0 + 3)
    assert "min dwell 2 s" in s.evaluate(proposal(0.8, T0 + 4), T0 + 4).reason
    assert s.ramps(T0 + 4) == []  # still within the dwell time
    now, value = T0 + 3, 0.9
    while s.ramps(now + 2):  # one step per dwell period, each at most one second's worth of rate
        now += 2
        (ramp,) = s.ramps(now)
        step = s.evaluate(ramp, now)
        assert step.value is not None and step.value == pytest.approx(max(0.5, value - 0.1))
        value = step.value
        s.committed(ramp, step, now)
    assert value == pytest.approx(0.5)


def test_a_current_value_outside_the_range_moves_into_it() -> None:
    s = safety(max_rate_per_s=0.1, readback={"signal": "load_cap"})
    s.latest = {(ASSET, "load_cap"): (T0, 5.0)}  # the plant says 5.0, far outside [0.3, 1.0]
    verdict = s.evaluate(proposal(0.5, T0 + 10), T0 + 10)
    assert verdict.value is not None and 0.3 <= verdict.value <= 1.0


PUMP = {"initial": 1.0, "max_rate_per_s": 0.2, "min_dwell_s": 5}  # configs/edge.yaml's pumps
ECHO = {"readback": {"signal": "load_cap", "tolerance": 0.001}}


def test_a_restart_starts_from_the_echo_not_from_initial() -> None:
    """The plant reports 0.3, the envelope's initial is 1.0: a proposal of 1.0 moves at most rate x dt."""
    s = safety(**PUMP, **ECHO)
    s.latest = {(ASSET, "load_cap"): (T0 + 9.5, 0.3)}
    verdict = s.evaluate(proposal(1.0, T0 + 10), T0 + 10)
    assert (verdict.status, verdict.limit) == ("clamped", "rate 0.2/s")
    assert verdict.value == pytest.approx(0.3 + 0.2 * 1.0)  # max_step_s 1


@pytest.mark.parametrize("readback", [True, False])
def test_a_restart_starts_from_the_setpoint_on_record(readback: bool) -> None:
    """No echo: the retained setpoint or the audit log's last write says 0.3, not the initial 1.0."""
    s = safety(**PUMP, **(ECHO if readback else {}))
    s.learn(ASSET, 0.3, T0 - 60, now=T0)
    verdict = s.evaluate(proposal(1.0, T0 + 10), T0 + 10)
    assert verdict.value == pytest.approx(0.5) and verdict.limit == "rate 0.2/s"


def test_the_echo_beats_the_record_and_the_newest_record_wins() -> None:
    s = safety(**PUMP, **ECHO)
    s.learn(ASSET, 0.9, T0 - 30, now=T0)
    s.learn(ASSET, 0.7, T0 - 60, now=T0)  # older: ignored
    assert s.evaluate(proposal(0.3, T0 + 10), T0 + 10).value == pytest.approx(0.7)
    s.latest = {(ASSET, "load_cap"): (T0 + 10, 0.3)}  # the plant says better
    assert s.evaluate(proposal(1.0, T0 + 10), T0 + 10).value == pytest.approx(0.5)


def test_dwell_counts_from_the_previous_change_across_a_restart() -> None:
    """pump2 changed 2 s before the restart; dwell 5 s: 3 s after the restart is too soon, 5.5 s is not."""
    s = safety(**PUMP)
    s.learn(ASSET, 0.6, T0 - 2, now=T0)
    refused = s.evaluate(proposal(0.7, T0 + 1), T0 + 1)
    assert refused.limit == "dwell" and "last change 3.0 s ago" in refused.reason
    assert s.evaluate(proposal(0.7, T0 + 3.5), T0 + 3.5).value == pytest.approx(0.7)


def test_an_unknown_change_time_counts_from_the_start() -> None:
    s = safety(**PUMP, **ECHO)
    s.latest = {(ASSET, "load_cap"): (T0 + 1, 0.6)}  # no record: when it changed nobody knows
    assert s.evaluate(proposal(0.7, T0 + 1), T0 + 1).limit == "dwell"
    s.latest = {(ASSET, "load_cap"): (T0 + 5, 0.6)}
    assert s.evaluate(proposal(0.7, T0 + 5), T0 + 5).value == pytest.approx(0.7)
    s.learn(ASSET, 0.6, T0 - 100, now=T0)  # a record the echo agrees with: its time counts
    s.latest = {(ASSET, "load_cap"): (T0 + 1, 0.6)}
    assert s.evaluate(proposal(0.7, T0 + 1), T0 + 1).value == pytest.approx(0.7)


def test_a_rate_limited_asset_is_not_written_blind() -> None:
    s = safety(**PUMP, **ECHO)
    blind = s.evaluate(proposal(0.9, T0 + 10), T0 + 10)
    assert blind.limit == "in force" and "no fresh echo on load_cap" in blind.reason
    s.latest = {(ASSET, "load_cap"): (T0 - 20, 0.8)}  # older than max_input_age_s: stale
    assert s.evaluate(proposal(0.9, T0 + 10), T0 + 10).limit == "in force"
    without = safety(max_rate_per_s=0.2)  # no readback, no initial: nothing can tell
    assert "no readback, no initial" in without.evaluate(proposal(0.9, T0 + 10), T0 + 10).reason
    assert safety().evaluate(proposal(0.9, T0), T0).status == "accepted"  # no rate limit: no need


def test_a_foreign_setpoint_is_the_value_in_force_and_ends_the_ramp() -> None:
    s = safety(**PUMP, **ECHO)
    s.latest = {(ASSET, "load_cap"): (T0 + 10, 1.0)}
    p = proposal(0.3, T0 + 10)
    verdict = s.evaluate(p, T0 + 10)
    s.committed(p, verdict, T0 + 10)
    assert verdict.value == pytest.approx(0.8) and s.ramps(T0 + 20)
    s.foreign(ASSET, 0.35, T0 + 20)
    assert s.ramps(T0 + 30) == []  # the ramp ended with the foreign write
    assert s.evaluate(proposal(0.9, T0 + 22), T0 + 22).limit == "dwell"  # counted from the foreign one
    s.latest = {(ASSET, "load_cap"): (T0 + 30, 0.35)}
    assert s.evaluate(proposal(0.9, T0 + 30), T0 + 30).value == pytest.approx(0.55)


def test_future_data_is_refused() -> None:
    assert "in the future" in safety().evaluate(proposal(0.5, T0, data_age=-60), T0).reason


def test_dry_run_evaluates_but_writes_nothing() -> None:
    s = Safety(SafetyConfig(dry_run=True, envelopes=[Envelope(assets=["*"], min=0, max=1)]), T0)
    verdict = s.evaluate(proposal(2.0, T0), T0)
    assert verdict.status == "clamped" and verdict.dry_run and not verdict.write


def test_readback_confirms_or_alarms() -> None:
    s = safety(readback={"signal": "load_cap", "timeout_s": 3, "tolerance": 0.01})
    p = proposal(0.6, T0)
    s.committed(p, s.evaluate(p, T0), T0)
    assert s.readbacks(T0 + 1) == []  # still waiting
    s.latest = {(ASSET, "load_cap"): (T0 + 1.5, 0.6)}
    assert s.readbacks(T0 + 2) == [(ASSET, 0.6, 0.6, True)]
    p = proposal(0.8, T0 + 10)
    s.committed(p, s.evaluate(p, T0 + 10), T0 + 10)
    s.latest = {(ASSET, "load_cap"): (T0 + 11, 0.6)}  # the plant kept the old value
    assert s.readbacks(T0 + 14) == [(ASSET, 0.8, 0.6, False)]


class FakeMqtt:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, **mqtt5: object
    ) -> bool:
        self.sent.append((topic, json.loads(payload)))
        return True


class FakeAudit:
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def write(self, *args: Any, **kwargs: Any) -> None:
        return None

    def tally(self, *args: Any, **kwargs: Any) -> bool:
        return True


step_strategy = st.tuples(
    st.floats(0, 5),  # seconds since the previous step
    st.one_of(st.floats(-10, 10), st.sampled_from([math.nan, math.inf, -math.inf])),  # proposed value
    st.floats(0, 200),  # interlock reading
    st.floats(0, 8),  # its age
    st.floats(-5, 20),  # age of the proposal's data (negative: stamped in the future)
    st.booleans(),  # dry run for the asset
    st.booleans(),  # locked by an operator
)


@settings(max_examples=300, deadline=None)
@given(
    lo=st.floats(-100, 100),
    span=st.floats(0, 100),
    rate=st.one_of(st.none(), st.floats(0.001, 10)),
    dwell=st.floats(0, 5),
    initial=st.one_of(st.none(), st.floats(0, 1)),
    echo=st.one_of(st.none(), st.floats(-300, 300)),
    steps=st.lists(step_strategy, max_size=40),
)
def test_no_sequence_writes_outside_the_envelope_or_too_fast(
    lo: float,
    span: float,
    rate: float | None,
    dwell: float,
    initial: float | None,
    echo: float | None,
    steps: list[Any],
) -> None:
    """Through the gate (what is published is what counts): any proposals, timings, readings, locks."""
    hi = lo + span
    env = Envelope(
        assets=["*"],
        min=lo,
        max=hi,
        max_rate_per_s=rate,
        min_dwell_s=dwell,
        initial=None if initial is None else lo + initial * span,
        interlocks=[{"when": "{asset}/temp < 150", "max_age_s": 5}],
        readback=None if echo is None else {"signal": "load_cap", "timeout_s": 1},
    )
    s = Safety(SafetyConfig(envelopes=[env], max_input_age_s=10, max_clock_skew_s=2), started_at=T0)
    mqtt = FakeMqtt()
    gate = SetpointGate(s, FakeAudit(), mqtt, "site")  # type: ignore[arg-type]

    async def run() -> None:
        now = T0
        # what the plant holds, and when it last changed (unknown: the agent's start, T0): the echo when
        # the plant reports one, else the initial value (only without readback)
        current, changed_at = (echo, T0) if echo is not None else (env.initial, T0)
        for dt, value, temp, temp_age, data_age, dry, locked in steps:
            now += dt
            env.dry_run = dry
            s.locks = {ASSET: "op"} if locked else {}
            latest = {(ASSET, "temp"): (now - temp_age, temp)}
            if echo is not None:
                latest[(ASSET, "load_cap")] = (now, echo)
            before = len(mqtt.sent)
            await gate.tick(latest, now)
            await gate.propose(Proposal(ASSET, value, "t", now - data_age, now), now)
            for topic, setpoint in mqtt.sent[before:]:
                if topic.endswith("/alarms") and setpoint["observed"] is not None:
                    # the plant echoes another value than the one written: it holds that one, since then
                    current, changed_at = setpoint["observed"], now
                if "/setpoints/" not in topic:
                    continue  # read-back alarms
                v = setpoint["value"]
                assert lo <= v <= hi
                assert not dry and not locked, "a dry run or a lock was ignored"
                assert temp < 150 and temp_age <= 5, "an interlock was ignored"
                if rate is not None:
                    assert current is not None, "a rate-limited asset was written blind"
                if v == current:
                    continue
                assert now - changed_at >= dwell
                if rate is not None and current is not None and lo <= current <= hi:
                    since = now - changed_at
                    assert abs(v - current) <= rate * min(since, env.max_step_s) * (1 + 1e-9) + 1e-9
                current, changed_at = v, now

    asyncio.run(run())


async def test_a_cancel_a_connector_write_swallowed_still_stops_the_caller() -> None:
    """A connector's write runs in the caller's task; pymodbus' wait_for (Python 3.11) may drop a cancel
    that lands as the device answers (python/cpython#86296): the gate raises it after the write."""
    inside = asyncio.Event()

    class SwallowingSink:
        name = "plc"

        def writes(self, asset: str) -> bool:
            return True

        async def write(self, asset: str, value: float) -> None:
            inside.set()
            with contextlib.suppress(asyncio.CancelledError):  # what wait_for does in that window
                await asyncio.sleep(3600)

    s = safety()
    fresh(s, T0 + 1)
    gate = SetpointGate(s, FakeAudit(), FakeMqtt(), "site", sinks=[SwallowingSink()])  # type: ignore[arg-type, list-item]

    async def caller() -> None:
        while True:  # an evaluation loop: it would go on proposing after a lost cancel
            await gate.propose(proposal(0.6, T0 + 1), T0 + 1)
            await asyncio.sleep(0)

    task = asyncio.create_task(caller())
    await inside.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done and task.cancelled(), "the caller went on after its cancel was lost in a write"


async def test_audit_log_is_append_only_survives_restarts_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    async with AuditLog(path, "demo", "cfg1", retention_days=1) as log:
        log.record("proposal", "refused", asset=ASSET, proposed=2.0, reason="why", ts=time.time() - 3 * 86400)
        log.record("proposal", "accepted", asset=ASSET, proposed=0.5, value=0.5, provenance={"job_id": "j"})
    async with AuditLog(path, "demo", "cfg2", retention_days=1) as log:  # reopening prunes the old row
        log.record("result", "refused", reason="forged")
    rows = query(path)
    assert [(r["kind"], r["verdict"], r["config_hash"]) for r in rows] == [
        ("proposal", "accepted", "cfg1"),
        ("retention", "pruned", "cfg2"),  # the chain's record of what retention deleted
        ("result", "refused", "cfg2"),
    ]
    assert rows[0]["provenance"] == {"job_id": "j"} and query(path, asset=ASSET)[0]["value"] == 0.5
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET verdict = 'accepted'")
    db.close()
