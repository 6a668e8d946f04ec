"""A PostgreSQL cluster of our own for tests and benches: ``initdb`` into a temporary folder, ``pg_ctl``
start on a free loopback port, never the machine's own server (5432).

Where the process runs as root (CI, these machines), the cluster runs as the ``postgres`` user that
Debian's package creates (``initdb`` and ``postgres`` refuse root): the folder is handed to it, and the
binaries are run through ``runuser``. The Unix socket goes into the cluster's own folder, so nothing
is written to ``/var/run/postgresql``.

    with PostgresServer() as pg:
        dsn = pg.dsn  # postgresql://qxedge@127.0.0.1:PORT/qxedge, password pg.password
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from qxedge.connectors.embedded_broker import free_port

USER = "qxedge"
DATABASE = "qxedge"
PASSWORD = "qxedge-test-password"  # a throwaway cluster on loopback: the tests check password auth


def postgres_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest ``/usr/lib/postgresql/N/bin``, else
    wherever ``pg_ctl`` is on the PATH; None when PostgreSQL is not installed."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


class PostgresServer:
    """A private PostgreSQL cluster: started by ``__enter__``, stopped and deleted by ``__exit__``."""

    def __init__(self, port: int | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.port = port or free_port()
        self.password = PASSWORD
        self._tmp = tempfile.mkdtemp(prefix="qxedge-pg-")
        self.root = Path(self._tmp)
        self.data = self.root / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        """Without the password (the ledger's config takes it apart, as it should)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> PostgresServer:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._psql(f"CREATE DATABASE {DATABASE}")
        return self

    def database(self, name: str) -> str:
        """Create the database ``name`` (letters, digits, ``_``) and return its DSN (no password)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        self._psql(f"CREATE DATABASE {name}")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def _psql(self, command: str) -> None:
        self._run(
            str(self.bindir / "psql"),
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            command,
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
