"""Harnesses for the history upstream with real processes, shared by tests/integration/test_history.py
and bench/faults.py (``--only history``): a plant that remembers every reading it produced, the agent
(``qxedge run``) and the historian (``qxedge historian``) as child processes on small configs of site
``t``, and the count of readings produced against the rows in the historian's Parquet."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from qxedge.agent.history import decode_journal
from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import split_url
from qxedge.testing.waits import wait_until_sync

ASSETS = ("pump1", "pump2", "fan1")
SIGNALS = ("temp", "power", "vibration")


class CountingPlant:
    """Readings of three assets with three signals each (one message per asset, ``values`` form) every
    ``period_s`` from a thread, each remembered as (asset, signal, ts)."""

    def __init__(self, url: str, period_s: float = 0.02) -> None:
        _, host, port = split_url(url)
        self.period_s = period_s
        self.produced: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"plant-{time.monotonic_ns()}")
        self.client.connect(host, port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.period_s):
            ts = round(time.time(), 6)
            for asset in ASSETS:
                values = {s: float(n % 1000) + i / 10 for i, s in enumerate(SIGNALS)}
                info = self.client.publish(
                    f"plant/l1/{asset}", json.dumps({"ts": ts, "values": values}), qos=1
                )
                info.wait_for_publish(10)
                with self._lock:
                    self.produced.extend((f"l1/{asset}", s, ts) for s in values)
            n += 1

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.produced)

    def frame(self) -> pl.DataFrame:
        with self._lock:
            rows = list(self.produced)
        return pl.DataFrame(
            rows, schema={"asset": pl.String, "signal": pl.String, "ts": pl.Float64}, orient="row"
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


def agent_config(tmp_path: Path, plant_url: str, uplink_url: str, every_s: float = 0.2) -> Path:
    """Site ``t``: readings of ``plant/{line}/{asset}`` (values form) from the plant broker, history
    every ``every_s`` through the outbox (``outbox.sqlite``) to the uplink broker, no telemetry, no model."""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"""site: t
ops: {{port: 0}}
broker: {{url: "{plant_url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5, keepalive_s: 5,
         persistent_session: true}}
uplink: {{url: "{uplink_url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5, keepalive_s: 5,
          persistent_session: true}}
connectors:
  - mqtt: {{topics: ["plant/#"], topic_pattern: "plant/{{line}}/{{asset}}/{{signal}}", qos: 1}}
window: {{length_s: 2, every_s: 0.1, stats: [mean], min_samples: 1, min_coverage: 0}}
history: {{every_s: {every_s}, max_readings: 5000}}
outbox: {{path: outbox.sqlite, drain_timeout_s: 5, confirm_timeout_s: 1}}
safety: {{audit: {{path: {tmp_path / "audit.sqlite"}}}}}
"""
    )
    return cfg


def historian_config(tmp_path: Path, url: str, root: Path, flush_s: float = 0.2) -> Path:
    cfg = tmp_path / "historian.yaml"
    cfg.write_text(
        f"""historian_id: h1
broker: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5, keepalive_s: 5,
          persistent_session: true, client_id: qxedge-historian-test}}
root: {root}
flush_s: {flush_s}
"""
    )
    return cfg


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``qxedge ARGS`` as a child process (no ``QXEDGE_`` variables), its output appended to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QXEDGE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qxedge.agent.cli", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def parquet(root: Path) -> pl.DataFrame:
    """Every reading the historian wrote under ``root`` (empty before the first file)."""
    files = list(root.glob("site=*/date=*/*.parquet"))
    if not files:
        return pl.DataFrame(
            schema={"asset": pl.String, "signal": pl.String, "ts": pl.Float64, "seq": pl.Int64}
        )
    df = pl.read_parquet(files)
    return df.select("asset", "signal", (pl.col("ts").dt.epoch("us") / 1e6).alias("ts"), "seq")


@dataclass(frozen=True, slots=True)
class Count:
    produced: int  # readings the plant produced
    rows: int  # rows in the Parquet
    duplicates: int  # rows whose (asset, signal, ts) is there more than once
    lost: int  # readings produced and not in the Parquet
    unknown: int  # rows the plant never produced

    def __str__(self) -> str:
        return (
            f"produced {self.produced} readings, Parquet rows {self.rows}, duplicates {self.duplicates}, "
            f"lost {self.lost}, unknown {self.unknown}"
        )


def count(produced: pl.DataFrame, rows: pl.DataFrame) -> tuple[Count, pl.DataFrame]:
    """Readings produced against Parquet rows, keyed by (asset, signal, ts to the µs); and the lost ones."""
    key = ["asset", "signal", "us"]
    mine = produced.with_columns(us=(pl.col("ts") * 1e6).round().cast(pl.Int64))
    theirs = rows.with_columns(us=(pl.col("ts") * 1e6).round().cast(pl.Int64))
    distinct = theirs.unique(key)
    lost = mine.join(distinct, on=key, how="anti")
    unknown = distinct.join(mine, on=key, how="anti")
    result = Count(produced.height, rows.height, rows.height - distinct.height, lost.height, unknown.height)
    return result, lost.sort("ts")


def committed_batches(outbox: Path) -> int:
    """The agent's next history sequence number on disk: every batch below it was committed."""
    db = sqlite3.connect(outbox)
    try:
        row = db.execute("SELECT next_seq FROM streams WHERE name = 'history'").fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def journaled(outbox: Path) -> pl.DataFrame:
    """The readings in the agent's history journal on disk (accepted, not in a batch yet): asset,
    signal, ts."""
    db = sqlite3.connect(outbox)
    try:
        rows = db.execute("SELECT payload FROM journal WHERE stream = 'history' ORDER BY upto").fetchall()
    except sqlite3.OperationalError:  # the agent is creating it
        rows = []
    finally:
        db.close()
    assets: list[str] = []
    signals: list[str] = []
    ts: list[float] = []
    for (payload,) in rows:
        batch = decode_journal(bytes(payload))
        assets += batch.assets
        signals += batch.signals
        ts += batch.ts
    return pl.DataFrame(
        {"asset": assets, "signal": signals, "ts": ts},
        schema={"asset": pl.String, "signal": pl.String, "ts": pl.Float64},
    )


def ledger(root: Path) -> tuple[int, int, int]:
    """(batches, highest seq + 1, readings) in the historian's ledger."""
    path = root / "_historian" / "ledger.sqlite"
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(path)
    try:
        n, top, rows = db.execute("SELECT COUNT(*), MAX(seq), SUM(rows) FROM batches").fetchone()
    except sqlite3.OperationalError:  # the historian is creating it
        return 0, 0, 0
    finally:
        db.close()
    return int(n), (int(top) + 1 if top is not None else 0), int(rows or 0)


@dataclass(frozen=True, slots=True)
class KillRun:
    """What :func:`kill_run` counted."""

    count: Count
    committed: int  # batches the agent committed to its outbox
    ledger: tuple[int, int, int]  # the historian's (batches, highest seq + 1, readings)
    resent: int  # records the agent sent again, not confirmed upstream
    one_run_at_the_kill: bool  # every lost reading is in one run per signal, around the agent's kill
    lost_held: int  # of the lost: produced before the agent's kill (not on its disk yet, or in flight)
    lost_unheard: int  # produced after the kill, before the new agent listened (no agent had them)
    journaled: int  # readings in the agent's journal on disk at its kill (accepted, not in a batch yet)
    lost_durable: int  # lost readings no newer than the newest journaled one of their signal: none
    log: str


_RESENT = re.compile(r"sending (\d+) records again")


def kill_run(
    work: Path, outage_s: float = 1.0, every_s: float = 2.0, journal_min: int = 300, period_s: float = 0.02
) -> KillRun:
    """The plant broker stays up; the data-center broker (persistence on), then the historian, then the
    agent are each killed with SIGKILL mid-stream and started again; then everything stops gracefully
    and the readings the plant produced are counted against the rows in the Parquet. The agent cuts a
    history batch every ``every_s`` and is killed once its journal on disk holds ``journal_min``
    readings (accepted, in no batch yet: what it held in memory before the journal). The plant
    publishes three messages of three readings every ``period_s``."""
    root = work / "history"
    log = work / "run.log"

    def waited(predicate: Callable[[], bool], what: str) -> None:
        if not wait_until_sync(predicate, 60):
            raise RuntimeError(f"{what} did not happen:\n{log.read_text()[-3000:]}")

    def rows_at_least(n: int) -> Callable[[], bool]:
        return lambda: ledger(root)[2] >= n

    with EmbeddedBroker() as plant_broker, EmbeddedBroker(persistence=True) as dc:
        edge = agent_config(work, plant_broker.url, dc.url, every_s)
        hcfg = historian_config(work, dc.url, root)
        historian = start(["historian", "--config", str(hcfg)], work, log)
        agent = start(["run", "--config", str(edge)], work, log)
        plant: CountingPlant | None = None
        try:
            waited(lambda: "listening on plant/#" in log.read_text(), "the agent's start")
            plant = CountingPlant(plant_broker.url, period_s)
            waited(rows_at_least(500), "500 readings in the Parquet")
            dc.kill()  # the data-center broker, mid-stream
            time.sleep(outage_s)  # the outage: the agent stores batches meanwhile
            dc.start()
            waited(rows_at_least(plant.count), "catching up after the broker's restart")
            historian.send_signal(signal.SIGKILL)
            historian.wait()
            time.sleep(0.5)  # batches wait at the broker for the historian's persistent session
            historian = start(["historian", "--config", str(hcfg)], work, log)
            waited(rows_at_least(plant.count), "catching up after the historian's restart")
            outbox = work / "outbox.sqlite"
            waited(lambda: journaled(outbox).height >= journal_min, f"{journal_min} readings in the journal")
            killed_at = time.time()
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            at_kill = journaled(outbox)  # on disk when it died: the restarted agent must send them
            agent = start(["run", "--config", str(edge)], work, log)
            waited(lambda: log.read_text().count("listening on plant/#") == 2, "the agent's restart")
            back_at = time.time()
            waited(rows_at_least(plant.count + 500), "500 more readings after the agent's restart")
            plant.close()
            agent.send_signal(signal.SIGTERM)
            if agent.wait(30) != 0:
                raise RuntimeError(f"the agent did not stop cleanly:\n{log.read_text()[-3000:]}")
            committed = committed_batches(work / "outbox.sqlite")
            waited(lambda: ledger(root)[0] >= committed, "every committed batch in the ledger")
            historian.send_signal(signal.SIGTERM)
            historian.wait(30)
        finally:
            if plant is not None:
                plant.close()
            for proc in (agent, historian):
                if proc.poll() is None:
                    proc.kill()
    produced = plant.frame()
    result, lost = count(produced, parquet(root))
    one_run = True
    for (asset, signal_), part in lost.group_by("asset", "signal"):
        mine = produced.filter((pl.col("asset") == asset) & (pl.col("signal") == signal_)).sort("ts")
        index = {ts: i for i, ts in enumerate(mine.get_column("ts").to_list())}
        positions = [index[ts] for ts in part.get_column("ts").to_list()]
        first, last = part.get_column("ts").min(), part.get_column("ts").max()
        assert isinstance(first, float) and isinstance(last, float)
        contiguous = positions == list(range(positions[0], positions[0] + len(positions)))
        one_run = one_run and contiguous and first <= killed_at + 1.0 and last >= killed_at - 5.0
    text = log.read_text(errors="replace")
    resent = sum(int(n) for n in _RESENT.findall(text))
    held = lost.filter(pl.col("ts") < killed_at).height
    unheard = lost.filter((pl.col("ts") >= killed_at) & (pl.col("ts") <= back_at)).height
    newest = at_kill.group_by("asset", "signal").agg(pl.col("ts").max().alias("newest"))
    durable = lost.join(newest, on=["asset", "signal"], how="left").filter(pl.col("ts") <= pl.col("newest"))
    return KillRun(
        result, committed, ledger(root), resent, one_run, held, unheard, at_kill.height, durable.height, text
    )
