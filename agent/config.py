"""The agent's configuration: one YAML file, ``QXEDGE_`` environment overrides, then command-line flags.

Precedence, lowest first: the file, environment variables, ``--broker``. An environment variable names
a path with ``__`` between levels and list indexes as numbers; its value is a string (converted to the
field's type), or YAML when it starts with ``[`` or ``{``::

    QXEDGE_SITE=gumi-line-3
    QXEDGE_BROKER__URL=mqtt://10.0.0.5:1883
    QXEDGE_WINDOW__LENGTH_S=20
    QXEDGE_MODELS__0__PROVIDERS='[cuda, cpu]'

A variable whose first level is not a key of the config being loaded is ignored: the agent's config
and the solver worker's (:func:`load_model` loads both) share the prefix, so ``QXEDGE_BROKER__URL``
applies to both and ``QXEDGE_SITE`` to the agent only.

Every problem is reported with its path (``models[0].path: file not found``) in one ConfigError;
relative file paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qxedge.agent.console.config import AgentOpsConfig
from qxedge.agent.history_config import HistoryConfig
from qxedge.agent.models.config import DeployConfig
from qxedge.agent.safety import SafetyConfig
from qxedge.agent.settings import PlanningConfig, TelemetryConfig
from qxedge.connectors.modbus import ModbusConfig
from qxedge.connectors.mqtt import BrokerConfig, MqttSourceConfig, filters_overlap, site_topic, topic_matches
from qxedge.connectors.mqtt.config import SESSION_SUFFIX
from qxedge.connectors.opcua import OpcUaConfig
from qxedge.connectors.outbox import OutboxConfig
from qxedge.connectors.plant import PlantConnector
from qxedge.connectors.simulator import SimulatorConfig
from qxedge.connectors.sparkplug_config import SparkplugConfig
from qxedge.core.config import resolve_path
from qxedge.core.errors import ConfigError, Problem
from qxedge.hybrid.config import OffloadConfig

ENV_PREFIX = "QXEDGE_"
M = TypeVar("M", bound=BaseModel)
Stat = Literal["mean", "std", "min", "max", "first", "last", "count", "slope", "range", "median"]
STATS: tuple[str, ...] = Stat.__args__  # type: ignore[attr-defined]

# Execution providers tried in this order when a model says `providers: [auto]`.
AUTO_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "QNNExecutionProvider",
    "VitisAIExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_NAME = r"^[A-Za-z0-9_.-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConnectorEntry(_Strict):
    """One connector; exactly one key names its protocol: ``mqtt``, ``opcua``, ``modbus`` or ``sparkplug``."""

    mqtt: MqttSourceConfig | None = None
    opcua: OpcUaConfig | None = None
    modbus: ModbusConfig | None = None
    sparkplug: SparkplugConfig | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ConnectorEntry:
        kinds = [k for k in CONNECTOR_KINDS if getattr(self, k) is not None]
        if not kinds:
            raise ValueError("name the connector kind, e.g. `- mqtt: {topics: [plant/#]}`")
        if len(kinds) > 1:
            raise ValueError(f"one kind per entry, got {', '.join(kinds)}: make one list entry each")
        return self

    def plant(self, name: str) -> PlantConnector | None:
        """The connector object for a plant protocol; None for the built-in MQTT JSON source."""
        section = self.opcua or self.modbus or self.sparkplug
        return None if section is None else section.connector(name)


CONNECTOR_KINDS = ("mqtt", "opcua", "modbus", "sparkplug")


class WindowConfig(_Strict):
    """Per-signal rolling windows: features are computed every ``every_s`` over the last ``length_s``
    (``trigger: readings``: as soon as new readings are pending, and at least every ``every_s``)."""

    length_s: float = Field(10.0, gt=0, le=86_400)
    every_s: float = Field(1.0, ge=0.01, le=3600)
    trigger: Literal["interval", "readings"] = Field(
        "interval",
        description="interval: evaluate every every_s; readings: as soon as readings are pending (those "
        "arriving during an evaluation join the next one), every_s being the longest pause",
    )
    stats: list[Stat] = Field(["mean", "std", "min", "max", "slope"], min_length=1)
    min_samples: int = Field(2, ge=1, description="fewer readings in the window: no features for that signal")
    min_coverage: float = Field(
        0.8, ge=0, le=1, description="a signal's readings must span this fraction of length_s (warm-up)"
    )


class ModelConfig(_Strict):
    """An ONNX model scoring every matching asset from the features it declares."""

    name: str = Field(pattern=_NAME)
    path: Path
    inputs: list[str] = Field(min_length=1, description="features in model order, each `signal.stat`")
    output: str | None = Field(None, description="output tensor; default: the model's first output")
    assets: list[str] = Field(["*"], min_length=1, description="glob patterns of the assets it scores")
    providers: list[str] = Field(["auto"], min_length=1, description="preference list; `auto` = the best")
    threads: int = Field(1, ge=1, le=64, description="intra-op threads")

    @field_validator("path")
    @classmethod
    def _exists(cls, path: Path, info: ValidationInfo) -> Path:
        resolved = resolve_path(path, info)
        assert resolved is not None
        if not resolved.is_file():
            raise ValueError(f"file not found ({resolved})")
        return resolved.resolve()

    @field_validator("inputs")
    @classmethod
    def _features(cls, inputs: list[str]) -> list[str]:
        for feature in inputs:
            signal, _, stat = feature.rpartition(".")
            if not signal or stat not in STATS:
                raise ValueError(f"{feature!r} is not `signal.stat` with stat one of {', '.join(STATS)}")
        return inputs

    @model_validator(mode="after")
    def _loads(self, info: ValidationInfo) -> ModelConfig:
        """With ``load_models`` in the context (``qxedge check-config``): the model loads and fits
        this entry (its feature count, its output), checked beside every other key."""
        if info.context and info.context.get("load_models"):
            from qxedge.agent.inference import OnnxModel
            from qxedge.core.errors import ModelError

            try:
                OnnxModel(self)
            except ModelError as exc:
                raise ValueError(str(exc)) from None
        return self

    @field_validator("providers")
    @classmethod
    def _providers(cls, providers: list[str]) -> list[str]:
        out: list[str] = []
        for p in providers:
            if p == "auto":
                out.extend(AUTO_PROVIDERS)
            elif p.lower() in PROVIDER_ALIASES:
                out.append(PROVIDER_ALIASES[p.lower()])
            elif p.endswith("ExecutionProvider"):
                out.append(p)
            else:
                raise ValueError(f"unknown execution provider {p!r} (e.g. {', '.join(PROVIDER_ALIASES)})")
        return list(dict.fromkeys(out))


class RuleConfig(_Strict):
    """Derate an asset while its score stays high; restore it once the score has been low long enough."""

    name: str = Field(pattern=_NAME)
    model: str
    above: float = Field(description="derate once the score is above this ...")
    consecutive: int = Field(2, ge=1, description="... for this many evaluations in a row")
    clear_below: float = Field(
        description="restore once the score is below this for `consecutive` evaluations"
    )
    derate_to: float = Field(ge=0, le=1, description="setpoint while derated (fraction of rated load)")
    restore_to: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> RuleConfig:
        if self.clear_below > self.above:
            raise ValueError("clear_below must not exceed above")
        return self


class EdgeConfig(_Strict):
    site: str = Field(pattern=_NAME, description="one factory / edge agent; used in every qx/v1 topic")
    state_dir: Path | None = Field(
        None,
        description="the audit log, the outbox and other state (relative: to this file); default: "
        "$XDG_STATE_HOME/qxedge. Set it so that a service and an operator's shell agree (/var/lib/qxedge)",
    )

    @field_validator("site")
    @classmethod
    def _no_session_suffix(cls, site: str) -> str:
        if SESSION_SUFFIX.search(site):  # qxedge-<role>-<site>-<8 hex> would be another site's client id
            raise ValueError("must not end in '-' and 8 hex digits (the client ids' session suffix)")
        return site

    @field_validator("state_dir")
    @classmethod
    def _state_relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info)

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    uplink: BrokerConfig | None = Field(
        None, description="the data center's broker (telemetry, jobs, results); default: the plant broker"
    )
    telemetry: TelemetryConfig | None = Field(
        None, description="per-asset records upstream on qx/v1/<site>/telemetry, through the outbox"
    )
    history: HistoryConfig = Field(
        default_factory=HistoryConfig,
        description="every accepted reading upstream on qx/v1/<site>/history in compressed batches, "
        "through the outbox, for the historian (on unless enabled: false)",
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="the disk-backed store-and-forward queue upstream"
    )
    connectors: list[ConnectorEntry] = Field(
        default_factory=lambda: [ConnectorEntry(mqtt=MqttSourceConfig())]
    )
    window: WindowConfig = Field(default_factory=WindowConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    safety: SafetyConfig = Field(default_factory=SafetyConfig, description="no envelope: nothing is written")
    ops: AgentOpsConfig | None = Field(
        None, description="/metrics, /healthz, /readyz, /status and the web console over HTTP"
    )
    offload: OffloadConfig | None = Field(None, description="submit plans to the data center (with fallback)")
    planning: PlanningConfig | None = None
    simulator: SimulatorConfig | None = None
    deploy: DeployConfig | None = Field(
        None,
        description="models deployed from the data center (qx/v1/<site>/models/<name>): signed, shadowed",
    )


def cross_check(cfg: EdgeConfig) -> list[Problem]:
    """Problems that span sections: references between them and names that must be unique."""
    problems = []
    models = {m.name for m in cfg.models}
    if len(models) != len(cfg.models):
        problems.append(Problem("models", "model names must be unique"))
    for i, m in enumerate(cfg.models):
        missing = sorted({f.rpartition(".")[2] for f in m.inputs} - set(cfg.window.stats))
        if missing:
            problems.append(
                Problem(f"models[{i}].inputs", f"needs stats {missing} missing from window.stats")
            )
    for i, r in enumerate(cfg.rules):
        if r.model not in models:
            problems.append(Problem(f"rules[{i}].model", f"no model named {r.model!r}"))
    filters = [(i, t) for i, c in enumerate(cfg.connectors) if c.mqtt for t in c.mqtt.topics]
    for k, (i, a) in enumerate(filters):
        if topic_matches(a, site_topic(cfg.site, "deadletter")):
            problems.append(
                Problem(
                    f"connectors[{i}].mqtt.topics",
                    f"{a!r} would receive the agent's own qx/v1 "
                    "messages (dead letters would loop): subscribe to the plant's topics only",
                )
            )
        for j, b in filters[k + 1 :]:
            if filters_overlap(a, b):
                problems.append(
                    Problem(
                        f"connectors[{j}].mqtt.topics",
                        f"{b!r} overlaps {a!r}: their common messages would be counted twice",
                    )
                )
    if cfg.planning is not None:
        if cfg.planning.model is not None and cfg.planning.model not in models:
            problems.append(Problem("planning.model", f"no model named {cfg.planning.model!r}"))
        if cfg.planning.mode == "optimised" and cfg.offload is None:
            problems.append(Problem("planning", "needs an `offload:` section (deadline, solver, fallback)"))
        if cfg.planning.demo_clock is not None and cfg.simulator is None:
            problems.append(
                Problem(
                    "planning.demo_clock",
                    "the compressed day is for the simulated plant only: it needs a `simulator:` section "
                    "(a plant plans on the wall clock)",
                )
            )
        for i, order in enumerate(cfg.planning.orders):
            if cfg.safety.envelope(order.asset) is None:
                problems.append(
                    Problem(f"planning.orders[{i}].asset", f"no safety envelope for {order.asset!r}")
                )
    return problems


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "field required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[list[str], Any]]:
    """``QXEDGE_A__B=v`` → ``{"QXEDGE_A__B": (["a", "b"], v)}``. A value is a string (pydantic converts
    it to the field's type, so a password of digits stays a string) unless it is a YAML list or mapping."""
    out = {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            path = key[len(ENV_PREFIX) :].lower().split("__")
            value: Any = raw
            if raw.lstrip().startswith(("[", "{")) and "password" not in path[-1]:
                try:
                    value = yaml.safe_load(raw)
                except yaml.YAMLError:
                    value = raw
            out[key] = (path, value)
    return out


def _set_path(data: dict[str, Any], path: list[str], value: Any, env_key: str) -> str:
    node: Any = data
    where = ""
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError([Problem(where, f"{env_key}: no list item {part}")])
            key: int | str = int(part)
            where += f"[{part}]"
        else:
            key = part
            where += f".{part}" if where else part
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
                node[key] = {}
            node = node[key]
    return where


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    broker_url: str | None = None,
    load_models: bool = False,
) -> EdgeConfig:
    """The agent's config: read, override, validate, cross-check; ConfigError lists every problem.
    ``load_models``: also load every ONNX model and check that it fits its entry."""
    cfg = load_model(
        EdgeConfig, path, environ=environ, broker_url=broker_url, context={"load_models": load_models}
    )
    problems = cross_check(cfg)
    if problems:
        raise ConfigError(problems, str(path))
    return cfg


def load_model(
    model: type[M],
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    broker_url: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> M:
    """Read a YAML file into ``model``, with environment and ``--broker`` overrides; raise ConfigError
    listing every problem with its path. ``context`` goes to the validators (beside ``base_dir``)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem("", f"cannot read the config file: {exc.strerror or exc}")], source
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("", f"the config file is not UTF-8 ({exc.reason})")], source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem("", f"invalid YAML: {where}{reason}")], source) from exc
    if data is None:
        raise ConfigError([Problem("", "the config file is empty")], source)
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem("", f"the top level must be a mapping, got {type(data).__name__}")], source
        )
    origin: dict[str, str] = {}
    for env_key, (keys, value) in env_overrides(os.environ if environ is None else environ).items():
        if keys[0] in model.model_fields:  # the agent's and the solver's configs share the prefix
            origin[_set_path(data, keys, value, env_key)] = env_key
    if broker_url is not None:
        data.setdefault("broker", {})
        if not isinstance(data["broker"], dict):
            data["broker"] = {}
        data["broker"]["url"] = broker_url
        origin["broker.url"] = "--broker"
    try:
        return model.model_validate(data, context={**(context or {}), "base_dir": path.parent})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _loc(err["loc"])
            by = next((o for p, o in origin.items() if where == p or where.startswith(p + ".")), None)
            problems.append(Problem(where, _message(err) + (f" (set by {by})" if by else "")))
        raise ConfigError(problems, source) from None


def default_config_path(name: str = "edge.yaml") -> Path:
    """An embedded default config (the package data of ``qxedge.configs``: configs/ in a checkout)."""
    return Path(str(files("qxedge.configs"))) / name
