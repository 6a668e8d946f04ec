"""The ``qxedge`` command line as a user meets it: subprocesses, exit codes, stdout against stderr."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dimod
import pytest
import yaml

from qxedge.connectors.embedded_broker import free_port
from qxedge.testing import EDGE_YAML, ROOT

QXEDGE = [sys.executable, "-m", "qxedge.agent.cli"]


def short_demo_config(tmp_path: Path) -> Path:
    """configs/edge.yaml without the production day (the demo then runs for --duration), pointed at a
    port where no broker listens, so the demo starts an embedded one of its own."""
    doc = yaml.safe_load(EDGE_YAML.read_text())
    del doc["planning"]
    doc["broker"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    doc["ops"]["port"] = 0
    doc["models"][0]["path"] = str(EDGE_YAML.parent / doc["models"][0]["path"])
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def session_processes(sid: int) -> list[str]:
    """The processes of session ``sid`` (from /proc/*/stat: field 6 is the session id)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        state, _ppid, _pgrp, session = text.rpartition(")")[2].split()[:4]
        if int(session) == sid and state != "Z":
            found.append(f"{stat.parent.name} {text[: text.rfind(')') + 1]}")
    return found


def test_demo_refuses_a_report_path_that_is_a_file_before_running(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    run = subprocess.run(
        [*QXEDGE, "demo", "--report", str(tmp_path / "taken")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert f"argument --report: {tmp_path / 'taken'} exists and is not a folder" in run.stderr
    assert "qxedge demo: broker" not in run.stderr  # refused before the demo started
    assert "Traceback" not in run.stderr


@pytest.mark.integration
def test_demo_prints_its_summary_even_when_the_report_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "report" / "summary.json").mkdir(parents=True)  # the folder is fine, the file is not
    config, report = short_demo_config(tmp_path), tmp_path / "report"
    run = subprocess.run(
        [*QXEDGE, "demo", "-c", str(config), "--duration", "1", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("qxedge demo: site demo")
    assert f"qxedge: error: cannot write the report: {tmp_path / 'report' / 'summary.json'}" in run.stderr
    assert "Traceback" not in run.stderr


def stop_and_check(command: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Send ``sig`` to ``command`` (started in a session of its own): it must exit with 128 + sig,
    say so on stderr without a traceback, and leave no process of its session behind."""
    try:
        os.kill(command.pid, sig)
        _, err = command.communicate(timeout=60)
        assert command.returncode == 128 + sig
        assert f"qxedge: stopped by {sig.name}" in err and "Traceback" not in err
        deadline = time.monotonic() + 30  # the forkserver and the resource tracker end on EOF, soon after
        while (left := session_processes(command.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
        for line in session_processes(command.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_demo_with_every_process_it_started(sig: signal.Signals, tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [*QXEDGE, "demo", "-c", str(short_demo_config(tmp_path)), "--duration", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: whatever it starts is found by the session id
        cwd=ROOT,
    )
    assert demo.stderr is not None
    for line in demo.stderr:  # the solver worker is ready once its processes run
        if "solver worker" in line and "ready" in line:
            break
    else:
        demo.kill()
        pytest.fail(f"the demo ended before its solver worker was ready: {demo.wait()}")
    started = session_processes(demo.pid)
    assert len(started) >= 4, started  # the demo, its broker, the forkserver, the solver processes
    stop_and_check(demo, sig)


def test_sigterm_stops_a_solve_with_its_solver_processes(tmp_path: Path) -> None:
    bqm = dimod.generators.gnp_random_bqm(3000, 0.005, "BINARY", random_state=2)  # SA: seconds per read
    (tmp_path / "big.json").write_text(json.dumps(bqm.to_serializable(use_bytes=False)))
    solve = subprocess.Popen(
        [*QXEDGE, "solve", str(tmp_path / "big.json"), "--solver", "sa", "--deadline-ms", "120000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60  # the solver processes run: the forkserver and its children
    while len(session_processes(solve.pid)) < 4 and solve.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(session_processes(solve.pid)) >= 4
    stop_and_check(solve, signal.SIGTERM)


def bqm_file(tmp_path: Path) -> Path:
    bqm = dimod.generators.gnp_random_bqm(8, 0.5, "BINARY", random_state=1)
    (tmp_path / "p.json").write_text(json.dumps(bqm.to_serializable(use_bytes=False)))
    return tmp_path / "p.json"


@pytest.mark.parametrize("as_json", [False, True])
def test_solve_says_a_failure_on_stderr_with_a_nonzero_exit(as_json: bool, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"type": "BinaryQuadraticModel", "num_variables": "many"}')
    run = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "bad.json"), *(["--json"] if as_json else [])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("qxedge: solve: rejected: malformed BQM")
    if as_json:  # the result envelope is still what --json promises on stdout
        assert json.loads(run.stdout)["status"] == "rejected"
    else:
        assert run.stdout == ""


@pytest.mark.parametrize("head", [-1, 10**9])
def test_solve_rejects_an_index_out_of_range_instead_of_crashing(head: int, tmp_path: Path) -> None:
    """dimod's native code reads ``quadratic_head`` unchecked: -1 was a segfault (exit 139)."""
    problem = dimod.BinaryQuadraticModel({"a": 1.0, "b": -1.0}, {("a", "b"): 2.0}, 0.0, "BINARY")
    doc = problem.to_serializable(use_bytes=False)
    doc["quadratic_head"] = [head]
    job = {"v": 1, "job_id": "j-1", "site": "gumi", "problem": doc, "deadline_ms": 2000}
    job |= {"submitted_at": time.time(), "reply_to": "qx/v1/gumi/results/j-1"}
    (tmp_path / "job.json").write_text(json.dumps(job))
    run = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "job.json")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert run.stderr.startswith(
        f"qxedge: solve: rejected: malformed BQM: quadratic_head holds index {head}, outside [0, 2)"
    )


def test_solve_warms_its_processes_before_the_clock_and_says_where_each_solver_ran(tmp_path: Path) -> None:
    """Cold `qxedge solve` at 200 ms: the process start (seconds) is not inside the deadline (issue 21)."""
    bqm = dimod.generators.gnp_random_bqm(120, 0.1, "BINARY", random_state=2)
    (tmp_path / "p.json").write_text(json.dumps(bqm.to_serializable(use_bytes=False)))
    run = subprocess.run(
        [*QXEDGE, "solve", str(tmp_path / "p.json"), "--deadline-ms", "200", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == "ok" and len(result["sample"]) == 120
    assert result["timings"]["warmup_ms"] > 0 and result["timings"]["solve_ms"] < 200
    ran_in = {c["solver"]: c["details"].get("ran_in") for c in result["candidates"]}
    assert ran_in["greedy"] == "in-process" and ran_in["tabu"] == "solver process"


def test_solve_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """``qxedge solve p.json | head -1``: the reader has gone when the result is printed."""
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            [*QXEDGE, "solve", str(bqm_file(tmp_path)), "--solver", "exact", "--deadline-ms", "30000"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert run.returncode == 128 + signal.SIGPIPE
    assert run.stderr == ""


def test_log_json_makes_the_fatal_line_json_too(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text("site: demo\nwindow: {length_s: -1}\n")
    run = subprocess.run(
        [*QXEDGE, "--log-json", "run", "-c", str(tmp_path / "edge.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # every line is a JSON object
    assert lines[-1]["level"] == "ERROR" and lines[-1]["message"].startswith("qxedge: invalid configuration")
    assert lines[-1]["problems"] == ["window.length_s: Input should be greater than 0"]


@pytest.mark.parametrize("command", ["foo", "--bogus"])
def test_run_script_refuses_an_unknown_command_with_its_usage(command: str) -> None:
    run = subprocess.run([str(ROOT / "run"), command], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    first, *usage = run.stderr.splitlines()
    assert first == f"run: unknown command '{command}'"
    assert usage[0].startswith("One entry point") and any(line.startswith("  ./run test") for line in usage)


def test_run_script_help_goes_to_stdout() -> None:
    run = subprocess.run([str(ROOT / "run"), "help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "./run demo" in run.stdout and run.stderr == ""


def test_log_json_makes_an_argument_error_json_too() -> None:
    run = subprocess.run(
        [*QXEDGE, "--log-json", "demo", "--duration", "-1"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    (line,) = [json.loads(line) for line in run.stderr.splitlines()]
    assert line["message"] == "qxedge demo: error: argument --duration: must be > 0, got -1"
