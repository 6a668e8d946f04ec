"""Config reload (SIGHUP): models, rules and safety envelopes, validated before anything changes.

``qxedge run`` loads the config file again (environment overrides and ``--broker`` as at start) and
checks it whole, every model loaded (``check-config``'s checks), in a worker thread. A config that fails
changes nothing: the agent runs on with the one it has, and says why (a log line per problem, an alarm
on ``qx/v1/{site}/alarms``, an audit row ``config refused``). A good one is applied between two
evaluations, on the loop:

- ``models``: an entry whose config is unchanged keeps its model in force (a deployed one too); a
  changed or new entry gets its ONNX Runtime session (built beforehand, off the loop), and a removed
  one goes, with any candidate of its name;
- ``rules``: rebuilt; a rule of the same name and model carries on with its assets' state (derated or
  not, the streak);
- ``safety``: the envelopes, ``dry_run``, ``max_input_age_s``, ``max_clock_skew_s``; what the agent
  knows of each asset (values in force, ramps, read-backs, locks) stays.

The feature window is not touched (its readings stay), and no evaluation is skipped. Other sections
need a restart: a reload that changes them applies the three above and names the others in its log
line and audit row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from qxedge.agent.audit import AuditLog
from qxedge.agent.config import EdgeConfig
from qxedge.agent.decisions import DerateRule
from qxedge.agent.inference import OnnxModel
from qxedge.connectors.mqtt import MqttClient
from qxedge.core.errors import ConfigError, ModelError, Problem

if TYPE_CHECKING:
    from qxedge.agent.pipeline import Agent

log = logging.getLogger(__name__)

RELOADABLE = ("models", "rules", "safety")


def restart_needed(old: EdgeConfig, new: EdgeConfig) -> list[str]:
    """The sections that differ but are not reloaded."""
    out = [k for k in EdgeConfig.model_fields if k not in RELOADABLE and getattr(old, k) != getattr(new, k)]
    if old.safety.audit != new.safety.audit:
        out.append("safety.audit")
    return out


def _sessions(old: EdgeConfig, new: EdgeConfig) -> dict[str, OnnxModel]:
    """The sessions of the new or changed model entries (off the loop); ConfigError naming each failure."""
    before = {m.name: m for m in old.models}
    made, problems = {}, []
    for i, m in enumerate(new.models):
        if before.get(m.name) == m:
            continue
        try:
            made[m.name] = OnnxModel(m)
        except ModelError as exc:
            problems.append(Problem(f"models[{i}]", str(exc)))
    if problems:
        raise ConfigError(problems)
    return made


async def reload(
    agent: Agent, load: Callable[[], EdgeConfig], audit: AuditLog, mqtt: MqttClient | None
) -> bool:
    """Load, validate and apply the config; False (and the old config running) when it is refused."""
    old = agent.config
    try:
        new = await asyncio.to_thread(load)
        if new.site != old.site:
            raise ConfigError([Problem("site", f"{new.site!r}: the site cannot change without a restart")])
        if new.window != old.window:
            raise ConfigError(
                [Problem("window", "the feature window cannot change without a restart (its readings)")]
            )
        sessions = await asyncio.to_thread(_sessions, old, new)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        reason = "config reload refused, the running config stays: " + "; ".join(problems)
        log.error("%s", "\n  ".join([reason.split(": ")[0] + f" ({exc.source or 'config'}):", *problems]))
        audit.record("config", "refused", source="sighup", reason=reason, provenance={"problems": problems})
        if mqtt is not None:
            doc = {"asset": None, "kind": "config", "reason": reason, "ts": time.time()}
            mqtt.publish(agent.topic("alarms"), json.dumps(doc), qos=1)
        return False
    # from here on, on the loop and without an await: between two evaluations
    later = restart_needed(old, new)
    changed = set(sessions)
    kept = {m.name: agent.models[m.name] for m in new.models if m.name not in changed}
    for model in sessions.values():
        agent.put_model(model)
    agent.models = {m.name: sessions.get(m.name) or kept[m.name] for m in new.models}
    if agent.deployer is not None:  # a changed entry's candidate goes (the config decides now)
        agent.deployer.reconfigured(list(new.models), changed)
    old_rules = {(r.config.name, r.config.model): r for r in agent.rules}
    rules = []
    for cfg in new.rules:
        rule = DerateRule(cfg)
        if (before := old_rules.get((cfg.name, cfg.model))) is not None:
            rule.adopt(before)
        rules.append(rule)
    agent.rules = rules
    safety = new.safety.model_copy(update={"audit": old.safety.audit})
    agent.safety.reconfigure(safety)
    agent.config = old.model_copy(update={"models": new.models, "rules": new.rules, "safety": safety})
    digest = hashlib.sha256(agent.config.model_dump_json().encode()).hexdigest()[:16]
    agent.config_hash = audit.config_hash = digest
    what = [s for s in RELOADABLE if getattr(old, s) != getattr(agent.config, s)]
    reason = f"reloaded {', '.join(what) or 'nothing (no change)'}"
    if changed:
        reason += f"; new sessions for {', '.join(sorted(changed))}"
    if later:
        reason += f"; not applied until a restart: {', '.join(later)}"
    audit.record("config", "reloaded", source="sighup", reason=reason, provenance={"config_hash": digest})
    (log.warning if later else log.info)("config %s", reason)
    return True
