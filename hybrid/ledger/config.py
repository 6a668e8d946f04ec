"""The job ledger's config (``ledger:`` in a worker's config): pydantic only, no driver imported.

SQLite (the default: one worker, or several on one host, sharing a file) or PostgreSQL (a pool of
workers on many hosts). The PostgreSQL password never sits in the file: it comes from the environment
variable named by ``password_env`` (``QXEDGE_LEDGER_PASSWORD``) or from ``password_file``; a DSN that
carries one is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from qxedge.core.config import read_secret, redact_url, resolve_path
from qxedge.core.state import state_dir

DEFAULT_FILE = "ledger.sqlite3"
_SCHEMES = ("postgresql", "postgres")


def _check_dsn(dsn: str) -> str:
    """``postgresql://user@host[:port]/database[?options]``; a ValueError saying what is wrong (the DSN
    shown with any password masked)."""
    shown = redact_url(dsn)
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 (parses it: a bad port raises here)
    except ValueError:
        raise ValueError(f"invalid dsn {shown!r}: expected postgresql://user@host:port/database") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"expected postgresql://user@host:port/database, got {shown!r}")
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ValueError(
            "the dsn carries a password: give it in the environment variable named by password_env "
            "(QXEDGE_LEDGER_PASSWORD) or in password_file, never in the config file"
        )
    if not parts.hostname:
        raise ValueError(f"no host in {shown!r}")
    if not parts.path.strip("/"):
        raise ValueError(f"no database in {shown!r} (postgresql://user@host:port/DATABASE)")
    return dsn


class LedgerConfig(BaseModel):
    """Where a worker records its jobs: claims, results and per-site usage (docs/operations.md)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="sqlite: one worker (or several on one host); postgres: a pool on many hosts"
    )
    path: Path | None = Field(
        None,
        description=f"sqlite: the file (default: {DEFAULT_FILE} in the state dir, $XDG_STATE_HOME/qxedge)",
    )
    dsn: str | None = Field(None, description="postgres: postgresql://user@host:port/database, no password")
    password_env: str = Field(
        "QXEDGE_LEDGER_PASSWORD", description="postgres: the environment variable holding the password"
    )
    password_file: Path | None = Field(None, description="postgres: a file holding the password (first line)")
    retention_days: float = Field(
        30.0, gt=0, description="recorded jobs and their results are kept this long"
    )
    usage_retention_days: float = Field(
        400.0, gt=0, description="the per-site usage, aggregated by day, is kept this long"
    )
    claim_grace_s: float = Field(
        30.0,
        ge=0,
        description="a claim not answered by its job's deadline plus this is taken over by the next "
        "worker the job reaches (its worker is presumed dead)",
    )
    heartbeat_s: float = Field(
        0.25,
        gt=0,
        le=60,
        description="how often a worker writes its heartbeat (from a task of its own, not from solving)",
    )
    holder_timeout_s: float = Field(
        1.0,
        gt=0,
        description="a pending claim whose worker has not written its heartbeat for this long is taken "
        "over at once by the next worker the job reaches (an agent's re-send, a redelivery); at least "
        "3 x heartbeat_s. Workers on several hosts need their clocks in step (NTP) well within it",
    )
    purge_every_s: float = Field(3600.0, gt=0, description="how often retention runs (in the background)")
    usage_refresh_s: float = Field(
        15.0, gt=0, description="how often the pool's usage is read from the ledger for /metrics"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="connecting, and each statement, at most")
    pool_size: int = Field(4, ge=1, le=64, description="postgres: connections held at most")

    @field_validator("path", "password_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: str | None) -> str | None:
        return None if dsn is None else _check_dsn(dsn)

    @model_validator(mode="after")
    def _consistent(self) -> LedgerConfig:
        if self.holder_timeout_s < 3 * self.heartbeat_s:
            raise ValueError(
                f"holder_timeout_s {self.holder_timeout_s:g} is under 3 x heartbeat_s "
                f"({self.heartbeat_s:g}): a live worker would be taken for gone between two heartbeats"
            )
        if self.kind == "postgres":
            if self.dsn is None:
                raise ValueError("kind postgres needs a dsn: postgresql://user@host:port/database")
            if self.path is not None:
                raise ValueError("path is for kind sqlite; kind postgres takes a dsn")
            if self.password_file is not None:
                read_secret(self.password_file)  # readable and not empty: said at load, not at first job
        else:
            extra = [name for name in ("dsn", "password_file") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: for kind postgres; kind sqlite takes a path")
        return self

    def sqlite_path(self) -> Path:
        return self.path if self.path is not None else state_dir() / DEFAULT_FILE

    def password(self) -> SecretStr | None:
        """The PostgreSQL password: ``password_file``, else ``$password_env``; None leaves it to libpq
        (``PGPASSWORD``, ``~/.pgpass``)."""
        if self.password_file is not None:
            return read_secret(self.password_file)
        value = os.environ.get(self.password_env)
        return SecretStr(value) if value else None

    def where(self) -> str:
        """The ledger in a message: its file, or its DSN (which holds no password)."""
        return str(self.sqlite_path()) if self.kind == "sqlite" else redact_url(self.dsn or "")
