"""A private MQTT broker on a free loopback port, for ``qxedge demo`` on a bare machine and for tests.

It runs the local ``mosquitto`` binary when there is one (with a config of our own: extra lines add
TLS, ACLs or persistence), else the pure-Python amqtt broker (``pip install 'qxedge[embedded-broker]'``)
in a child process. Either way it is a separate process, stopped on exit.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from qxedge.core.errors import BrokerUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: broker.url`` → ``mqtt://127.0.0.1:<free port>``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_config: str = "",
        prefer: str | None = None,
        persistence: bool = False,
    ) -> None:
        """``persistence``: mosquitto saves sessions and queued messages in its folder every second, so
        they survive ``kill()`` + ``start()`` (a restart on the same port)."""
        self.port = port or free_port()
        self.extra_config = extra_config
        self.persistence = persistence
        self.kind = prefer or ("mosquitto" if shutil.which("mosquitto") else "amqtt")
        self.dir = Path(tempfile.mkdtemp(prefix="qxedge-broker-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.dir / "mosquitto.conf"
            # as root, mosquitto would switch to its own user, which cannot read our private temp files
            user = "user root\n" if os.geteuid() == 0 else ""
            persist = (
                f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n"
                if self.persistence
                else "persistence false\n"
            )
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persist}"
                f"max_queued_messages 100000\nset_tcp_nodelay true\n{user}{self.extra_config}"
            )
            return [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)]
        if importlib.util.find_spec("amqtt") is None:
            raise BrokerUnavailable(
                "no MQTT broker: install mosquitto, pass --broker mqtt://host:port, "
                "or pip install 'qxedge[embedded-broker]'"
            )
        conf = self.dir / "amqtt.yaml"
        conf.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        runner = "from amqtt.scripts.broker_script import main; main()"
        return [sys.executable, "-c", runner, "-c", str(conf)]

    def start(self) -> EmbeddedBroker:
        log = (self.dir / "broker.log").open("ab")
        self._proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port, 0.2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.dir / "broker.log").read_text(errors="replace")[-800:]
                raise BrokerUnavailable(f"the embedded {self.kind} broker did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to clients, nothing saved (``start()`` restarts it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
