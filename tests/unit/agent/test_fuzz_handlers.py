"""Hypothesis fuzz of what outsiders can send the agent: proposals, lock messages and solver results.
Arbitrary bytes and mutated valid payloads never raise past the handler's rejection path, never write
outside the envelope, and nothing the documentation says is rejected is ever accepted."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dimod
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from qxedge.agent.audit import AuditLog
from qxedge.agent.gate import PROVENANCE_KEYS, SetpointGate
from qxedge.agent.safety import Envelope, Proposal, Safety, SafetyConfig
from qxedge.hybrid.client import OffloadClient, OffloadConfig, check_result
from qxedge.hybrid.wire import ResultEnvelope
from qxedge.testing import random_bqm

from .test_safety import FakeAudit, FakeMqtt

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SITE = "site"
ASSETS = ["line1/pump1", "line1/fan1", "line9/x", "", "line1/pump1/", "line1//pump1"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def envelope_gate(audit: Any) -> tuple[SetpointGate, FakeMqtt]:
    env = Envelope(
        assets=["line1/*"],
        min=0.3,
        max=1.0,
        max_rate_per_s=0.2,
        readback={"signal": "load_cap"},  # type: ignore[arg-type]
    )
    safety = Safety(SafetyConfig(envelopes=[env]), time.time() - 60)
    now = time.time()
    safety.latest = {(a, "load_cap"): (now, 0.8) for a in ("line1/pump1", "line1/fan1")}
    mqtt = FakeMqtt()
    return SetpointGate(safety, audit, mqtt, SITE), mqtt  # type: ignore[arg-type]


@st.composite
def proposals(draw: st.DrawFn) -> tuple[str, bytes]:
    asset = draw(st.sampled_from(["line1/pump1"] * 8 + ASSETS) | st.text(max_size=12))
    topic = f"qx/v1/{SITE}/proposals/{asset}"
    if draw(st.integers(0, 3)) == 0:
        return topic, draw(st.binary(max_size=200))
    doc: dict[str, Any] = {"value": 0.6, "data_ts": time.time(), "source": "mes"}
    for key in draw(st.lists(st.sampled_from(["value", "data_ts", "ts", "asset", "job_id"]), max_size=3)):
        doc[key] = draw(JSON_VALUES | st.floats(-2, 3))
    for key in draw(st.lists(st.sampled_from(["value", "data_ts", "source"]), max_size=2)):
        doc.pop(key, None)
    for key in draw(st.lists(st.sampled_from(PROVENANCE_KEYS), max_size=3)):
        doc[key] = draw(JSON_VALUES)
    return topic, json.dumps(doc).encode()


def documented_valid(topic: str, payload: bytes) -> bool:
    """What the gate's documentation accepts: a JSON object with a finite number ``value``, a finite
    number ``data_ts`` (or ``ts``), no other ``asset`` than the topic's, no ``job_id`` of an unknown job."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    asset = topic.removeprefix(f"qx/v1/{SITE}/proposals/")

    def number(x: object) -> bool:
        return type(x) in (int, float) and math.isfinite(float(x))  # type: ignore[arg-type]

    return (
        "" not in asset.split("/")
        and isinstance(doc, dict)
        and number(doc.get("value"))
        and number(doc.get("data_ts", doc.get("ts")))
        and doc.get("asset", asset) == asset
        and "job_id" not in doc
    )


@FUZZ
@given(st.lists(proposals(), min_size=1, max_size=5))
def test_no_proposal_crashes_the_handler_or_writes_outside_the_envelope(
    messages: list[tuple[str, bytes]],
) -> None:
    async def run(folder: Path) -> None:
        async with AuditLog(folder / "audit.sqlite", SITE, "fuzz", 1) as audit:
            gate, mqtt = envelope_gate(audit)

            def recorded() -> int:  # rows, and repeats counted towards their interval's summary row
                return audit.rows + sum(t.count for t in audit._tallies.values())

            for topic, payload in messages:
                before, sent = recorded(), len(mqtt.sent)
                await gate.on_proposal(topic, payload)  # raises nothing
                assert recorded() > before, "a proposal left no trace in the audit log"
                for out, setpoint in mqtt.sent[sent:]:
                    event("written")
                    assert out.startswith(f"qx/v1/{SITE}/setpoints/line1/")
                    assert documented_valid(topic, payload), f"accepted {payload!r} on {topic}"
                    assert 0.3 <= setpoint["value"] <= 1.0

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(Path(folder)))


def documented_unlock(payload: bytes) -> bool:
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False
    if text.lower() in ("", "unlocked", "false", "0"):  # the README's list
        return True
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("locked", True) is False


LOCK_PAYLOADS = (
    st.binary(max_size=60)
    | st.sampled_from(
        [b"", b"unlocked", b"UNLOCKED ", b"unlock", b"false", b"0", b"off", b"no", b"maintenance"]
    )
    | st.builds(
        lambda doc: json.dumps(doc).encode(), st.dictionaries(st.sampled_from(["locked", "by"]), JSON_VALUES)
    )
)


@FUZZ
@given(
    suffix=st.sampled_from(ASSETS) | st.text(alphabet="ab/", max_size=8),
    payload=LOCK_PAYLOADS,
)
def test_a_lock_message_locks_unless_it_is_a_documented_unlock(suffix: str, payload: bytes) -> None:
    gate, mqtt = envelope_gate(FakeAudit())
    gate.safety.locks = {}
    named = "/".join(level for level in suffix.split("/") if level)
    result = gate.apply_lock(f"qx/v1/{SITE}/lock/{suffix}", payload)
    if not named:
        assert result is None and gate.safety.locks == {}
        assert mqtt.sent and "names no asset" in mqtt.sent[-1][1]["reason"]
        return
    assert result is not None and result[0] == named
    assert result[1] is not documented_unlock(payload)
    assert (named in gate.safety.locks) is result[1]
    if result[1] and named.startswith("line1/"):
        now = time.time()
        assert gate.safety.evaluate(Proposal(named, 0.6, "t", now, now), now).limit == "lock"


BQM = random_bqm(5, 0.6, seed=11)
BEST = dimod.ExactSolver().sample(BQM).first
VALID = {
    "v": 1,
    "job_id": "job-1",
    "status": "ok",
    "sample": {str(v): int(x) for v, x in BEST.sample.items()},
    "energy": float(BEST.energy),
    "solver": "exact",
}


@st.composite
def results(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    doc: dict[str, Any] = json.loads(json.dumps(VALID))
    sample = doc["sample"]
    for key in draw(st.lists(st.sampled_from([*sample, "x9"]), max_size=3)):
        sample[key] = draw(st.sampled_from([0, 1, 2, -1, True, 0.5, None]))
    if draw(st.booleans()):
        sample.pop(draw(st.sampled_from(sorted(sample))), None)
    for key in draw(st.lists(st.sampled_from(["energy", "status", "job_id", "v", "reason"]), max_size=2)):
        doc[key] = draw(JSON_VALUES | st.floats() | st.sampled_from(["ok", "error", "late", "rejected"]))
    return json.dumps(doc).encode()


def energy_matches(result: ResultEnvelope) -> bool:
    sample = result.sample or {}
    if set(sample) != {str(v) for v in BQM.variables} or any(x not in (0, 1) for x in sample.values()):
        return False
    energy = BQM.energy({v: sample[str(v)] for v in BQM.variables})
    return result.energy is not None and abs(energy - result.energy) <= 1e-6 * max(1.0, abs(energy))


@FUZZ
@given(st.lists(results(), min_size=1, max_size=4))
def test_no_result_crashes_the_client_and_only_a_true_one_decides(payloads: list[bytes]) -> None:
    """Arbitrary results on the job's topic go through the client's router and checks: nothing raises,
    a result is used only with status ok and the energy of its sample on the job's model."""

    async def run() -> None:
        client = OffloadClient(FakeMqtt(), SITE, OffloadConfig())  # type: ignore[arg-type]
        queue: asyncio.Queue[tuple[str, ResultEnvelope]] = asyncio.Queue()
        client._waiting["job-1"] = queue

        async def batches() -> AsyncIterator[list[tuple[str, bytes]]]:
            yield [(f"qx/v1/{SITE}/results/job-1", p) for p in payloads]

        try:
            await client._route(batches())  # type: ignore[arg-type]
            while not queue.empty():
                topic, result = queue.get_nowait()
                decision, reason = client._accept(BQM, topic, result, time.monotonic())
                assert result.job_id == "job-1"
                if decision is not None:
                    event("decided")
                    assert result.status == "ok" and energy_matches(result), result
                    assert decision.energy == BQM.energy(decision.sample)
                else:
                    assert reason and not (result.status == "ok" and energy_matches(result))
        finally:
            client._search_thread.shutdown()

    asyncio.run(run())


@FUZZ
@given(results())
def test_a_result_envelope_is_parsed_or_refused_with_a_validation_error(payload: bytes) -> None:
    try:
        result = ResultEnvelope.model_validate_json(payload)
    except ValidationError:
        return
    counter, reason = check_result(BQM, result)  # never raises
    assert bool(reason) is not (result.status == "ok" and energy_matches(result))
    assert bool(counter) is bool(reason)


class ReasonsAudit(FakeAudit):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def tally(self, *args: Any, **kwargs: Any) -> bool:
        self.reasons.append(str(kwargs.get("reason")))
        return True


def test_a_proposal_stamped_at_an_impossible_time_is_refused_in_a_few_words() -> None:
    """Issue 25: ``ts`` 0 was refused as "input data is 1796607030.8 s old", 1e300 with a 300-digit
    number; like a reading's, a proposal's ``ts`` is epoch seconds > 0, and no reason quotes more digits
    than a date has."""

    async def run() -> list[str]:
        audit = ReasonsAudit()
        gate, mqtt = envelope_gate(audit)
        for ts in (0, -1, 1e300):
            for key in ("ts", "data_ts"):
                await gate.on_proposal(
                    f"qx/v1/{SITE}/proposals/line1/pump1", json.dumps({"value": 0.6, key: ts}).encode()
                )
        assert not mqtt.sent
        return audit.reasons

    reasons = asyncio.run(run())
    assert len(reasons) == 6
    assert reasons[:4] == [
        "invalid proposal: ts: expected epoch seconds > 0, got 0",
        "invalid proposal: data_ts: expected epoch seconds > 0, got 0",
        "invalid proposal: ts: expected epoch seconds > 0, got -1",
        "invalid proposal: data_ts: expected epoch seconds > 0, got -1",
    ]
    assert all("in the future" in r and len(r) < 80 for r in reasons[4:]), reasons[4:]
