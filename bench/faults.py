"""Fault runs with real processes, longer than the test suite's: each prints what was sent, received,
duplicated and lost, counted by telemetry sequence number at the upstream side.

    .venv/bin/python -m bench.faults [--outage-s 10] [--only broker,agent,history,workers,disk,slow]
                                     [--confirm upstream|broker]

- ``broker``: ``qxedge run`` streams telemetry (two assets, a record each every 20 ms) through its outbox;
  mosquitto is killed with SIGKILL for ``--outage-s`` and restarted on the same port (persistence on).
  Also prints how long after the broker's restart the upstream side had every record the agent had
  stored before it (``caught up``), beside the agent's reconnect backoff cap (the baseline). The upstream
  side confirms what it receives (``outbox: {confirm: upstream}``); with ``--confirm broker`` the agent
  trusts the broker's PUBACK instead, and the records mosquitto acknowledged in the moment of the kill
  (it saves them only every second) are lost in 2 of 6 runs.
- ``agent``: the agent is killed with SIGKILL mid-stream and restarted; nothing it had accepted (committed
  to its outbox) may be missing.
- ``history``: the history upstream counted in readings, not records: a plant (its own broker, which
  stays up) publishes readings that the agent sends in batches to ``qxedge historian``; the data-center
  broker, the historian and the agent are each killed with SIGKILL mid-stream and started again
  (:func:`qxedge.testing.history.kill_run`). Prints the readings produced, the rows in the Parquet,
  duplicates (none: redeliveries are de-duplicated by seq) and the readings lost around the agent's kill
  (those accepted in the last ``outbox.flush_ms``, not on disk yet, and those published while no agent
  listened); every reading in the agent's history journal at its kill must be in the Parquet.
- ``workers`` / ``disk`` / ``slow``: the test suite's scenarios
  (``tests/integration/test_reliability.py``), run here with their
  printed counts: every solver worker down, the outbox's disk full, a lagging subscriber.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.testing.bench_results import Results, Table, add_save_option
from qxedge.testing.faults import CONFIRM, Plant, SeqCounter, agent_config, broker_saved, start_agent
from qxedge.testing.history import kill_run

RESENT = re.compile(r"sending (\d+) records again")


def at_least(n: int, seqs: Counter[int]) -> bool:
    return len(seqs) >= n


def committed(outbox: Path) -> int:
    """The next telemetry sequence number on disk: every record below it was accepted."""
    with sqlite3.connect(outbox) as db:
        row = db.execute("SELECT next_seq FROM streams WHERE name = 'telemetry'").fetchone()
    return int(row[0]) if row else 0


def broker_outage(outage_s: float, confirm: str, table: Table) -> bool:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(persistence=True) as broker:
        work = Path(tmp)
        cfg = agent_config(work, broker.url, reconnect_max_s=5.0, confirm=confirm)
        counter = SeqCounter(broker.url, confirm_topic=CONFIRM if confirm == "upstream" else None)
        broker_saved(broker, time.time())
        plant = Plant(broker.url)
        agent = start_agent(cfg, work / "agent.log")
        try:
            counter.wait_for(lambda seqs: len(seqs) >= 200)
            broker.kill()
            killed_at = committed(work / "outbox.sqlite")
            time.sleep(outage_s)
            before = committed(work / "outbox.sqlite")
            broker.start()
            restarted = time.monotonic()
            ok = counter.wait_for(lambda seqs: all(s in seqs for s in range(before)), 60)
            caught_up = time.monotonic() - restarted
            counter.wait_for(lambda seqs: max(seqs) >= before + 200, 30)
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            sent = committed(work / "outbox.sqlite")
            counter.wait_for(lambda seqs: all(s in seqs for s in range(sent)), 30)
            print(
                f"  stored during the {outage_s:g} s outage: {before - killed_at} records; caught up "
                f"{caught_up:.2f} s after the broker restarted (ratio to the 5 s backoff cap: "
                f"{caught_up / 5.0:.2f})"
            )
            resent = sum(int(n) for n in RESENT.findall((work / "agent.log").read_text(errors="replace")))
            print(f"  sent again by the agent (not confirmed upstream): {resent} records")
            name = f"broker kill -9 for {outage_s:g} s, confirm: {confirm}"
            received, duplicated, lost = counter.report(name, sent)
            table.add(name, sent, received, duplicated, lost, before - killed_at, caught_up, resent)
            return ok and lost == 0
        finally:
            if agent.poll() is None:
                agent.kill()
            plant.close()
            counter.close()


def agent_crash(rounds: int, table: Table) -> bool:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        cfg = agent_config(work, broker.url)
        counter = SeqCounter(broker.url)
        plant = Plant(broker.url)
        agent = start_agent(cfg, work / "agent.log")
        try:
            for i in range(rounds):
                counter.wait_for(functools.partial(at_least, 150 * (i + 1)), 60)
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait()
                agent = start_agent(cfg, work / "agent.log")
            counter.wait_for(lambda seqs: len(seqs) >= 150 * (rounds + 1), 60)
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            sent = committed(work / "outbox.sqlite")
            counter.wait_for(lambda seqs: all(s in seqs for s in range(sent)), 30)
            received, duplicated, lost = counter.report(f"agent kill -9 x{rounds}", sent)
            table.add(f"agent kill -9 x{rounds}", sent, received, duplicated, lost, None, None, None)
            return lost == 0
        finally:
            if agent.poll() is None:
                agent.kill()
            plant.close()
            counter.close()


def history(outage_s: float, table: Table) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        run = kill_run(Path(tmp), outage_s, period_s=0.001)
    batches, top, rows = run.ledger
    print(f"  {run.count}")
    print(
        f"  batches: committed by the agent {run.committed}, in the historian's ledger {batches} (highest "
        f"seq + 1: {top}); sent again by the agent {run.resent} records"
    )
    print(
        f"  lost: {run.lost_held} not on the killed agent's disk yet, {run.lost_unheard} published while "
        f"no agent listened; all in one run per signal around the kill: {run.one_run_at_the_kill}; "
        f"journaled at the kill {run.journaled}, of them lost {run.lost_durable}"
    )
    c = run.count
    table.add(
        c.produced, c.rows, c.duplicates, run.lost_held, run.lost_unheard, run.committed, batches, run.resent
    )
    return batches == top == run.committed and c.rows == rows and c.duplicates == c.unknown == c.lost == 0


def suite(names: list[str]) -> bool:
    tests = {
        "workers": "test_solver_workers_down_every_decision_by_fallback_in_time",
        "disk": "test_outbox_disk_full_then_recovers",
        "slow": "test_slow_subscriber_and_the_broker_queue_limit",
    }
    chosen = " or ".join(tests[n] for n in names)
    if not chosen:
        return True
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-k", chosen]
    done = subprocess.run([*cmd, "tests/integration/test_reliability.py"], check=False)
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=10.0, help="how long the broker stays down")
    parser.add_argument("--crashes", type=int, default=3, help="agent kill -9 rounds")
    parser.add_argument("--only", default="broker,agent,history,workers,disk,slow")
    parser.add_argument(
        "--confirm", choices=["upstream", "broker"], default="upstream", help="the broker scenario's outbox"
    )
    add_save_option(parser)
    args = parser.parse_args()
    saved = Results(__file__, parser, args)
    table = saved.table(
        "telemetry records counted by seq upstream",
        [
            "fault",
            "sent",
            "received",
            "duplicated",
            "lost",
            "stored in the outage",
            "caught up s",
            "sent again",
        ],
    )
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    results = {}
    if "broker" in only:
        print(f"broker killed with SIGKILL for {args.outage_s:g} s mid-stream:")
        results["broker"] = broker_outage(args.outage_s, args.confirm, table)
    if "agent" in only:
        print(f"agent killed with SIGKILL {args.crashes} times mid-stream:")
        results["agent"] = agent_crash(args.crashes, table)
    if "history" in only:
        print(
            f"history: data-center broker kill -9 for {args.outage_s:g} s, historian kill -9, agent kill -9:"
        )
        table = saved.table(
            "history readings counted in the historian's Parquet",
            [
                "produced",
                "Parquet rows",
                "duplicated",
                "lost: not on the killed agent's disk yet",
                "lost: no agent listening",
                "batches committed",
                "batches in the ledger",
                "sent again",
            ],
        )
        results["history"] = history(args.outage_s, table)
    rest = [n for n in only if n in ("workers", "disk", "slow")]
    if rest:
        results[",".join(rest)] = suite(rest)
    for name, ok in results.items():
        print(f"{name}: {'ok' if ok else 'FAILED'}")
        saved.note(f"{name}: {'ok' if ok else 'FAILED'}")
    saved.save()
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
