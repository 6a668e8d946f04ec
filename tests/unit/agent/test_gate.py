"""The gate's memories (no-ops, the envelope lookup, alarms) against what the plant and strangers do:
logic tests through a real audit log, with a double for the MQTT client that records what is published."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qxedge.agent.audit import AuditLog, query
from qxedge.agent.gate import SetpointGate
from qxedge.agent.safety import ENVELOPE_CACHE, Envelope, Proposal, Safety, SafetyConfig

ASSET = "line1/pump1"
SIGNAL = "load_cap"


class Published:
    """What the gate publishes: setpoint values, alarms."""

    def __init__(self) -> None:
        self.setpoints: list[float] = []
        self.alarms: list[dict[str, Any]] = []

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, **mqtt5: object
    ) -> bool:
        if "/setpoints/" in topic:
            self.setpoints.append(json.loads(payload)["value"])
        elif topic.endswith("/alarms"):
            self.alarms.append(json.loads(payload))
        return True


def pump(**envelope: Any) -> Safety:
    env = Envelope.model_validate({"assets": ["line1/*"], "min": 0.0, "max": 1.0, **envelope})
    return Safety(SafetyConfig(envelopes=[env], max_input_age_s=10), started_at=0.0)


async def propose(gate: SetpointGate, value: float, now: float) -> str:
    verdict = await gate.propose(Proposal(ASSET, value, "topic:mes", now, now), now)
    no_op = " (no-op)" if verdict.reason.startswith("unchanged") else ""
    return f"{verdict.status} {verdict.value}{no_op}"


async def test_an_echo_other_than_the_value_written_is_in_force_and_ends_the_no_op(tmp_path: Path) -> None:
    """The plant changed by hand (no foreign setpoint): the agent corrects it, from what it holds."""
    readback = {"signal": SIGNAL, "timeout_s": 1, "tolerance": 0.01}
    safety = pump(max_rate_per_s=0.1, max_step_s=1, readback=readback)
    plant = Published()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(safety, audit, plant, "t")  # type: ignore[arg-type]
        await gate.tick({(ASSET, SIGNAL): (9.0, 0.5)}, 10.0)  # the plant holds 0.5
        assert await propose(gate, 0.5, 10.0) == "accepted 0.5"
        await gate.tick({(ASSET, SIGNAL): (10.5, 0.5)}, 11.0)
        assert await propose(gate, 0.5, 11.0) == "accepted 0.5 (no-op)"
        await gate.tick({(ASSET, SIGNAL): (20.0, 0.2)}, 20.0)  # set to 0.2 at the panel
        assert [(a["kind"], a["expected"], a["observed"]) for a in plant.alarms] == [("readback", 0.5, 0.2)]
        # written again, and from 0.2 within the rate (0.1/s, 0.5 s since the echo), not a jump to 0.5
        assert await propose(gate, 0.5, 20.5) == "clamped 0.25"
        await gate.tick({(ASSET, SIGNAL): (20.6, 0.25)}, 21.0)  # applied: the ramp goes on, no alarm
    assert plant.setpoints == [0.5, 0.25, 0.3] and len(plant.alarms) == 1


async def test_a_lock_ends_the_no_op_memory(tmp_path: Path) -> None:
    """While locked an operator may set the asset by hand: after the unlock the value is written again."""
    plant = Published()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(pump(), audit, plant, "t")  # type: ignore[arg-type]
        now = time.time()
        assert await propose(gate, 0.5, now) == "accepted 0.5"
        assert await propose(gate, 0.5, now) == "accepted 0.5 (no-op)"
        await gate.on_lock(f"qx/v1/t/lock/{ASSET}", b'{"by": "ana", "reason": "manual"}')
        assert (await propose(gate, 0.5, now)).startswith("refused")
        await gate.on_lock(f"qx/v1/t/lock/{ASSET}", b"")
        assert await propose(gate, 0.5, now) == "accepted 0.5"
    assert plant.setpoints == [0.5, 0.5]


async def test_a_flood_of_foreign_setpoints_is_one_alarm_and_a_summary_row(tmp_path: Path) -> None:
    plant = Published()
    path = tmp_path / "audit.sqlite"
    topic = f"qx/v1/t/setpoints/{ASSET}"
    async with AuditLog(path, "t", "cfg", retention_days=1, summary_s=3600) as audit:
        gate = SetpointGate(pump(), audit, plant, "t")  # type: ignore[arg-type]
        for i in range(1_000):
            forged = json.dumps({"asset": ASSET, "value": i / 1000, "ts": time.time()}).encode()
            gate.on_setpoints([(topic, forged)])
        other = json.dumps({"value": 0.3, "ts": time.time()}).encode()
        gate.on_setpoints([("qx/v1/t/setpoints/line1/pump2", other)])  # another asset: its own alarm
    assert gate.verdicts["foreign"] == 1_001 and gate.verdicts["alarms"] == 1_001
    assert [(a["asset"], a["observed"]) for a in plant.alarms] == [(ASSET, 0.0), ("line1/pump2", 0.3)]
    rows = [(r["asset"], r["count"], r["value"]) for r in query(path) if r["kind"] == "foreign_setpoint"]
    assert rows == [(ASSET, 1, 0.0), ("line1/pump2", 1, 0.3), (ASSET, 999, 0.999)]
    assert gate.safety.commanded[ASSET][0] == 0.999, "each one is still the value in force"


async def test_proposals_on_ever_new_topics_keep_the_envelope_lookup_bounded(tmp_path: Path) -> None:
    safety = pump()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(safety, audit, Published(), "t")  # type: ignore[arg-type]
        payload = json.dumps({"value": 0.5, "data_ts": time.time()}).encode()
        for i in range(100_000):
            await gate.on_proposal(f"qx/v1/t/proposals/made-up/{i}", payload)
    assert gate.verdicts["refused"] == 100_000
    assert safety.envelope.cache_info().currsize <= ENVELOPE_CACHE


async def test_a_rate_clamped_proposal_whose_first_step_is_a_no_op_keeps_its_ramp(tmp_path: Path) -> None:
    """Just after a change the rate allows a step within the tolerance: nothing to write yet, but the
    proposal's target is still to be reached."""
    readback = {"signal": SIGNAL, "timeout_s": 5, "tolerance": 0.01}
    plant = Published()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(pump(max_rate_per_s=0.1, readback=readback), audit, plant, "t")  # type: ignore[arg-type]
        await gate.tick({(ASSET, SIGNAL): (9.0, 0.4)}, 10.0)
        assert await propose(gate, 0.5, 10.0) == "accepted 0.5"
        assert await propose(gate, 0.9, 10.05) == "clamped 0.505 (no-op)"
        await gate.tick({(ASSET, SIGNAL): (10.5, 0.5)}, 11.0)  # the ramp's next step, towards 0.9
    assert plant.setpoints == [0.5, 0.6]
