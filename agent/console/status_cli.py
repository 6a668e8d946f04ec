"""``qxedge status``: the status document of a running agent (``GET /status``), as a table or JSON.

Exit status: 0 when the agent answered, 1 when no agent answers at the address (or it answers with
something other than a status document).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def fetch_status(url: str, timeout_s: float) -> dict[str, Any]:
    """The document at ``url``/status; ValueError saying why there is none."""
    target = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as answer:
            body = answer.read(16 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        raise ValueError(
            f"{target} answered {exc.code} {exc.reason}: is it a qxedge agent with its console on?"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise ValueError(
            f"no agent answers at {target} ({why}): is `qxedge run` running, with an ops: section "
            "(host, port) matching --config / --url?"
        ) from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError(f"{target} did not answer JSON: not a qxedge agent's status") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("assets"), list):
        raise ValueError(f"{target} answered JSON that is not a status document (schema v1)")
    return doc


def show_status(url: str, as_json: bool, timeout_s: float) -> int:
    try:
        doc = fetch_status(url, timeout_s)
    except ValueError as exc:
        print(f"qxedge: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc) if as_json else "\n".join(lines(doc)))
    return 0


def _n(x: object) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def lines(doc: dict[str, Any]) -> list[str]:
    """The document as text for a terminal."""
    now = time.time()
    ready = "ready" if doc["ready"] else f"NOT READY ({doc['not_ready']})"
    broker = doc["broker"]
    out = [
        f"agent {doc['site']} (qxedge {doc['version']}): {ready}, up {now - doc['started_at']:.0f} s",
        f"broker {broker['url']}: {'connected' if broker['connected'] else 'DISCONNECTED'}"
        f" ({broker['reconnects']} reconnects)",
    ]
    if doc.get("uplink"):
        up = doc["uplink"]
        out.append(f"uplink {up['url']}: {'connected' if up['connected'] else 'DISCONNECTED'}")
    out.append("connectors: " + ", ".join(f"{c['name']} {c['health']}" for c in doc["connectors"]))
    box = doc["outbox"]
    alarm = ", ALARM" if box["alarm"] else ""
    out.append(f"outbox: {box['broker_unacked']} unacknowledged by the broker, {box['stored']} stored{alarm}")
    off = doc["offload"]
    if off.get("configured"):
        out.append(
            f"data center: {off.get('answered', 0)} of {off.get('jobs', 0)} jobs answered, "
            f"{off.get('fallbacks', 0)} local fallbacks, {off.get('late', 0)} late results"
            + (f"; NOT ANSWERING, {off.get('unanswered', 0)} fallbacks in a row" if off.get("silent") else "")
        )
    else:
        out.append("data center: offload not configured")
    rows = [("ASSET", "SCORES", "READINGS", "SETPOINT", "SINCE", "SOURCE", "LOCK")]
    for a in doc["assets"]:
        scores = " ".join(
            f"{m}={_n(v)}" + ("!" if v > a["thresholds"].get(m, float("inf")) else "")
            for m, v in a["scores"].items()
        )
        readings = " ".join(f"{k}={_n(v)}" for k, v in sorted(a["readings"].items()))
        sp = a["setpoint"] or {}
        since = f"{now - sp['ts']:.0f}s ago" if sp else "-"
        lock = f"locked ({a['lock']['by']})" if a["lock"] else "-"
        rows.append(
            (
                a["asset"],
                scores or "-",
                readings or "-",
                _n(sp.get("value")),
                since,
                sp.get("source", "-"),
                lock,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out.append("")
    out.extend("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    if doc.get("assets_not_shown"):
        out.append(f"({doc['assets_not_shown']} more assets not kept by the console)")
    return out
