"""The agent's /status, ``qxedge status``, its per-asset gauges and the console's lock requests, against
a live plant (a private broker, the simulated plant, the agent)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qxedge.agent.audit import query
from qxedge.agent.cli import main
from qxedge.testing import Watcher, wait_until_sync
from qxedge.testing.console import LivePlant

pytestmark = pytest.mark.integration
TOKEN = "console-token-for-tests-0123"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post(url: str, doc: object, token: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(doc).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def status(plant: LivePlant) -> dict[str, Any]:
    code, body = get(plant.url + "/status")
    assert code == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def asset(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next((a for a in doc["assets"] if a["asset"] == name), {})  # {}: not seen yet


@pytest.fixture(scope="module")
def plant() -> Iterator[LivePlant]:
    with LivePlant(token=TOKEN, ops__max_streams="1") as live:
        yield live


def test_status_shows_each_asset_live(plant: LivePlant) -> None:
    assert wait_until_sync(
        lambda: "anomaly" in asset(status(plant), "line1/pump1").get("scores", {}), within_s=30
    ), "the pump is never scored"
    doc = status(plant)
    assert doc["v"] == 1 and doc["site"] == "demo" and doc["ready"] is True
    assert doc["connectors"][0] == {**doc["connectors"][0], "name": "mqtt", "health": "up"}
    pump = asset(doc, "line1/pump1")
    assert set(pump["readings"]) >= {"temp", "power", "vibration"}
    assert pump["thresholds"] == {"anomaly": 4.0} and pump["lock"] is None and pump["envelope"] is True
    assert doc["outbox"]["broker_unacked"] >= 0 and doc["offload"]["configured"] is True
    first = pump["ts"]
    assert wait_until_sync(lambda: asset(status(plant), "line1/pump1")["ts"] > first, within_s=10)


def test_qxedge_status_prints_the_table_and_the_json(
    plant: LivePlant, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", plant.url]) == 0
    text = capsys.readouterr().out
    assert (
        "agent demo" in text and "ready" in text and "line1/pump1" in text and "connectors: mqtt up" in text
    )
    assert main(["status", "--url", plant.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["site"] == "demo"


def test_qxedge_status_says_clearly_when_no_agent_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qxedge: error: no agent answers at http://127.0.0.1:9/status") and "ops:" in err


def test_metrics_carry_per_asset_scores_and_setpoints(plant: LivePlant) -> None:
    watcher = Watcher(plant.broker.url, "qx/v1/demo/setpoints/#")
    try:  # a setpoint written through the envelope, so that the setpoint gauge has a series
        watcher.publish("qx/v1/demo/proposals/line1/fan1", json.dumps({"value": 0.9, "data_ts": time.time()}))
        assert watcher.wait_for(lambda ms: any(m.topic.endswith("line1/fan1") for m in ms), timeout=20)
    finally:
        watcher.close()

    def families() -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(get(plant.url + "/metrics")[1])}

    assert wait_until_sync(lambda: families()["qxedge_asset_setpoint"].samples, within_s=10)
    found = families()
    scores = {(s.labels["asset"], s.labels["model"]) for s in found["qxedge_asset_score"].samples}
    assert ("line1/pump1", "anomaly") in scores
    assert all(a.startswith("line1/") for a, _ in scores)  # only assets the model's patterns name
    (fan,) = [s for s in found["qxedge_asset_setpoint"].samples if s.labels["asset"] == "line1/fan1"]
    assert fan.value == 0.9
    setpoint = asset(status(plant), "line1/fan1")["setpoint"]
    assert setpoint["value"] == 0.9 and setpoint["source"] == "topic:unknown"


def test_a_lock_needs_the_token_goes_through_the_lock_topic_and_is_audited(plant: LivePlant) -> None:
    url = plant.url + "/api/locks/line1/pump2"
    doc = {"locked": True, "by": "j.kim", "reason": "bearing inspection"}
    assert post(url, doc)[0] == 401
    assert post(url, doc, "wrong-token-0123456789")[0] == 401
    assert post(url, {"locked": "yes", "by": "j.kim"}, TOKEN)[0] == 400
    assert post(plant.url + "/api/locks/line1/+", doc, TOKEN)[0] == 400
    watcher = Watcher(plant.broker.url, "qx/v1/demo/lock/#")
    try:
        code, body = post(url, doc, TOKEN)
        assert code == 200, body
        assert watcher.wait_for(lambda ms: any(m.topic.endswith("lock/line1/pump2") for m in ms), timeout=10)
        (message,) = watcher.on("qx/v1/demo/lock/line1/pump2")
        assert json.loads(message.payload) == {
            **doc,
            "by": "console:j.kim",
            "ts": json.loads(message.payload)["ts"],
        }
    finally:
        watcher.close()
    assert asset(status(plant), "line1/pump2")["lock"] == {"by": "console:j.kim"}
    assert plant.agent is not None and plant.agent.gate is not None
    rows = query(plant.agent.gate.audit.path, asset="line1/pump2", kind="lock")
    verdicts = [(r["verdict"], r["source"]) for r in rows]
    assert ("refused", "console") in verdicts and ("requested", "console") in verdicts
    assert ("locked", None) in verdicts
    requested = next(r for r in rows if r["verdict"] == "requested")
    assert (
        requested["provenance"]["by"] == "console:j.kim" and requested["provenance"]["remote"] == "127.0.0.1"
    )
    code, body = post(url, {**doc, "locked": False}, TOKEN)
    assert code == 200, body
    assert asset(status(plant), "line1/pump2")["lock"] is None


def test_events_stream_the_status_and_are_capped(plant: LivePlant) -> None:
    with urllib.request.urlopen(plant.url + "/events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.readline() == b"event: status\n"
        assert json.loads(stream.readline().removeprefix(b"data: "))["site"] == "demo"
        code, body = get(plant.url + "/events")  # ops.max_streams = 1
        assert code == 503 and "max_streams" in body
        assert get(plant.url + "/healthz") == (200, "ok\n")


def test_the_audit_trail_is_searchable(plant: LivePlant) -> None:
    code, body = get(plant.url + "/api/audit?text=bearing&limit=50")
    assert code == 200
    rows = json.loads(body)["rows"]
    assert rows and all("bearing" in json.dumps(r).lower() for r in rows)
    assert get(plant.url + "/api/audit?limit=0")[0] == 400
    assert get(plant.url + "/api/audit?kind=lock&asset=line1/pump2")[0] == 200


def test_a_console_without_a_token_is_read_only() -> None:
    with LivePlant() as plant:
        code, body = post(plant.url + "/api/locks/line1/pump1", {"locked": True, "by": "x"}, TOKEN)
        assert code == 403 and "read-only" in body
        assert status(plant)["console"] == {"locks": False}
        assert get(plant.url + "/")[0] == 200
