"""The status document of a running agent: what ``GET /status`` answers, ``qxedge status`` prints and
the console draws (its live updates are the same document, pushed).

Schema version 1 (``"v": 1``); a JSON object:

- ``site``, ``version``, ``ts`` (epoch s), ``started_at``, ``ready`` (bool) and ``not_ready`` (why not);
- ``broker`` and ``uplink``: ``url`` (no credentials), ``connected``; ``reconnects``;
- ``connectors``: ``[{name, kind, health: "up" | "down" | "unknown", detail}]``: the plant broker's
  MQTT ingest, then each ``connectors:`` entry;
- ``assets``: one object per asset, sorted by name: ``readings`` (signal -> newest value), ``scores``
  (model -> newest score), ``thresholds`` (model -> the ``above`` of the first rule on that model),
  ``alarm`` (a score above its threshold), ``ts`` (its newest evaluation), ``setpoint`` (``value``,
  ``ts``, ``source``, ``provenance``; or null) and ``lock`` (``by``: who / why; or null);
- ``outbox``: ``broker_unacked``, ``stored``, ``alarm``;
- ``offload``: ``configured``, the client's counters (``jobs``, ``results``, ``fallbacks``, ...),
  ``answered`` (jobs the data center answered in time) and ``recent`` (the production day's newest
  jobs: ``job_id``, ``solver``, ``source`` datacenter | fallback, ``seconds``, ``feasible``);
- ``counts``: readings, dead letters, evaluations, setpoint verdicts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from qxedge import __version__
from qxedge.core.config import redact_url

if TYPE_CHECKING:
    from qxedge.agent.console.live import LiveView
    from qxedge.agent.pipeline import Agent

RECENT_JOBS = 20
SCHEMA = 1


def status(agent: Agent, live: LiveView | None, started_at: float) -> dict[str, Any]:
    """The status document (above) as of now; reads the agent's snapshots, changes nothing."""
    stats = agent.stats()
    cfg = agent.config
    mqtt = agent.mqtt
    connected = mqtt is not None and mqtt.connected
    not_ready = None
    if not connected:
        not_ready = f"not connected to the broker at {redact_url(cfg.broker.url)}"
    elif not agent.ready.is_set():
        not_ready = "starting"
    uplink = None
    if cfg.uplink is not None:
        link = agent.uplink
        uplink = {"url": redact_url(cfg.uplink.url), "connected": link is not None and link.connected}
    offload: dict[str, Any] = {"configured": agent.offload is not None}
    if agent.offload is not None:
        counts = agent.offload.stats
        offload.update({k: int(v) for k, v in counts.items()})
        offload["answered"] = int(counts.get("jobs", 0) - counts.get("fallbacks", 0))
        offload["silent"] = agent.offload.silent  # offload.alarm_after fallbacks in a row
        offload["unanswered"] = agent.offload.unanswered
    day = agent.day
    recent = list(day.jobs)[-RECENT_JOBS:] if day is not None else []
    offload["recent"] = [dataclasses.asdict(job) for job in reversed(recent)]
    return {
        "v": SCHEMA,
        "site": agent.site,
        "version": __version__,
        "ts": time.time(),
        "started_at": started_at,
        "ready": not_ready is None,
        "not_ready": not_ready,
        "broker": {
            "url": redact_url(cfg.broker.url),
            "connected": connected,
            "reconnects": stats.broker_reconnects,
        },
        "uplink": uplink,
        "connectors": connectors(agent),
        "assets": assets(agent, live),
        "assets_not_shown": live.ignored if live is not None else 0,
        "outbox": {
            "broker_unacked": stats.broker_unacked,
            "stored": stats.outbox_stored,
            "alarm": stats.outbox_alarm,
        },
        "offload": offload,
        "counts": {
            "readings": stats.readings,
            "deadletters": stats.deadletters,
            "evaluations": stats.evaluations,
            "verdicts": dict(stats.verdicts),
        },
    }


def connectors(agent: Agent) -> list[dict[str, Any]]:
    """Each reading source and its health: the MQTT ingest is up while the plant broker is; a
    connector with ``connected`` (an asyncio.Event or a bool) or devices that have one says so."""
    mqtt = agent.mqtt
    out = [
        {
            "name": "mqtt",
            "kind": "mqtt ingest (plant broker)",
            "health": "up" if mqtt is not None and mqtt.connected else "down",
            "detail": redact_url(agent.config.broker.url),
        }
    ]
    for connector in agent.plant:
        name = str(getattr(connector, "name", type(connector).__name__))
        kind = type(connector).__name__
        health, detail = "unknown", ""
        devices = getattr(connector, "devices", None)
        if isinstance(devices, dict) and devices:
            up = sum(1 for device in devices.values() if _up(getattr(device, "connected", None)))
            health = "up" if up == len(devices) else "down"
            detail = f"{up}/{len(devices)} devices connected"
        else:
            state = _up(getattr(connector, "connected", None))
            if state is not None:
                health = "up" if state else "down"
        out.append({"name": name, "kind": kind, "health": health, "detail": detail})
    return out


def _up(flag: object) -> bool | None:
    if isinstance(flag, asyncio.Event):
        return flag.is_set()
    if isinstance(flag, bool):
        return flag
    return None


def assets(agent: Agent, live: LiveView | None) -> list[dict[str, Any]]:
    """Every asset the agent knows: seen in an evaluation, written, on record, or locked."""
    gate = agent.gate
    safety = agent.safety
    latest = live.latest if live is not None else {}
    names = set(latest) | set(safety.commanded) | set(safety.locks)
    if gate is not None:
        names |= set(gate.current)
    thresholds: dict[str, float] = {}
    for rule in agent.rules:
        thresholds.setdefault(rule.config.model, rule.config.above)
    out = []
    for asset in sorted(names):
        ts, metrics = latest.get(asset, (None, {}))
        readings, scores = {}, {}
        for key, value in metrics.items():
            if key.startswith("score/"):
                scores[key.removeprefix("score/")] = value
            elif key != "setpoint":
                readings[key] = value
        limits = {
            m: thresholds[m] for m, model in agent.models.items() if m in thresholds and model.covers(asset)
        }
        env = safety.envelope(asset)
        lock = safety.locks.get(asset)
        if lock is None and env is not None and env.locked:
            lock = "config (safety.envelopes[].locked)"
        out.append(
            {
                "asset": asset,
                "ts": ts,
                "readings": readings,
                "scores": scores,
                "thresholds": limits,
                "alarm": any(scores.get(m, 0.0) > above for m, above in limits.items()),
                "setpoint": setpoint(agent, asset),
                "lock": None if lock is None else {"by": lock},
                "envelope": env is not None,
            }
        )
    return out


def setpoint(agent: Agent, asset: str) -> dict[str, Any] | None:
    """The value in force: the agent's own last write (with its provenance), else the command on
    record (the audit log's last write at start, the retained setpoint, or a setpoint the agent did not
    write), else None."""
    gate = agent.gate
    written = gate.in_force.get(asset) if gate is not None else None
    commanded = agent.safety.commanded.get(asset)
    if written is not None and (commanded is None or commanded[1] <= written.ts + 1e-6):
        provenance = dict(written.provenance)
        return {
            "value": written.value,
            "ts": written.ts,
            "source": str(provenance.get("source", "?")),
            "provenance": provenance,
        }
    if commanded is not None:
        return {
            "value": commanded[0],
            "ts": commanded[1],
            "source": "on record",
            "provenance": {
                "note": "learned: the audit log's last write, the retained setpoint or a foreign one"
            },
        }
    return None
