"""Integration: forged, out-of-range, stale and mismatched inputs against a running agent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.agent.audit import query
from qxedge.agent.config import EdgeConfig
from qxedge.agent.pipeline import Agent
from qxedge.agent.safety import Proposal, Verdict
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing import Watcher, edge_config, wait_until

pytestmark = pytest.mark.integration
SITE = "demo"


async def plant_reports(watcher: Watcher, agent: Agent, *assets: str, load_cap: float = 1.0) -> None:
    """The plant echoes the value in force of each asset (``load_cap``) until the agent has it: a
    rate-limited asset is never written before its value in force is known."""
    wanted = {(f"line1/{asset}", "load_cap") for asset in assets}
    deadline = time.monotonic() + 30
    while not wanted <= set(agent.safety.latest):
        assert time.monotonic() < deadline, "the agent never saw the plant's echo"
        for asset in assets:
            body = json.dumps({"value": load_cap, "ts": time.time()})
            await asyncio.to_thread(watcher.publish, f"plant/line1/{asset}/load_cap", body)
        await asyncio.sleep(0.2)


async def test_nothing_outside_the_envelope_reaches_the_setpoint_topic(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(
        broker.url,
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="100",
        safety__envelopes__0__readback__timeout_s="1",
    )
    envelope = cfg.safety.envelopes[0]
    watcher = watch(f"qx/v1/{SITE}/setpoints/#", f"qx/v1/{SITE}/alarms")
    agent = Agent(cfg)
    stop = asyncio.Event()
    now = time.time()

    def publish(topic: str, payload: object, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        watcher.publish(f"qx/v1/{SITE}/{topic}", body, retain=retain)

    # an operator lock retained before the agent starts must hold from its first proposal
    await asyncio.to_thread(publish, "lock/line1/fan1", b"j.kim: bearing inspection", True)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        for asset in ("pump1", "pump2", "fan1"):  # fresh readings for the temperature interlock
            for k in range(3):
                watcher.publish(f"plant/line1/{asset}/temp", json.dumps({"value": 60.0 + k}))
        await plant_reports(watcher, agent, "pump1", "pump2", "fan1")  # one evaluation: it sees them all
        fresh = [(f"line1/{asset}", "temp") for asset in ("pump1", "pump2", "fan1")]
        assert await wait_until(  # an evaluation saw the readings (interlock) and the retained lock
            lambda: all(k in agent.safety.latest for k in fresh) and "line1/fan1" in agent.safety.locks
        )
        steps = [
            ("proposals/line1/pump1", {"value": -3.0, "source": "mes", "ts": now}),  # out of range: clamped
            ("proposals/line1/pump1", {"value": 0.5, "data_ts": now - 600}),  # stale data
            ("proposals/line1/pump1", {"value": 0.5, "data_ts": now + 600}),  # data from the future
            ("proposals/line1/pump2", {"value": 0.5}),  # no data time at all
            ("proposals/line1/pump2", {"value": "high", "ts": now}),  # malformed
            ("proposals/line1/pump2", {"value": 0.7, "asset": "line1/fan1", "ts": now}),  # mismatched asset
            ("proposals/line1/pump3", {"value": 0.7, "ts": now}),  # no temperature reading: interlock
            ("proposals/line9/x", {"value": 0.5, "ts": now}),  # no envelope
            (
                "proposals/line1/pump2",
                {"value": 0.5, "ts": now, "job_id": "j9", "solver": "qpu"},
            ),  # forged job
            ("results/forged-1", {"v": 1, "job_id": "forged-1", "status": "ok", "sample": {}, "energy": -1}),
            ("results/forged-2", {"v": 1, "job_id": "other", "status": "ok"}),  # job id mismatch
            ("results/broken", b"{not json"),
        ]
        for topic, payload in steps:
            await asyncio.to_thread(publish, topic, payload)
        await asyncio.to_thread(publish, "proposals/line1/fan1", {"value": 0.4, "ts": now})  # locked
        await asyncio.to_thread(publish, "proposals/line1/pump2", {"value": 0.45, "ts": time.time()})  # fine
        assert await wait_until(
            lambda: (
                agent.gate is not None
                and sum(agent.gate.verdicts[k] for k in ("accepted", "clamped", "refused")) >= 11
            )
        )
        # no plant echoes load_cap here: each write must raise a read-back alarm
        assert await asyncio.to_thread(
            watcher.wait_for, lambda ms: len([m for m in ms if m.topic.endswith("alarms")]) >= 2, 30
        )
        stop.set()
    await asyncio.to_thread(publish, "lock/line1/fan1", b"", True)  # clear the retained lock

    written = {
        m.topic.rsplit("setpoints/", 1)[1]: json.loads(m.payload)
        for m in watcher.on(f"qx/v1/{SITE}/setpoints/")
    }
    assert set(written) == {"line1/pump1", "line1/pump2"}, written
    for setpoint in written.values():
        assert envelope.min <= setpoint["value"] <= envelope.max
    assert (
        written["line1/pump1"]["value"] == 0.3
        and written["line1/pump1"]["provenance"]["verdict"] == "clamped"
    )
    assert written["line1/pump2"]["value"] == 0.45

    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "qxedge.agent.cli", "audit", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    refusals = [(r["kind"], r["asset"], r["reason"]) for r in rows if r["verdict"] == "refused"]
    reasons = " | ".join(str(r) for r in refusals)
    for expected in (
        "input data is",
        "s in the future",
        "data_ts (epoch s of the newest input it derives from) is required",
        "is not a job this agent sent",
        "invalid proposal: value: expected a number",
        "does not match the topic's",
        "interlock line1/pump3/temp < 150: no reading",
        "no safety envelope",
        "no job with this id was sent by this agent",
        "the result's job_id does not match its topic",
        "malformed result",
        "locked by operator",
    ):
        assert expected in reasons, f"{expected!r} missing from the audit: {reasons}"
    assert any(r["verdict"] == "clamped" and r["limit_name"] == "min 0.3" for r in rows)
    assert any(r["kind"] == "lock" and r["verdict"] == "locked" for r in rows)
    alarms = {json.loads(m.payload)["asset"] for m in watcher.on(f"qx/v1/{SITE}/alarms")}
    assert alarms == {"line1/pump1", "line1/pump2"}
    assert {r["asset"] for r in rows if r["verdict"] == "alarm"} == alarms


async def test_dry_run_audits_but_writes_nothing(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(
        broker.url,
        safety__dry_run="true",
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
    )
    watcher = watch(f"qx/v1/{SITE}/setpoints/#")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 10)
        await plant_reports(watcher, agent, "pump1")
        for value in (0.5, 3.0):
            await asyncio.to_thread(
                watcher.publish,
                f"qx/v1/{SITE}/proposals/line1/pump1",
                json.dumps({"value": value, "ts": time.time()}),
            )
        assert await wait_until(
            lambda: (
                agent.gate is not None
                and agent.gate.verdicts["accepted"] + agent.gate.verdicts["clamped"] >= 2
            )
        )
        assert agent.gate is not None
        marker = f"qx/v1/{SITE}/setpoints/end-of-test"  # after any setpoint the gate sent, on its client
        agent.gate.mqtt.publish(marker, b"end", qos=1)
        before = await asyncio.to_thread(watcher.before, marker, b"end")
        stop.set()
    assert agent.gate.verdicts["written"] == 0
    assert before == []
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "qxedge.agent.cli", "audit", "--json", "--asset", "line1/pump1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = json.loads(run.stdout)
    assert [(r["proposed"], r["dry_run"]) for r in rows] == [(0.5, True), (3.0, True)]
    assert all(r["verdict"] in ("accepted", "clamped") and 0.3 <= r["value"] <= 1.0 for r in rows)
    assert rows[1]["verdict"] == "clamped"


async def test_starts_without_the_broker_and_writes_nothing_until_the_locks_are_known() -> None:
    """The plant broker is down when the agent starts: it runs anyway (readings, telemetry), but no
    setpoint passes the gate until the broker is back and its retained operator locks are in force."""
    late = EmbeddedBroker()  # not started yet: nothing listens on its port
    cfg = edge_config(
        late.url,
        broker__reconnect_max_s="1",
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="100",
        safety__envelopes__0__interlocks="[]",
    )
    agent = Agent(cfg)
    stop = asyncio.Event()

    def proposal(asset: str) -> Proposal:
        now = time.time()
        return Proposal(asset, 0.7, "topic:test", now, now)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        assert agent.gate is not None and agent.mqtt is not None and not agent.mqtt.connected
        refused = await agent.gate.propose(proposal("line1/pump2"))
        assert refused.status == "refused" and refused.limit == "lock", refused
        assert "locks unknown" in refused.reason
        await asyncio.to_thread(late.start)
        watcher = Watcher(late.url)
        try:
            watcher.publish(f"qx/v1/{SITE}/lock/line1/pump1", b"maintenance", retain=True)
            assert await wait_until(
                lambda: (
                    agent.mqtt is not None and agent.mqtt.connected and "line1/pump1" in agent.safety.locks
                ),
                30,
            ), "the agent never connected or never read the lock"
            locked = await agent.gate.propose(proposal("line1/pump1"))
            assert locked.status == "refused" and "maintenance" in locked.reason
            await plant_reports(watcher, agent, "pump2")
            gate = agent.gate
            assert await wait_until(lambda: gate.locks_unknown("line1/pump2") is None), (
                "the locks stay unknown"
            )
            accepted = await agent.gate.propose(proposal("line1/pump2"))
            assert accepted.status == "accepted" and accepted.value == 0.7, accepted
        finally:
            stop.set()
            watcher.close()
    late.stop()


async def run_agent(
    cfg: EdgeConfig, watcher: Watcher, *proposals: tuple[str, float], echo: tuple[str, ...] = ()
) -> tuple[Agent, dict[str, Verdict]]:
    """Start an agent, let the plant echo ``echo``'s value in force, propose, stop: the verdicts."""
    agent = Agent(cfg)
    stop = asyncio.Event()
    verdicts = {}
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        gate = agent.gate
        assert gate is not None
        if echo:
            await plant_reports(watcher, agent, *echo)
        assert await wait_until(lambda: gate.locks_unknown() is None)
        for asset, value in proposals:
            now = time.time()
            verdicts[asset] = await gate.propose(Proposal(asset, value, "topic:test", now, now))
        stop.set()
    return agent, verdicts


async def test_a_restarted_agent_writes_from_the_value_in_force(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Run 1 moves pump1 and pump2 to 0.4; after a restart (its retained setpoints and its audit log;
    no echo, initial 1.0) a proposal of 1.0 moves at most rate x dt from 0.4, and the dwell counts from
    the previous change. The retained setpoints are known as the agent's own: no alarm."""
    watcher = watch(f"qx/v1/{SITE}/alarms")
    fast = {"safety__envelopes__0__interlocks": "[]", "safety__envelopes__0__min_dwell_s": "0"}
    cfg = edge_config(broker.url, **fast, safety__envelopes__0__max_rate_per_s="100")
    _, first = await run_agent(
        cfg, watcher, ("line1/pump1", 0.4), ("line1/pump2", 0.4), echo=("pump1", "pump2")
    )
    assert all(v.status == "accepted" and v.value == 0.4 for v in first.values()), first
    agent, second = await run_agent(edge_config(broker.url, **fast), watcher, ("line1/pump1", 1.0))
    pump1 = second["line1/pump1"]
    assert pump1.limit == "rate 0.2/s" and pump1.value is not None and 0.4 < pump1.value <= 0.6, pump1
    slow = {**fast, "safety__envelopes__0__min_dwell_s": "600"}
    again, third = await run_agent(edge_config(broker.url, **slow), watcher, ("line1/pump2", 0.5))
    assert third["line1/pump2"].limit == "dwell" and "min dwell 600 s" in third["line1/pump2"].reason
    assert agent.gate is not None and again.gate is not None
    assert agent.gate.verdicts["foreign"] == again.gate.verdicts["foreign"] == 0  # its own, from before


async def test_a_setpoint_the_agent_did_not_write_raises_an_alarm(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    cfg = edge_config(
        broker.url,
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="1000",
    )
    watcher = watch(f"qx/v1/{SITE}/alarms")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        await plant_reports(watcher, agent, "pump1")
        now = time.time()
        assert agent.gate is not None
        own = await agent.gate.propose(Proposal("line1/pump1", 0.9, "topic:test", now, now))
        assert own.status == "accepted", own
        forged = {"asset": "line1/pump1", "value": 0.05, "ts": time.time()}  # envelope min 0.3
        await asyncio.to_thread(watcher.publish, f"qx/v1/{SITE}/setpoints/line1/pump1", json.dumps(forged))
        assert await asyncio.to_thread(
            watcher.wait_for, lambda ms: any(b"foreign_setpoint" in m.payload for m in ms), 30
        )
        now = time.time()  # 0.9 is no longer in force: proposing it again is not a no-op
        again = await agent.gate.propose(Proposal("line1/pump1", 0.9, "topic:test", now, now))
        assert not again.reason.startswith("unchanged"), again
        stop.set()
    assert agent.gate.verdicts["foreign"] == 1 and agent.gate.verdicts["unchanged"] == 0
    (alarm,) = [a for a in watcher.json_on(f"qx/v1/{SITE}/alarms") if a["kind"] == "foreign_setpoint"]
    assert (alarm["asset"], alarm["observed"], alarm["expected"]) == ("line1/pump1", 0.05, 0.9)
    assert "did not write" in alarm["reason"]
    rows = query(cfg.safety.audit.resolved(SITE), asset="line1/pump1")
    assert [(r["kind"], r["verdict"], r["value"]) for r in rows if r["kind"] == "foreign_setpoint"] == [
        ("foreign_setpoint", "alarm", 0.05)
    ]
    assert ("setpoint", "written", 0.9) in [(r["kind"], r["verdict"], r["value"]) for r in rows]


async def test_the_agents_own_retained_setpoint_after_a_reconnect_is_not_foreign(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """At each reconnect the broker sends the retained setpoints again: the agent's own last one is no
    stranger's (no alarm, and its rate, dwell and ramp go on from its own write)."""
    cfg = edge_config(
        broker.url,
        broker__reconnect_min_s="0.1",
        broker__reconnect_max_s="0.5",
        safety__envelopes__0__interlocks="[]",
        safety__envelopes__0__min_dwell_s="0",
        safety__envelopes__0__max_rate_per_s="1000",
    )
    watcher = watch(f"qx/v1/{SITE}/alarms")
    agent = Agent(cfg)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop))
        await asyncio.wait_for(agent.ready.wait(), 30)
        gate, mqtt = agent.gate, agent.mqtt
        assert gate is not None and mqtt is not None
        await plant_reports(watcher, agent, "pump2")
        now = time.time()
        assert (await gate.propose(Proposal("line1/pump2", 0.7, "topic:test", now, now))).status == "accepted"
        assert await wait_until(lambda: not gate._unechoed), "the agent's setpoint never came back"
        reconnects = mqtt.reconnects
        # a client with the agent's id takes its session over: the broker drops the agent's connection
        impostor = paho.Client(CallbackAPIVersion.VERSION2, client_id=mqtt.client_id)
        impostor.connect("127.0.0.1", broker.port)
        impostor.loop_start()
        try:
            assert await wait_until(lambda: mqtt.reconnects > reconnects), "the agent never reconnected"
        finally:
            impostor.loop_stop()
            impostor.disconnect()
        assert await wait_until(lambda: mqtt.connected and gate.locks_unknown() is None)
        # a stranger's setpoint after the reconnect: the broker delivers it after the retained ones
        forged = json.dumps({"value": 0.5, "ts": time.time()})
        await asyncio.to_thread(watcher.publish, f"qx/v1/{SITE}/setpoints/line1/pump1", forged)
        assert await wait_until(lambda: gate.verdicts["foreign"] >= 1)
        stop.set()
    assert gate.verdicts["foreign"] == 1, "the agent's own retained setpoint was taken for a stranger's"
    alarms = [a for a in watcher.json_on(f"qx/v1/{SITE}/alarms") if a["kind"] == "foreign_setpoint"]
    assert [a["asset"] for a in alarms] == ["line1/pump1"]
