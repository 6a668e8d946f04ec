"""A setpoint's value as the plant and the audit log receive it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qxedge.agent.audit import AuditLog, query
from qxedge.agent.gate import SetpointGate
from qxedge.agent.safety import Envelope, Proposal, Safety, SafetyConfig
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient

from .conftest import Watcher

ASSET = "line1/pump1"


@pytest.mark.integration
async def test_a_ramped_setpoint_carries_no_float_noise(
    broker: EmbeddedBroker, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    start = time.time()
    env = Envelope.model_validate(
        {
            "assets": ["line1/*"],
            "min": 0.3,
            "max": 1.0,
            "initial": 0.6,
            "max_rate_per_s": 0.2,
            "max_step_s": 1,
        }
    )
    safety = Safety(SafetyConfig(envelopes=[env], max_input_age_s=10), started_at=start)
    watcher = watch(f"qx/v1/demo/setpoints/{ASSET}")
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="test") as mqtt,
        AuditLog(tmp_path / "audit.sqlite", "demo", "cfg", retention_days=1) as audit,
    ):
        gate = SetpointGate(safety, audit, mqtt, "demo")
        now = start + 1  # one second at 0.2/s from 0.6 towards 0.3: 0.6 - 0.2, which is 0.39999999999999997
        verdict = await gate.propose(Proposal(ASSET, 0.3, "test", now, now), now)
        assert (verdict.status, verdict.limit) == ("clamped", "rate 0.2/s")
        assert await asyncio.to_thread(watcher.wait_for, lambda ms: len(ms) == 1)
    published = json.loads(watcher.messages[0].payload)["value"]
    audited = [r["value"] for r in query(tmp_path / "audit.sqlite") if r["kind"] == "proposal"]
    assert repr(published) == "0.4" and audited == [published]
