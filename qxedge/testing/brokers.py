"""A private nats-server (JetStream and MQTT on) and a private RabbitMQ node (with its MQTT plugin), each
on free loopback ports in a temporary folder, for tests and benches; stopped on exit.

Like :class:`qxedge.connectors.embedded_broker.EmbeddedBroker` for mosquitto, each is a separate process
of the Debian package's binary (``nats-server``, ``rabbitmq-server``; ``.ci/run`` installs them). Neither
touches a server the machine already runs (NATS on 4222, RabbitMQ on 5672): every port is a free one and
the RabbitMQ node has its own name, data, logs, cookie and configuration (only the machine's epmd is
shared, which is what it is for).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

from qxedge.connectors.embedded_broker import free_port, port_open
from qxedge.core.errors import BrokerUnavailable

NATS_SERVER = "/usr/sbin/nats-server"
RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def nats_available() -> bool:
    return shutil.which("nats-server") is not None or Path(NATS_SERVER).exists()


def rabbitmq_available() -> bool:
    return (RABBITMQ_SCRIPTS / "rabbitmq-server").exists()


def _wait_ports(
    proc: subprocess.Popen[bytes], ports: list[int], log: Path, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not all(port_open("127.0.0.1", p, 0.2) for p in ports):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise BrokerUnavailable(f"{what} did not start (ports {ports}):\n{tail}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class NatsServer:
    """``with NatsServer() as nats: nats.url, nats.mqtt_url``: JetStream on, MQTT on (it needs both a
    ``server_name`` and JetStream); ``mqtt=False`` leaves MQTT off, ``jetstream=False`` JetStream (and so
    MQTT) off; ``extra_config`` is appended to the generated config (accounts, authorization)."""

    def __init__(
        self,
        *,
        mqtt: bool = True,
        jetstream: bool = True,
        extra_config: str = "",
        config: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``config``: a whole nats-server config instead of the generated one (a shipped example), its
        ``listen:`` lines and JetStream ``store_dir`` rewritten to this server's ports and folder;
        ``env``: variables its ``$VAR`` references read."""
        self.config = config
        self.env = env or {}
        self.port = free_port()
        self.mqtt_port = free_port()
        self.mqtt = mqtt and jetstream
        self.jetstream = jetstream
        self.extra_config = extra_config
        self.server_name = f"qxedge-test-{uuid.uuid4().hex[:6]}"
        self.mqtt_options = ""  # more settings of the mqtt block (a cluster's replicas)
        self.dir = Path(tempfile.mkdtemp(prefix="qxedge-nats-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def config_text(self) -> str:
        if self.config is not None:
            text = re.sub(r"(?m)^listen: .*$", f"listen: 127.0.0.1:{self.port}", self.config)
            text = re.sub(r"(?m)^(\s+)listen: .*$", rf"\1listen: 127.0.0.1:{self.mqtt_port}", text)
            return re.sub(r"(?m)^(\s+)store_dir: .*$", rf'\1store_dir: "{self.dir / "js"}"', text)
        lines = [f"server_name: {self.server_name}", f"listen: 127.0.0.1:{self.port}"]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.dir / "js"}" }}')
        if self.mqtt:
            lines.append(f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}{self.mqtt_options} }}")
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self) -> NatsServer:
        self.launch()
        return self.wait_started()

    def launch(self) -> None:
        """Start the process, not waiting for its ports (:meth:`wait_started`): a cluster's nodes open
        their MQTT port only once JetStream has its quorum, so they are launched together."""
        conf = self.dir / "nats.conf"
        conf.write_text(self.config_text())
        binary = shutil.which("nats-server") or NATS_SERVER
        with (self.dir / "nats.log").open("ab") as out:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )

    def wait_started(self, timeout: float = 20) -> NatsServer:
        assert self._proc is not None, "launch() first"
        ports = [self.port] + ([self.mqtt_port] if self.mqtt else [])
        try:
            _wait_ports(self._proc, ports, self.dir / "nats.log", "nats-server", timeout)
        except BrokerUnavailable:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to its clients or its cluster."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        _stop(self._proc)
        self._proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NatsCluster:
    """``with NatsCluster(3) as cluster``: ``size`` nats-servers routed into one cluster, JetStream and
    MQTT on each; ``cluster.url`` names every node (comma-separated, as a worker's ``transport.url``),
    ``cluster.nodes[i]`` each one (``.kill()`` one to see the others carry on). Started when JetStream
    has a meta leader (each node's monitoring ``/jsz`` says so)."""

    def __init__(self, size: int = 3) -> None:
        routes_ports = [free_port() for _ in range(size)]
        self.http_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes_ports)
        self.nodes = [
            NatsServer(
                extra_config=(
                    f"http: 127.0.0.1:{http}\n"
                    f"cluster {{ name: qxedge-test, listen: 127.0.0.1:{port}, routes: [{routes}] }}\n"
                )
            )
            for port, http in zip(routes_ports, self.http_ports, strict=True)
        ]
        for node in self.nodes:  # the MQTT sessions' streams and each subscription's consumer survive a node
            node.mqtt_options = f", stream_replicas: {min(size, 3)}, consumer_replicas: {min(size, 3)}"

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name, as a running node sees it (None: not elected)."""
        for node, http in zip(self.nodes, self.http_ports, strict=True):
            if not node.running:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/jsz", timeout=2) as reply:
                    leader = json.load(reply).get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            if leader:
                return str(leader)
        return None

    def start(self, timeout: float = 60) -> NatsCluster:
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_started(timeout)
            deadline = time.monotonic() + timeout
            while self.meta_leader() is None:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"the NATS cluster elected no JetStream leader in {timeout:g} s")
                time.sleep(0.1)
        except BaseException:
            self.__exit__(None, None, None)  # stopped, and their folders gone
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            node.__exit__(exc_type, exc, tb)


class RabbitNode:
    """``with RabbitNode() as rabbit: rabbit.url, rabbit.mqtt_url``: a RabbitMQ node of its own (name,
    AMQP, MQTT and distribution ports, data, logs, Erlang cookie) with the ``rabbitmq_mqtt`` plugin; it
    takes a few seconds to boot, so tests share one per module. ``mqtt=False`` leaves the plugin off;
    ``extra_config`` lines are appended to its rabbitmq.conf; ``plugins`` are enabled too;
    ``advanced_config`` is its advanced.config. ``users`` are created at start:
    ``{name: (password, [(exchange, write_regex, read_regex), ...])}`` with full configure/write/read
    permissions on ``/`` unless ``permissions`` says otherwise, and the given topic permissions."""

    def __init__(
        self,
        *,
        mqtt: bool = True,
        extra_config: str = "",
        plugins: tuple[str, ...] = (),
        advanced_config: str = "[].\n",
    ) -> None:
        self.port = free_port()
        self.mqtt_port = free_port()
        self.dist_port = free_port()
        self.mqtt = mqtt
        self.extra_config = extra_config
        self.plugins = (("rabbitmq_mqtt",) if mqtt else ()) + plugins
        self.advanced_config = advanced_config
        self.name = f"qxedge-test-{uuid.uuid4().hex[:8]}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="qxedge-rabbit-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.dir),  # its own Erlang cookie
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),  # not the machine's node's
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "rabbit.pid"),
            RABBITMQ_LOGS=str(self.dir / "log" / "rabbit.log"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self) -> RabbitNode:
        (self.dir / "log").mkdir(exist_ok=True)
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "advanced.config").write_text(self.advanced_config)
        (self.dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        conf = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.mqtt:
            conf.append(f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}")
        (self.dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n" + self.extra_config)
        log = self.dir / "log" / "server.out"
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(RABBITMQ_SCRIPTS / "rabbitmq-server")],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        ports = [self.port] + ([self.mqtt_port] if self.mqtt else [])
        try:
            _wait_ports(self._proc, ports, self.dir / "log" / "rabbit.log", "rabbitmq-server", 90)
        except BrokerUnavailable:
            self.stop()
            raise
        return self

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl ARGS`` against this node; its output (CalledProcessError when it fails)."""
        done = subprocess.run(
            [str(RABBITMQ_SCRIPTS / "rabbitmqctl"), "-n", self.name, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        """SIGTERM to the node (a clean stop), then to what is left of its process group."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
