"""``qxedge solve PROBLEM``: the portfolio on one problem, without a broker.

PROBLEM is a bare ``BinaryQuadraticModel.to_serializable(use_bytes=False)`` JSON, a whole job envelope
(kind ``bqm`` or ``cqm``), or a file written by dimod's ``ConstrainedQuadraticModel.to_file()`` (a
``cqm`` job, recognised by its ``DIMODCQM`` magic); it goes through the same validation as a job off the
wire, with one difference: a file is not a broker message, so ``limits.max_payload_bytes`` does not
apply, ``limits.max_file_bytes`` does (the model itself stays within ``limits.max_model_bytes``). A
complete model of 2000 variables (~50 MB of JSON) is solved here though it cannot travel in one 8.5 MB
MQTT packet. Then the solver processes start and warm up what the job needs (none when it is settled in-
process), and only then does the deadline's clock start: no process starts inside the deadline. The
result's ``timings`` say what reading and validating the file took (``read_ms``) and the warm-up
(``warmup_ms``), each candidate's ``ran_in`` where it ran: in-process, a solver process or a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from qxedge.core.heap import freeze_start_up
from qxedge.hybrid.cqm_wire import CQM_TYPE, is_cqm_file, read_cqm
from qxedge.hybrid.decoded_bqm import DecodedBqm
from qxedge.hybrid.json_arrays import parse_arrays
from qxedge.hybrid.portfolio import Portfolio
from qxedge.hybrid.service import DataCenterConfig, answer
from qxedge.hybrid.tabu import calibration_for
from qxedge.hybrid.wire import (
    AnyJob,
    CqmJob,
    Job,
    JobEnvelope,
    JobRejected,
    ResultEnvelope,
    build_checked,
    check_bqm,
    decode_document,
    parse_json,
    results_topic,
)

DEFAULT_DEADLINE_MS = 2000


def read_job(path: Path, cfg: DataCenterConfig, solver: str | None, deadline_ms: int | None) -> AnyJob:
    """The file as a job submitted once it has been read and validated; JobRejected with the reason
    when it is not acceptable."""
    limits = cfg.limits
    if deadline_ms is not None and not limits.min_deadline_ms <= deadline_ms <= limits.max_deadline_ms:
        raise JobRejected(
            f"--deadline-ms {deadline_ms} out of range [{limits.min_deadline_ms}, {limits.max_deadline_ms}] "
            "(limits.min_deadline_ms, limits.max_deadline_ms)"
        )
    limit = limits.max_file_bytes
    too_large = JobRejected(f"{path} is larger than the limit of {limit:,} bytes (limits.max_file_bytes)")
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            regular = stat.S_ISREG(info.st_mode)
            if regular and info.st_size > limit:
                raise too_large
            raw = file.read() if regular else file.read(limit + 1)  # a pipe has no size to check first
    except OSError as exc:
        raise JobRejected(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > limit:
        raise too_large
    if is_cqm_file(raw):
        cqm = read_cqm(raw, cfg.limits)
        del raw
        env = _local_envelope({"type": CQM_TYPE, "encoding": "file"}, "cqm", solver, deadline_ms)
        return CqmJob(env, cqm, env.submitted_at)
    doc = parse_arrays(raw)
    if doc is None:
        doc = parse_json(raw, what=str(path))
    del raw
    if isinstance(doc, dict) and "problem" in doc and "v" in doc:
        job = decode_document(doc, cfg.limits)
        _build_model(job)
        now = time.time()  # the deadline counts from here: reading and validating are not the solver's
        env = job.envelope.model_copy(
            update={
                "submitted_at": now,
                "solver": solver or job.envelope.solver,
                "deadline_ms": deadline_ms or job.envelope.deadline_ms,
            }
        )
        return dataclasses.replace(job, envelope=env, received_at=now)
    if not isinstance(doc, dict):
        raise JobRejected(f"{path}: expected a serialised BQM, a job envelope (a JSON object) or a CQM file")
    model = check_bqm(doc, cfg.limits)
    build_checked(model)  # before the clock starts, as an envelope's (_build_model)
    env = _local_envelope(doc, "bqm", solver, deadline_ms)
    return Job(env, model, env.submitted_at)


def _build_model(job: AnyJob) -> None:
    """Build a ``bqm`` job's dimod model now, before its clock starts (its decoded model keeps it): a
    file's reading is not the solver's time. (A worker builds it once a dense model's matrix has gone
    to tabu: its job's clock runs from the arrival anyway.)"""
    if isinstance(job, Job) and isinstance(job.model, DecodedBqm):
        build_checked(job.model)


def _local_envelope(
    problem: dict[str, Any], kind: Literal["bqm", "cqm"], solver: str | None, deadline_ms: int | None
) -> JobEnvelope:
    """The envelope of a bare model read from a file, submitted now."""
    job_id = str(uuid.uuid4())
    return JobEnvelope(
        v=1,
        job_id=job_id,
        site="local",
        kind=kind,
        problem=problem,
        deadline_ms=deadline_ms or DEFAULT_DEADLINE_MS,
        submitted_at=time.time(),
        solver=solver or "auto",
        reply_to=results_topic("local", job_id),
    )


async def solve_file(
    path: Path, cfg: DataCenterConfig, solver: str | None = None, deadline_ms: int | None = None
) -> ResultEnvelope:
    """The portfolio's answer to the problem in ``path``; ``timings["read_ms"]``: reading and validating
    the file, before the deadline's clock started."""
    started = time.perf_counter()
    try:
        job = read_job(path, cfg, solver, deadline_ms)
    except JobRejected as exc:
        return ResultEnvelope(
            job_id=exc.job_id, status="rejected", reason=str(exc), timings=_read_ms(started), worker="local"
        )
    read = _read_ms(started)
    solvers = cfg.solvers
    if isinstance(job, Job):  # tabu's set-up timed at this job's size alone (hybrid.tabu.calibrate)
        calibrate = calibration_for(job.model.num_variables)
        solvers = solvers.model_copy(
            update={"tabu": solvers.tabu.model_copy(update={"calibrate_sizes": calibrate})}
        )
    portfolio = Portfolio(solvers)
    try:
        if isinstance(job, CqmJob):
            needed = portfolio.cqm_in_processes(job.envelope.solver)
        else:
            needed = portfolio.in_processes(job.envelope.solver, job.model.num_variables)
        warmup_s = await asyncio.to_thread(portfolio.warm_up, needed) if needed else 0.0
        freeze_start_up()  # before the clock starts: no full collection walks the start-up's objects
        now = time.time()  # the clock starts now, the processes warm
        envelope = job.envelope.model_copy(update={"submitted_at": now})
        job = dataclasses.replace(job, envelope=envelope, received_at=now)
        result = await answer(portfolio, job, "local")
        if needed:
            read["warmup_ms"] = round(warmup_s * 1000, 3)
    finally:
        portfolio.close()
    return result.model_copy(update={"timings": {**read, **result.timings}})


def _read_ms(started: float) -> dict[str, float]:
    return {"read_ms": round((time.perf_counter() - started) * 1000, 3)}


def format_result(result: ResultEnvelope, *, max_sample: int = 40) -> str:
    lines = [f"status: {result.status}" + (f" ({result.reason})" if result.reason else "")]
    if result.energy is not None:
        lines.append(
            f"best energy: {result.energy:g} by {result.solver} in {result.timings.get('solve_ms', 0):.0f} ms"
            + ("" if result.raw_energy is None else f" (raw best {result.raw_energy:g})")
        )
    if result.feasible is not None:
        lines.append(f"feasible: {'yes' if result.feasible else 'NO'}, objective {result.objective:g}")
    if "warmup_ms" in result.timings:
        lines.append(f"solver processes warmed up in {result.timings['warmup_ms']:.0f} ms, before the clock")
    if result.candidates:
        head = (
            f"  {'solver':<11} {'status':<8} {'energy':>14} {'raw best':>14} {'seconds':>8}  {'ran in':<14}"
        )
        lines.append(head + "  note")
        for c in result.candidates:
            energy = "" if c.energy is None else f"{c.energy:g}"
            raw = "" if c.raw_best_energy is None else f"{c.raw_best_energy:g}"
            where = c.details.get("ran_in", "")
            if c.gap is not None and c.bound is not None:
                c = c.model_copy(update={"reason": c.reason or f"bound {c.bound:g}, gap {c.gap:.2%}"})
            lines.append(
                f"  {c.solver:<11} {c.status:<8} {energy:>14} {raw:>14} {c.seconds:>8.3f}  {where:<14}"
                f"  {c.reason or ''}".rstrip()
            )
    if result.sample is not None:
        ones = [k for k, v in result.sample.items() if v == 1]
        shown = ", ".join(ones[:max_sample]) + (" ..." if len(ones) > max_sample else "")
        lines.append(f"sample: {len(ones)} of {len(result.sample)} variables are 1: {shown}")
    return "\n".join(lines)
