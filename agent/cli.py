"""The ``qxedge`` command line.

Exit status: 0 success, 1 runtime failure (e.g. broker unreachable), 2 invalid config or arguments.
Errors are one clear message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from qxedge import __version__
from qxedge.agent.config import EdgeConfig, default_config_path, load_config, load_model
from qxedge.agent.discover import add_parser as add_discover_parser
from qxedge.agent.reach import datacenter_checks, edge_checks
from qxedge.agent.reach import report as _reach
from qxedge.agent.service_install import add_parser as add_install_parser
from qxedge.agent.tail import add_parser as add_tail_parser
from qxedge.connectors.mqtt import split_url
from qxedge.core.errors import ConfigError, ModelError, Problem, QxError
from qxedge.core.heap import freeze_start_up
from qxedge.core.state import use_state_dir
from qxedge.hybrid.backends import solver_names

if TYPE_CHECKING:  # the commands import their runtime (ONNX Runtime, the solvers) when they run
    from qxedge.hybrid.service import DataCenterConfig

# the lines for the person at the terminal (progress, the fatal error) on stderr: as they are, or each
# a JSON object with --log-json, like every log line
say = logging.getLogger("qxedge.cli")


def _broker_arg(value: str) -> str:
    try:
        split_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _listen_arg(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _positive(value: str, cast: type[float] | type[int] = float) -> float:
    try:
        number = cast(value)
    except ValueError:
        what = "a number" if cast is float else "a whole number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _milliseconds(value: str) -> int:
    return int(_positive(value, int))


def _report_folder(value: str) -> Path:
    from qxedge.agent.report import folder_problem

    if (problem := folder_problem(Path(value))) is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(value)


class _Parser(argparse.ArgumentParser):
    """argparse; with --log-json its error is one JSON line, like every other line (its subcommands'
    parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        if say.handlers and isinstance(say.handlers[0].formatter, JsonFormatter):
            say.error(f"{self.prog}: error: {message}")
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qxedge", description="qxedge edge agent")
    parser.add_argument("--version", action="version", version=f"qxedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument(
        "--log-json", action="store_true", help="log one JSON object per line (for collectors)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, config_required: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config_required:
            p.add_argument("--config", "-c", type=Path, required=True, help="agent config (YAML)")
        else:
            p.add_argument("--config", "-c", type=Path, help="agent config (default: the simulated plant)")
        p.add_argument("--broker", type=_broker_arg, metavar="URL", help="MQTT broker, mqtt://host:port")
        return p

    command("run", "run the edge agent until SIGINT / SIGTERM", config_required=True)
    demo = command(
        "demo", "run the simulated plant and the agent together, then print a summary", config_required=False
    )
    demo.add_argument("--duration", type=_positive, default=30.0, metavar="SECONDS")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument(
        "--report",
        type=_report_folder,
        metavar="DIR",
        help="write summary.json and day.png (the production day) there",
    )
    demo.add_argument(
        "--loop",
        action="store_true",
        help="the learning loop instead: history up, a model trained, signed, shadowed, promoted",
    )
    demo.add_argument(
        "--history",
        type=_positive,
        default=25.0,
        metavar="SECONDS",
        help="with --loop: how long history flows up before the model is trained (default 25)",
    )
    sim = command("simulate", "run only the simulated plant", config_required=True)
    sim.add_argument("--duration", type=_positive, metavar="SECONDS", help="default: until interrupted")
    worker = sub.add_parser("solver", help="run a data-center solver worker until SIGINT / SIGTERM")
    worker.add_argument("--config", "-c", type=Path, help="solver config (default: configs/datacenter.yaml)")
    worker.add_argument("--broker", type=_broker_arg, metavar="URL", help="MQTT broker, mqtt://host:port")
    historian = sub.add_parser(
        "historian", help="run a data-center historian (history batches → Parquet) until SIGINT / SIGTERM"
    )
    historian.add_argument("--config", "-c", type=Path, required=True, help="historian config (YAML)")
    historian.add_argument("--broker", type=_broker_arg, metavar="URL", help="MQTT broker, mqtt://host:port")
    auth = sub.add_parser(
        "rabbitmq-auth",
        help="bind MQTT client ids to usernames on RabbitMQ (its HTTP auth backend) until SIGINT / SIGTERM",
        description="Answer rabbitmq_auth_backend_http (configs/rabbitmq/advanced.config): a login whose "
        "MQTT client id is not one of the user's own is refused (docs/operations.md).",
    )
    auth.add_argument("--listen", type=_listen_arg, default="127.0.0.1:8090", metavar="HOST:PORT")
    auth.add_argument(
        "--trusted", action="append", default=[], metavar="USER", help="may use any client id (repeatable)"
    )
    auth.add_argument(
        "--client-id",
        metavar="REGEX",
        help="a user's own client ids, {user} standing for the username (default: qxedge-[a-z]+-{user}"
        "(-[0-9a-f]{8})?)",
    )
    solve = sub.add_parser("solve", help="solve a BQM, a CQM file or a job envelope without a broker")
    solve.add_argument(
        "problem",
        type=Path,
        help="BinaryQuadraticModel.to_serializable() JSON, a ConstrainedQuadraticModel.to_file() file, "
        "or a job envelope",
    )
    solve.add_argument("--solver", choices=solver_names(), help="default: the envelope's, else auto")
    solve.add_argument(
        "--deadline-ms", type=_milliseconds, metavar="N", help="default: the envelope's, else 2000"
    )
    solve.add_argument("--json", action="store_true", help="print the result envelope as JSON")
    solve.add_argument("--config", "-c", type=Path, help="solver config (default: configs/datacenter.yaml)")
    audit = sub.add_parser(
        "audit",
        help="read the audit log: proposals, verdicts, refused results, read-backs; `audit verify` checks it",
    )
    audit.add_argument(
        "action", nargs="?", choices=["verify"], help="verify: check the hash chain (exit 1 when broken)"
    )
    audit.add_argument("--config", "-c", type=Path, help="agent config (default: the simulated plant)")
    audit.add_argument("--log", type=Path, metavar="PATH", help="the audit log (default: the config's)")
    audit.add_argument(
        "--checkpoints", type=Path, metavar="FILE", help="verify: checkpoints received upstream (JSON lines)"
    )
    audit.add_argument(
        "--key-file", type=Path, metavar="FILE", help="verify: the HMAC key (default: the config's)"
    )
    audit.add_argument("--asset", help="only this asset, e.g. line1/pump3")
    audit.add_argument(
        "--since", type=_since, metavar="TIME", help="30s, 10m, 2h, 1d, epoch seconds or RFC 3339"
    )
    audit.add_argument("--limit", type=_milliseconds, metavar="N", help="only the last N rows")
    audit.add_argument("--json", action="store_true", help="print the rows as one JSON array")
    status = sub.add_parser(
        "status", help="a snapshot of a running agent from its ops endpoint (GET /status)"
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", type=Path, help="the agent's config: its ops host and port")
    where.add_argument("--url", metavar="URL", help="the ops endpoint, e.g. http://127.0.0.1:9464")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.add_argument("--timeout", type=_positive, default=5.0, metavar="SECONDS")
    jobs = sub.add_parser(
        "jobs", help="list the jobs the solver workers' ledger recorded, and the usage of each site"
    )
    jobs.add_argument("--config", "-c", type=Path, help="solver config (default: configs/datacenter.yaml)")
    jobs.add_argument("--site", help="only this site")
    jobs.add_argument(
        "--since", type=_since, metavar="TIME", help="30s, 10m, 2h, 1d, epoch seconds or RFC 3339"
    )
    jobs.add_argument(
        "--limit", type=_milliseconds, default=100, metavar="N", help="the last N jobs (default 100)"
    )
    jobs.add_argument("--json", action="store_true", help='print {"jobs": [...], "usage": [...]}')
    schema = sub.add_parser("config-schema", help="print the JSON Schema of a config (for editor completion)")
    schema.add_argument("--kind", choices=["edge", "datacenter"], default="edge")
    check = sub.add_parser("check-config", help="validate a config file; list every problem with its path")
    check.add_argument("file", type=Path)
    check.add_argument("--broker", type=_broker_arg, metavar="URL")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also connect to each broker and plant endpoint (short timeout); exit 1 if one fails",
    )
    check.add_argument(
        "--kind",
        choices=["edge", "datacenter"],
        help="default: datacenter when every top-level key is one of a solver config's",
    )
    # their options and handler: in their module
    for add in (add_discover_parser, add_tail_parser, add_install_parser):
        add(sub)
    _model_commands(sub)
    return parser


def _model_commands(sub: Any) -> None:
    """``qxedge train`` and ``qxedge models ...`` (docs/models.md): the learning loop."""
    train = sub.add_parser(
        "train",
        help="train the anomaly model from the historian's Parquet (the train extra)",
        description="train the anomaly model from the historian's Parquet, through the agent's own "
        "feature window; writes model.onnx and manifest.json (needs pip install 'qxedge[train]')",
    )
    train.add_argument("--site", required=True)
    train.add_argument("--since", type=_since, required=True, metavar="TIME", help="RFC 3339, epoch s, or 2d")
    train.add_argument("--until", type=_since, metavar="TIME", help="default: now")
    train.add_argument("--history", type=Path, required=True, metavar="ROOT", help="the historian's root")
    train.add_argument("--out", type=Path, required=True, metavar="DIR")
    train.add_argument("--config", "-c", type=Path, help="agent config: window, model inputs (default: demo)")
    train.add_argument("--model", help="which model of the config (default: its first)")
    train.add_argument("--holdout", type=float, default=0.2, help="latest share held back to calibrate")
    train.add_argument("--seed", type=int, default=1000)
    train.add_argument("--hidden", default="16,4,16", help="hidden layer sizes of the autoencoder")
    models = sub.add_parser("models", help="model deployment: keygen, publish, approve, reject, rollback")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="a new Ed25519 key pair for signing model manifests")
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR")
    publish = actions.add_parser("publish", help="sign a model folder and publish it, retained, in chunks")
    publish.add_argument("folder", type=Path, metavar="MODEL_DIR")
    publish.add_argument("--key", type=Path, required=True, metavar="PRIVATE.pem")
    publish.add_argument("--chunk-kib", type=_milliseconds, default=64, metavar="N", help="chunk size")
    publish.add_argument(
        "--clear-chunks",
        type=int,
        default=0,
        metavar="N",
        help="clear chunk topics up to N (an older model's)",
    )
    for action in ("approve", "reject", "rollback"):
        verb = actions.add_parser(
            action, help=f"{action} a deployed model (qx/v1/<site>/models/<name>/command)"
        )
        verb.add_argument("--sha256", help="the model it is meant for (a prefix will do)")
        verb.add_argument("--by", help="who decides (audited)")
    for p in [publish, *(actions.choices[a] for a in ("approve", "reject", "rollback"))]:
        p.add_argument("--site", required=True)
        p.add_argument("--name", required=True, help="the model's name in the agent's config")
        p.add_argument("--broker", type=_broker_arg, metavar="URL", help="default: the solver config's")
        p.add_argument("--config", "-c", type=Path, help="solver config (default: configs/datacenter.yaml)")


def _since(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(value[:-1]) * units[value[-1]]
        if value.replace(".", "", 1).isdigit():
            return float(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"expected 30s/10m/2h/1d, epoch seconds or RFC 3339 with offset: {value!r}"
        )
    return moment.timestamp()


def _audit(args: argparse.Namespace) -> int:
    """Exit 2 for a log, key or checkpoint file that is missing or unreadable; verify: 1 when broken."""
    from qxedge.agent.audit import query, verify
    from qxedge.agent.auditchain import parse_checkpoints, read_key
    from qxedge.core.errors import AuditError

    listing = [f"--{name}" for name in ("asset", "since", "limit") if getattr(args, name) is not None]
    if args.action == "verify" and listing:
        print(
            f"qxedge: error: audit verify checks every row: {', '.join(listing)} is for listing",
            file=sys.stderr,
        )
        return 2
    cfg = _load(args.config, None)
    path = args.log if args.log is not None else cfg.safety.audit.resolved(cfg.site)
    try:
        if args.action == "verify":
            key_file = args.key_file if args.key_file is not None else cfg.safety.audit.key_file
            checkpoints = []
            if args.checkpoints is not None:
                try:
                    text = args.checkpoints.read_text()
                except OSError as exc:
                    raise AuditError(f"checkpoints {args.checkpoints}: {exc.strerror or exc}") from exc
                checkpoints = parse_checkpoints(text, str(args.checkpoints))
            key = None if key_file is None else read_key(key_file)
            report = verify(path, key=key, checkpoints=checkpoints)
            print(json.dumps(report.as_dict()) if args.json else "\n".join(report.lines()))
            return 0 if report.ok else 1
        rows = query(path, asset=args.asset, since=args.since, limit=args.limit)
    except AuditError as exc:
        print(f"qxedge: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{path}: {len(rows)} row(s)")
    for r in rows:
        when = datetime.fromtimestamp(r["ts"]).isoformat(timespec="milliseconds")
        value = "" if r["value"] is None else f"{r['value']:g}"
        proposed = "" if r["proposed"] is None else f"{r['proposed']:g}"
        dry = " (dry run)" if r["dry_run"] else ""
        times = f" (x{r['count']})" if r["count"] > 1 else ""
        print(
            f"{when} {r['kind']:<9} {r['asset'] or '-':<14} {r['verdict']:<9}{dry} {proposed:>8} -> "
            f"{value:<8} {r['source'] or ''}: {r['reason'] or ''}{times}"
        )
    return 0


def _ops_url(path: Path | None) -> str:
    """The ops endpoint of the agent a config describes (its own host unless it listens on all)."""
    cfg = _load(path, None)
    if cfg.ops is None:
        raise ConfigError([Problem("ops", "missing: the agent serves /status only with an ops section")])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.ops.host, cfg.ops.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.ops.port}"


async def _jobs(args: argparse.Namespace) -> int:
    """Exit 1 when the ledger cannot be read (a LedgerError says which and why)."""
    from qxedge.hybrid.ledger import listing, open_ledger

    ledger_config = _datacenter(args.config, None).ledger
    async with open_ledger(ledger_config, create=False) as ledger:
        jobs, usage = await listing.read(ledger, site=args.site, since=args.since, limit=args.limit)
    if args.json:
        print(listing.as_json(jobs, usage))
    else:
        print(listing.as_text(ledger_config.where(), jobs, usage))
    return 0


def _datacenter(path: Path | None, broker: str | None) -> DataCenterConfig:
    from qxedge.hybrid.service import DataCenterConfig

    cfg = load_model(DataCenterConfig, path or default_config_path("datacenter.yaml"), broker_url=broker)
    use_state_dir(cfg.state_dir)
    return cfg


def _worker(path: Path | None, broker: str | None, what: str) -> DataCenterConfig:
    """A solver worker's config, once this install has what it needs (the ``datacenter`` extra)."""
    from qxedge.core.errors import MissingExtra
    from qxedge.hybrid.needs import EXTRA, installed, require_worker

    try:
        cfg = _datacenter(path, broker)
    except ConfigError as exc:  # a PennyLane device where PennyLane is not installed: the extra
        device = [p for p in exc.problems if p.path == "solvers.qaoa.device"]
        if not device or installed("pennylane"):
            raise
        lacking = ["pennylane", *([] if installed("scipy") else ["scipy"])]
        what = f"{what} (QAOA on a PennyLane device: solvers.qaoa.device)"
        raise MissingExtra(what, EXTRA, lacking) from exc
    require_worker(cfg, what)
    return cfg


def _load(path: Path | None, broker: str | None) -> EdgeConfig:
    cfg = load_config(path or default_config_path(), broker_url=broker)
    use_state_dir(cfg.state_dir)  # before anything opens the audit log, the outbox, ...
    return cfg


def _train(args: argparse.Namespace) -> int:
    from qxedge.agent.models.training import request_for, train, training_tools

    training_tools()  # before anything else: how to install them, when they are missing
    cfg = _load(args.config, None)
    try:
        hidden = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        hidden = []
    if not hidden or min(hidden) < 1 or not 0 < args.holdout < 1:
        print(
            "qxedge: error: --hidden takes sizes like 16,4,16 and --holdout a share in (0, 1)",
            file=sys.stderr,
        )
        return 2
    try:
        request = request_for(
            cfg,
            args.model,
            site=args.site,
            since=args.since,
            until=args.until if args.until is not None else time.time(),
            history=args.history,
            out=args.out,
            holdout=args.holdout,
            hidden=hidden,
            seed=args.seed,
        )
    except ConfigError as exc:
        raise ConfigError(exc.problems, str(args.config or "")) from None
    train(request, say.info)
    return 0


async def _models(args: argparse.Namespace) -> int:
    from qxedge.agent.models.publish import publish_model, send_command
    from qxedge.agent.models.signing import keygen

    if args.action == "keygen":
        private, public = keygen(args.out)
        print(f"private key {private} (keep it at the data center)\npublic key {public} (deploy.public_key)")
        return 0
    broker = _datacenter(args.config, args.broker).broker
    if args.action == "publish":
        summary = await publish_model(
            args.folder,
            args.key,
            args.site,
            args.name,
            broker,
            chunk_bytes=args.chunk_kib * 1024,
            clear_up_to=args.clear_chunks,
            progress=say.info,
        )
        print(json.dumps(summary))
        return 0
    await send_command(args.site, args.name, args.action, broker, args.sha256, args.by)
    say.info(f"{args.action} sent to {args.site}/{args.name}")
    return 0


def _check_models(cfg: EdgeConfig) -> list[str]:
    """Load every model once: catches a model that does not fit its config. Returns provider lines."""
    from qxedge.agent.inference import OnnxModel

    problems, lines = [], []
    for i, m in enumerate(cfg.models):
        try:
            model = OnnxModel(m)
        except ModelError as exc:
            problems.append(Problem(f"models[{i}]", str(exc)))
            continue
        lines.append(
            f"model {m.name}: {len(m.inputs)} inputs, sha256 {model.sha256[:12]}, runs on {model.provider}"
        )
    if problems:
        raise ConfigError(problems)
    return lines


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_agent(cfg: EdgeConfig, path: Path | None = None, broker: str | None = None) -> None:
    from qxedge.agent.pipeline import Agent

    if cfg.planning is not None and cfg.planning.demo_clock is not None:
        say.warning("qxedge run: planning.demo_clock is for `qxedge demo` only; planning on the wall clock")
    agent = Agent(cfg)  # a plant's clock: the wall clock, whatever the config says of the demo
    if path is not None:  # SIGHUP: models, rules and envelopes reloaded from the file (agent/reload.py)
        agent.reloader = partial(load_config, path, broker_url=broker, load_models=True)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(agent.run(_stop_event()), name="agent")
        ready = tasks.create_task(agent.ready.wait(), name="agent-ready")
        await asyncio.wait([run, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if agent.ready.is_set():
            # what the start allocated (modules, config, model sessions) lives as long as the process;
            # left to the collector, each full collection walked all of it: ~60 ms pauses of the loop in
            # bench/latency.py, 0.75 ms once frozen
            freeze_start_up()


async def _run_simulator(cfg: EdgeConfig, duration: float | None) -> None:
    from qxedge.connectors.simulator import SimulatedPlant

    if cfg.simulator is None:
        raise ConfigError([Problem("simulator", "missing: `qxedge simulate` needs a simulator section")])
    stop = _stop_event()
    async with SimulatedPlant(cfg.simulator, cfg.broker, cfg.site) as plant:
        run = asyncio.create_task(plant.run(duration), name="simulator")
        stopped = asyncio.create_task(stop.wait(), name="simulator-stop")
        await asyncio.wait([run, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in (run, stopped):
            task.cancel()
        logging.getLogger("qxedge").info("simulator published %d messages", plant.published)


async def _until_signalled(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work``; SIGINT or SIGTERM cancels it, so its cleanup runs (the solver processes, the
    forkserver, an embedded broker) before the process exits with 128 + the signal's number."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        say.warning(f"qxedge: stopped by {received[0].name}")
        return 128 + received[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run_demo(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    from qxedge.agent.demo import demo_broker, format_summary, isolated, run_demo
    from qxedge.agent.report import write_report

    def progress(line: str) -> None:
        say.info(line)

    if args.loop:
        return await _run_loop_demo(cfg, args, progress)
    with (
        demo_broker(cfg, explicit=args.broker is not None) as (cfg, how),
        isolated(cfg, _demo_datacenter(progress)) as (cfg, datacenter),
    ):
        plan, length = cfg.planning, f"{args.duration:g} s"
        if plan is not None and plan.demo_clock is not None:
            length = (
                f"a day of {plan.demo_clock.slots} slots of {plan.slot_minutes} min, one every "
                f"{plan.slot_s / plan.demo_clock.speed:g} s, baseline then optimised"
            )
        source = {"given": "given with --broker"}.get(how, f"a private {how}")
        progress(f"qxedge demo: MQTT broker {cfg.broker.url} ({source}), {length}")
        summary = await run_demo(cfg, args.duration, progress, datacenter)
    summary["broker_source"] = how
    print(json.dumps(summary) if args.json else format_summary(summary), flush=True)
    if args.report is not None:  # after the summary: a report that cannot be written (ReportError,
        for path in write_report(summary, args.report):  # exit 1) loses nothing
            progress(f"report: {path}")
    return 0


def _demo_datacenter(progress: Callable[[str], None]) -> DataCenterConfig:
    """The demo's solver worker: the embedded datacenter.yaml; on an edge install (no ``datacenter``
    extra: no PennyLane, no SciPy) without QAOA, its classical solvers only, and the demo says so."""
    from qxedge.hybrid.needs import EXTRA, missing, qaoa_packages
    from qxedge.hybrid.service import DataCenterConfig

    default = default_config_path("datacenter.yaml")
    device = (yaml.safe_load(default.read_text()).get("solvers") or {}).get("qaoa", {}).get("device", "")
    device = os.environ.get("QXEDGE_SOLVERS__QAOA__DEVICE", device)
    lacking = missing(qaoa_packages(device))
    if not lacking:
        return _datacenter(None, None)
    # the config's device would not validate without PennyLane; QAOA is left out of the portfolio below
    environ = {**os.environ, "QXEDGE_SOLVERS__QAOA__DEVICE": "qxedge.cpu"}
    cfg = load_model(DataCenterConfig, default, environ=environ)
    use_state_dir(cfg.state_dir)
    solvers = cfg.solvers.model_copy(
        update={
            "auto": [name for name in cfg.solvers.auto if name != "qaoa"],
            "cqm_auto": [name for name in cfg.solvers.cqm_auto if name != "qaoa"],
        }
    )
    progress(
        f"qxedge demo: no QAOA in this install ({', '.join(lacking)} missing: pip install "
        f"'qxedge[{EXTRA}]'); the solver worker runs {', '.join(solvers.auto)}"
    )
    return cfg.model_copy(update={"solvers": solvers})


async def _run_loop_demo(cfg: EdgeConfig, args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    from qxedge.agent.demo import demo_broker, isolated
    from qxedge.agent.demo_loop import format_loop, loop_failed, run_loop

    if args.report is not None:
        print("qxedge: error: --report is for the production day, not --loop", file=sys.stderr)
        return 2
    with (
        demo_broker(cfg, explicit=args.broker is not None) as (cfg, how),
        isolated(cfg, _demo_datacenter(lambda _line: None)) as (cfg, _),
    ):
        source = {"given": "given with --broker"}.get(how, f"a private {how}")
        progress(f"qxedge demo --loop: MQTT broker {cfg.broker.url} ({source})")
        assert cfg.state_dir is not None
        summary = await run_loop(cfg, cfg.state_dir / "loop", args.history, progress)
    summary["broker_source"] = how
    print(json.dumps(summary) if args.json else format_loop(summary), flush=True)
    if (error := loop_failed(summary)) is not None:
        raise error
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (and the exception, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if problems := getattr(record, "problems", None):
            doc["problems"] = problems
        return json.dumps(doc)


def _first_qx_error(group: BaseExceptionGroup[BaseException]) -> QxError | None:
    for exc in group.exceptions:
        if isinstance(exc, QxError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _first_qx_error(exc)) is not None:
            return inner
    return None


def _report(exc: QxError) -> int:
    if isinstance(exc, ConfigError):
        problems = [str(p) for p in exc.problems]
        where = f" in {exc.source}" if exc.source else ""
        say.error(
            "\n  ".join([f"qxedge: invalid configuration{where}:", *problems]), extra={"problems": problems}
        )
        return 2
    say.error(f"qxedge: error: {exc}")
    return 1


def _check(args: argparse.Namespace) -> int:
    kind = args.kind
    if kind is None:  # the worker's when every key is one of its own, else the agent's (site, models, ...)
        keys: set[str] = set()
        with contextlib.suppress(Exception):  # unreadable, empty, not YAML: loading it says why
            keys = set(yaml.safe_load(args.file.read_text()))
        kind = "edge"
        if keys and not keys <= EdgeConfig.model_fields.keys():  # only then the solver stack is imported
            from qxedge.hybrid.service import DataCenterConfig

            kind = "datacenter" if keys <= DataCenterConfig.model_fields.keys() else "edge"
    if kind == "datacenter":
        dc = _worker(args.file, args.broker, f"a solver worker of {args.file}")
        qaoa = dc.solvers.qaoa.device
        if qaoa == "qxedge.gpu" and importlib.util.find_spec("cupy") is None:
            qaoa += " (CuPy is not installed here: it would run on qxedge.cpu)"
        print(
            f"{args.file}: ok (data-center worker, {dc.solvers.workers} solver process(es), "
            f"auto = {', '.join(dc.solvers.auto)}, QAOA on {qaoa}, jobs through {dc.transport.kind}, "
            f"ledger {dc.ledger.kind} {dc.ledger.where()})"
        )
        return _reach(datacenter_checks(dc)) if args.connect else 0
    cfg = load_config(args.file, broker_url=args.broker, load_models=True)  # every problem at once
    lines = _check_models(cfg)
    print(
        f"{args.file}: ok (site {cfg.site}, {len(cfg.connectors)} connector(s), "
        f"{len(cfg.models)} model(s), {len(cfg.rules)} rule(s))"
    )
    for line in [*lines, *_check_history(cfg), *_check_planning(cfg)]:
        print(f"  {line}")
    return _reach(edge_checks(cfg)) if args.connect else 0


def _check_history(cfg: EdgeConfig) -> list[str]:
    """What an agent ``kill -9`` loses of the plant's MQTT readings on their way to the history."""
    sources = [entry.mqtt for entry in cfg.connectors if entry.mqtt is not None]
    if not cfg.history.enabled or not sources:
        return []
    if all(s.qos == 1 for s in sources) and cfg.broker.persistent_session:
        return ["history: MQTT readings at QoS 1 on a persistent session, each acknowledged once on disk"]
    return [
        "history: an agent kill -9 loses the MQTT readings of its last outbox flush and those published "
        "while it is down (for none: qos: 1 on every mqtt connector and broker.persistent_session: true)"
    ]


def _check_planning(cfg: EdgeConfig) -> list[str]:
    """What the production plan will run on: the clock, the horizon, the orders, whether it writes."""
    plan = cfg.planning
    if plan is None:
        return []
    writes = "dry run: nothing written" if cfg.safety.dry_run else "writes setpoints"
    lines = [
        f"planning: {plan.mode}, {plan.slot_minutes}-minute slots on the {plan.timezone} wall clock, "
        f"horizon {plan.horizon_slots} slots, {len(plan.orders)} order(s) in the config; {writes}"
    ]
    if plan.demo_clock is not None:
        every = plan.slot_s / plan.demo_clock.speed
        lines.append(
            f"planning.demo_clock: qxedge demo only (a slot every {every:g} s); "
            "qxedge run plans on the wall clock"
        )
    return lines


async def _run_solver(cfg: DataCenterConfig) -> None:
    from qxedge.hybrid.service import SolverService

    await SolverService(cfg).run(_stop_event())


async def _run_historian(path: Path, broker: str | None) -> None:
    from qxedge.hybrid.historian import Historian, HistorianConfig

    await Historian(load_model(HistorianConfig, path, broker_url=broker)).run(_stop_event())


async def _run_rabbitmq_auth(args: argparse.Namespace) -> None:
    from qxedge.hybrid.clientid_auth import DEFAULT_CLIENT_ID, ClientIdPolicy, serve

    host, _, port = args.listen.rpartition(":")
    try:
        policy = ClientIdPolicy(args.client_id or DEFAULT_CLIENT_ID, frozenset(args.trusted))
    except ValueError as exc:
        raise ConfigError([Problem("--client-id", str(exc))], "rabbitmq-auth") from None
    await serve(policy, host.strip("[]"), int(port), _stop_event())


async def _solve(args: argparse.Namespace) -> int:
    from qxedge.hybrid.offline import format_result, solve_file

    cfg = _worker(args.config, None, "qxedge solve")
    result = await solve_file(args.problem, cfg, args.solver, args.deadline_ms)
    if args.json:  # the result envelope, whatever its status, is what --json promises on stdout
        print(result.model_dump_json(exclude_none=True))
    if result.status != "ok":  # rejected, late, error: a failure, said on stderr
        say.error(f"qxedge: solve: {result.status}: {result.reason}")
        if not args.json:
            print(format_result(result), file=sys.stderr)
        return 2 if result.status == "rejected" else 1
    if not args.json:
        print(format_result(result))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if (handler := getattr(args, "handler", None)) is not None:
        return int(handler(args))
    if args.command == "check-config":
        return _check(args)
    if args.command == "solver":
        asyncio.run(_run_solver(_worker(args.config, args.broker, "qxedge solver")))
        return 0
    if args.command == "historian":
        asyncio.run(_run_historian(args.config, args.broker))
        return 0
    if args.command == "rabbitmq-auth":
        asyncio.run(_run_rabbitmq_auth(args))
        return 0
    if args.command == "solve":
        return asyncio.run(_until_signalled(_solve(args)))
    if args.command == "audit":
        return _audit(args)
    if args.command == "status":
        from qxedge.agent.console.status_cli import show_status

        return show_status(args.url or _ops_url(args.config), args.json, args.timeout)
    if args.command == "jobs":
        return asyncio.run(_jobs(args))
    if args.command == "train":
        return _train(args)
    if args.command == "models":
        return asyncio.run(_until_signalled(_models(args)))
    if args.command == "config-schema":
        from qxedge.hybrid.service import DataCenterConfig

        model = EdgeConfig if args.kind == "edge" else DataCenterConfig
        print(json.dumps(model.model_json_schema(), indent=2))
        return 0
    cfg = _load(args.config, args.broker)
    if args.command == "run":
        asyncio.run(_run_agent(cfg, args.config, args.broker))
    elif args.command == "simulate":
        asyncio.run(_run_simulator(cfg, args.duration))
    elif args.command == "demo":
        return asyncio.run(_until_signalled(_run_demo(cfg, args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    to_user = logging.StreamHandler()  # set before parsing: an argument error is a line for the user
    to_user.setFormatter(JsonFormatter() if "--log-json" in argv else logging.Formatter("%(message)s"))
    say.handlers[:] = [to_user]
    say.setLevel(logging.INFO)
    say.propagate = False
    args = build_parser().parse_args(argv)
    services = args.command in (
        "run",
        "solver",
        "historian",
        "rabbitmq-auth",
    )  # long-running: say what they do
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + services, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if args.log_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])
    try:
        status = _dispatch(args)
        sys.stdout.flush()  # here, where a reader gone away is handled below, not at exit
        return status
    except QxError as exc:
        return _report(exc)
    except BaseExceptionGroup as group:  # raised by the tasks of a TaskGroup
        qx = _first_qx_error(group)
        if qx is None:
            raise
        return _report(qx)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`qxedge solve p.json | head -1`): stop quietly;
        # what is still buffered for stdout goes nowhere instead of failing again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception:
        if not args.log_json:
            raise
        say.critical("qxedge: unexpected error", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
