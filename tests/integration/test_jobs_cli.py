"""``qxedge jobs``: the jobs and per-site usage a ledger recorded, as a table and as JSON, for a SQLite
ledger (the default, in the state dir) and a PostgreSQL one."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from qxedge.agent.cli import main
from qxedge.hybrid.ledger import LedgerConfig, Outcome, open_ledger

pytestmark = pytest.mark.integration


async def fill(config: LedgerConfig) -> None:
    now = time.time()
    async with open_ledger(config) as ledger:
        for site, job_id, status, solver, at in (
            ("gumi", "g-old", "ok", "exact", now - 3 * 86400),
            ("gumi", "g-1", "ok", "tabu", now - 60),
            ("gumi", "g-2", "late", None, now - 30),
            ("osan", "o-1", "ok", "sa", now - 10),
        ):
            await ledger.claim(site, job_id, "w0", at + 1, at)
            await ledger.record(Outcome(site, job_id, "w0", status, at, solver, 0.25, at, at + 1, b"{}"))
        await ledger.claim("osan", "o-2", "w1", now + 60, now)  # being solved
        await ledger.record(Outcome("osan", None, "w1", "rejected", now))


def config_file(tmp_path: Path, ledger: LedgerConfig) -> Path:
    path = tmp_path / "datacenter.yaml"
    path.write_text(yaml.safe_dump({"ledger": ledger.model_dump(mode="json", exclude_none=True)}))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_config(request: pytest.FixtureRequest) -> LedgerConfig:
    if request.param == "sqlite":
        return LedgerConfig()  # the default: ledger.sqlite3 in the state dir
    config: LedgerConfig = request.getfixturevalue("pg_ledger")
    return config


def test_jobs_lists_jobs_and_usage_as_a_table(
    ledger_config: LedgerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(fill(ledger_config))
    assert main(["jobs", "--config", str(config_file(tmp_path, ledger_config))]) == 0
    out = capsys.readouterr().out
    assert f"{ledger_config.where()}: 5 job(s)" in out
    lines = out.splitlines()
    (solving,) = [line for line in lines if " o-2 " in line]
    assert "solving" in solving and solving.endswith("w1")
    (gumi,) = [line for line in lines if line.startswith("gumi ")]
    assert gumi.split()[:7] == ["gumi", "3", "2", "1", "0", "0", "66.7%"]
    assert gumi.endswith("tabu 1, exact 1") or gumi.endswith("exact 1, tabu 1")
    (osan,) = [line for line in lines if line.startswith("osan ")]
    assert osan.split()[:7] == ["osan", "2", "1", "0", "1", "0", "50.0%"]


def test_jobs_json_filters_by_site_and_time(
    ledger_config: LedgerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(fill(ledger_config))
    config = str(config_file(tmp_path, ledger_config))
    assert main(["jobs", "--config", config, "--json", "--site", "gumi", "--since", "1h"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in doc["jobs"]] == ["g-1", "g-2"]
    assert doc["jobs"][1]["status"] == "late" and doc["jobs"][0]["solver"] == "tabu"
    (usage,) = doc["usage"]  # by day from --since: today's only
    assert usage == {
        "site": "gumi",
        "jobs": 2,
        "ok": 1,
        "late": 1,
        "rejected": 0,
        "error": 0,
        "on_time": 0.5,
        "solver_seconds": 0.5,
        "wins": {"tabu": 1},
    }
    assert main(["jobs", "--config", config, "--json", "--limit", "1"]) == 0
    assert [j["job_id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == ["o-2"]


def test_jobs_without_a_ledger_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.sqlite3"
    assert main(["jobs", "--config", str(config_file(tmp_path, LedgerConfig(path=missing)))]) == 1
    assert f"no job ledger at {missing}" in capsys.readouterr().err
    assert not missing.exists()
