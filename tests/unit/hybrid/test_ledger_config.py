"""``ledger:`` of a worker's config: every mistake said with its path, no password in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qxedge.agent.config import load_model
from qxedge.core.errors import ConfigError
from qxedge.hybrid.ledger import LedgerConfig
from qxedge.hybrid.service import DataCenterConfig


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dc.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_model(DataCenterConfig, path, environ={})
    return [str(p) for p in caught.value.problems]


def test_the_default_is_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    config = DataCenterConfig().ledger
    assert config.kind == "sqlite"
    assert config.sqlite_path() == tmp_path / "state" / "qxedge" / "ledger.sqlite3"  # XDG_STATE_HOME


def test_a_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "dc.yaml").write_text("ledger: {path: data/ledger.db}\n")
    config = load_model(DataCenterConfig, tmp_path / "dc.yaml", environ={})
    assert config.ledger.sqlite_path() == tmp_path / "data" / "ledger.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "ledger: {kind: postgres, dsn: 'postgresql://qx:s3cret@db/qx'}",
            "ledger.dsn: the dsn carries a password: give it in the environment variable named by "
            "password_env",
        ),
        ("ledger: {kind: postgres, dsn: 'postgresql://qx@db/qx?password=x'}", "ledger.dsn: the dsn carries"),
        ("ledger: {kind: postgres}", "ledger: kind postgres needs a dsn"),
        ("ledger: {kind: postgres, dsn: 'mysql://db/qx'}", "ledger.dsn: expected postgresql://"),
        ("ledger: {kind: postgres, dsn: 'postgresql://qx@db'}", "ledger.dsn: no database in"),
        ("ledger: {kind: postgres, dsn: 'postgresql://qx@db:99999/qx'}", "ledger.dsn: invalid dsn"),
        ("ledger: {kind: sqlite, dsn: 'postgresql://qx@db/qx'}", "ledger: dsn: for kind postgres"),
        (
            "ledger: {kind: postgres, dsn: 'postgresql://db/qx', path: x.db}",
            "ledger: path is for kind sqlite",
        ),
        ("ledger: {kind: mongo}", "ledger.kind: Input should be 'sqlite' or 'postgres'"),
        ("ledger: {retention_days: 0}", "ledger.retention_days: Input should be greater than 0"),
        ("cache_size: 100", "cache_size: the result cache is replaced by the job ledger"),
        (
            "ledger: {heartbeat_s: 1, holder_timeout_s: 2}",
            "ledger: holder_timeout_s 2 is under 3 x heartbeat_s (1): a live worker would be taken",
        ),
        ("ledger: {heartbeat_s: 0}", "ledger.heartbeat_s: Input should be greater than 0"),
    ],
)
def test_mistakes_are_said_with_their_path(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text + "\n")
    assert any(p.startswith(expected) for p in found), found
    assert not any("s3cret" in p for p in found)


def test_the_password_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = LedgerConfig(kind="postgres", dsn="postgresql://qx@db/qx")
    monkeypatch.delenv("QXEDGE_LEDGER_PASSWORD", raising=False)
    assert config.password() is None  # left to libpq: PGPASSWORD, ~/.pgpass
    monkeypatch.setenv("QXEDGE_LEDGER_PASSWORD", "from-env")
    secret = config.password()
    assert secret is not None and secret.get_secret_value() == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    filed = LedgerConfig(kind="postgres", dsn="postgresql://qx@db/qx", password_file=tmp_path / "pw")
    secret = filed.password()
    assert secret is not None and secret.get_secret_value() == "from-file"
    assert "from-file" not in repr(filed) and filed.where() == "postgresql://qx@db/qx"
    with pytest.raises(ValueError, match="password_file: cannot read"):
        LedgerConfig(kind="postgres", dsn="postgresql://qx@db/qx", password_file=tmp_path / "none")
