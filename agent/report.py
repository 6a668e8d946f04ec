"""``qxedge demo --report DIR``: ``summary.json`` and ``day.png`` (baseline against optimised).

The plot has two panels over the day's slots: the plant's mean power per slot for both runs against the
contracted peak (slot prices shaded behind), and the energy cost per slot. matplotlib comes with the
``report`` extra; without it the summary is written and the plot is skipped with a clear message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qxedge.core.errors import QxError


class ReportError(QxError):
    """The report could not be written (a missing plotting library, an unwritable folder)."""


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take the report (checked before the demo runs), or None."""
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} exists and is not a folder (the report is a folder: summary.json, day.png)"
        return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder}: no permission to write there"
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {folder}: {parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot create {folder}: {parent} is read-only"


def write_report(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``summary.json`` (and ``day.png`` for a production day); ReportError says why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "summary.json"]
        written[0].write_text(json.dumps(summary, indent=2) + "\n")
        if "baseline" in summary and "optimised" in summary:
            written.append(plot_day(summary["baseline"], summary["optimised"], folder / "day.png"))
    except OSError as exc:
        where = exc.filename or folder
        raise ReportError(f"cannot write the report: {where}: {exc.strerror or exc}") from exc
    return written


def plot_day(baseline: dict[str, Any], optimised: dict[str, Any], path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError("the plot needs matplotlib: pip install 'qxedge[report]'") from exc
    slots = [s["slot"] for s in baseline["slots"]]
    fig, (power, cost) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=[3, 2])
    prices = [s["price"] for s in baseline["slots"]]
    top = max(max(prices), 1e-9)
    for t, price in zip(slots, prices, strict=True):  # the tariff period behind the power curves
        power.axvspan(t - 0.5, t + 0.5, color="tab:red", alpha=0.18 * max(price, 0.0) / top, lw=0)
    power.step(
        slots,
        [s["cap_kw"] for s in baseline["slots"]],
        where="mid",
        color="black",
        ls="--",
        label="contracted peak",
    )
    for name, run, colour in (("baseline", baseline, "tab:orange"), ("optimised", optimised, "tab:blue")):
        power.step(
            slots,
            [s["kw"] for s in run["slots"]],
            where="mid",
            color=colour,
            lw=2,
            label=f"{name}: peak {run['peak_kw']:.0f} kW, over the cap in {run['cap_violations']} slots",
        )
    power.set_ylabel("plant power, mean kW per slot")
    power.legend(loc="upper left", fontsize=8)
    power.set_title("Production day: baseline controller against the optimised schedule (shading: tariff)")
    width = 0.4
    for offset, (name, run, colour) in zip(
        (-width / 2, width / 2),
        (("baseline", baseline, "tab:orange"), ("optimised", optimised, "tab:blue")),
        strict=True,
    ):
        cost.bar(
            [t + offset for t in slots],
            [s["cost"] for s in run["slots"]],
            width,
            color=colour,
            label=f"{name}: {run['energy_cost']:,.0f} in all, {run['unmet_runs']} unmet runs",
        )
    cost.set_ylabel("energy cost per slot")
    cost.set_xlabel("slot (hour of the day)")
    cost.set_xticks(slots)
    cost.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
