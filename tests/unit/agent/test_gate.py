"""The gate's memories (no-ops, the envelope lookup, alarms) against what the plant and strangers do:
logic tests through a real audit log, with a double for the MQTT client that records what is published."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qxedge.agent.audit import AuditLog
from qxedge.agent.gate import SetpointGate
from qxedge.agent.safety import ENVELOPE_CACHE, Envelope, Proposal, Safety, SafetyConfig

ASSET = "line1/pump1"
SIGNAL = "load_cap"


class Published:
    """What the gate publishes: setpoint values, alarms."""

    def __init__(self) -> None:
        self.setpoints: list[float] = []
        self.alarms: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> bool:
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


async def test_proposals_on_ever_new_topics_keep_the_envelope_lookup_bounded(tmp_path: Path) -> None:
    safety = pump()
    async with AuditLog(tmp_path / "audit.sqlite", "t", "cfg", retention_days=1) as audit:
        gate = SetpointGate(safety, audit, Published(), "t")  # type: ignore[arg-type]
        payload = json.dumps({"value": 0.5, "data_ts": time.time()}).encode()
        for i in range(100_000):
            await gate.on_proposal(f"qx/v1/t/proposals/made-up/{i}", payload)
    assert gate.verdicts["refused"] == 100_000
    assert safety.envelope.cache_info().currsize <= ENVELOPE_CACHE
