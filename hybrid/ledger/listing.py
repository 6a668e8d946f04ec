"""``qxedge jobs``: what the ledger holds, as text for a person or as one JSON document."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from qxedge.hybrid.ledger.protocol import JobLedger, JobRow, UsageRow


async def read(
    ledger: JobLedger, *, site: str | None, since: float | None, limit: int | None
) -> tuple[list[JobRow], list[UsageRow]]:
    """The jobs (newest last, the last ``limit``) and the per-site usage from ``since``'s day on."""
    return await ledger.jobs(site=site, since=since, limit=limit), await ledger.usage(site=site, since=since)


def as_json(jobs: list[JobRow], usage: list[UsageRow]) -> str:
    return json.dumps({"jobs": [j.as_dict() for j in jobs], "usage": [u.as_dict() for u in usage]})


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_text(where: str, jobs: list[JobRow], usage: list[UsageRow]) -> str:
    lines = [f"{where}: {len(jobs)} job(s)"]
    if jobs:
        lines.append(
            f"{'claimed (UTC)':<24} {'site':<16} {'job':<36} {'status':<8} {'solver':<13} "
            f"{'solver-s':>8}  worker"
        )
    for j in jobs:
        status = j.status or "solving"
        seconds = "-" if j.solver_seconds is None else f"{j.solver_seconds:.3f}"
        taken = f" (taken over x{j.takeovers})" if j.takeovers else ""
        lines.append(
            f"{_when(j.claimed_at):<24} {j.site:<16} {j.job_id:<36} {status:<8} {j.solver or '-':<13} "
            f"{seconds:>8}  {j.worker}{taken}"
        )
    lines.append("")
    lines.append(f"usage by site: {len(usage)} site(s)")
    if usage:
        lines.append(
            f"{'site':<16} {'jobs':>7} {'ok':>7} {'late':>6} {'rejected':>8} {'error':>6} "
            f"{'on time':>8} {'solver-s':>10}  wins"
        )
    for u in usage:
        on_time = "-" if math.isnan(u.on_time) else f"{100 * u.on_time:.1f}%"
        wins = ", ".join(f"{solver} {n}" for solver, n in sorted(u.wins.items(), key=lambda w: -w[1]))
        s = u.statuses
        lines.append(
            f"{u.site:<16} {u.jobs:>7} {s.get('ok', 0):>7} {s.get('late', 0):>6} "
            f"{s.get('rejected', 0):>8} {s.get('error', 0):>6} {on_time:>8} {u.solver_seconds:>10.3f}  "
            f"{wins or '-'}"
        )
    return "\n".join(lines)
