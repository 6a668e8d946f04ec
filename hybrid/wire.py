"""Wire format of offloaded jobs and their results (ARCHITECTURE.md section 3, schema version 1).

Job, on ``qx/v1/{site}/jobs``::

    {"v": 1, "job_id": "<uuid>", "site": "gumi-line-3", "kind": "bqm",
     "problem": <dimod BinaryQuadraticModel.to_serializable(use_bytes=False)>,
     "deadline_ms": 1500, "submitted_at": <epoch s>, "solver": "auto" | "exact" | "sa" | "tabu" | "qaoa",
     "reply_to": "qx/v1/gumi-line-3/results/<uuid>", "meta": {...}}

Result, on the job's ``reply_to``::

    {"v": 1, "job_id": "...", "status": "ok" | "late" | "rejected" | "error", "reason": "...",
     "sample": {"<var>": 0 | 1}, "energy": -679.0, "solver": "tabu",
     "candidates": [{"solver": "qaoa", "energy": ..., "raw_best_energy": ..., "seconds": ...}, ...],
     "timings": {"queued_ms": ..., "solve_ms": ...}, "worker": "<id>"}

A candidate whose classical polish beat its raw best is credited as ``<solver>+polish`` (e.g.
``qaoa+polish``), in ``candidates`` and in the headline ``solver``; the result then also carries
``raw_energy`` (optional, additive: the schema version stays 1), the credited candidate's raw best.

:func:`decode_job` validates a payload against :class:`JobLimits` and raises :class:`JobRejected` with a
reason a person can act on; the worker answers it with a ``rejected`` result and never crashes.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal, cast

import dimod
import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qxedge.connectors.mqtt import site_topic
from qxedge.core.errors import PayloadError
from qxedge.hybrid.backends import solver_names
from qxedge.hybrid.config import SolverName as SolverName
from qxedge.hybrid.decoded_bqm import DecodedBqm, built
from qxedge.hybrid.json_arrays import parse_arrays

SCHEMA_VERSION = 1
POLISHED = "+polish"  # credit suffix of an answer a classical polish improved (a label, never a backend)
Status = Literal["ok", "late", "rejected", "error"]
_ID_CHARS = r"[A-Za-z0-9_.:-]{1,128}"  # safe in a topic level: no "/", "+", "#", NUL or newline
_ID = rf"^{_ID_CHARS}$"
_SITE_CHARS = r"[A-Za-z0-9_.-]{1,128}"
_SITE = rf"^{_SITE_CHARS}$"


class JobRejected(PayloadError):
    """A job that cannot be accepted; ``str(exc)`` is the reason sent back in the result."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.job_id = job_id


def model_bytes(num_variables: int, num_interactions: int) -> int:
    """Estimated peak memory, in bytes, of a model with ``num_variables`` (n) variables and
    ``num_interactions`` (m) interactions in a solver process: ``40·n² + 32·m``.

    - ``32·m``: dimod's adjacency holds each interaction twice, an int32 index and a float64 bias
      (16 bytes with padding); measured 33 bytes an interaction for a complete n = 2000.
    - ``40·n²``: tabu (dwave-samplers) makes the model a dense n-by-n float64 QUBO, 8·n² bytes, and holds
      five such matrices at its peak (the upper triangle, the symmetric copy, its C++ search's copy, ...):
      measured 5.0 times 8·n² at n = 2000 (complete) and n = 5000 (sparse).

    For a complete model the dense matrices dominate (n = 2000: 160 MB against 64 MB); the ``n`` terms
    (a bias and a label, ~130 bytes a variable) are left out. The decoding itself (JSON objects, the
    NumPy arrays) is transient and bounded by the payload's size, not counted here."""
    return _DENSE_BYTES * num_variables * num_variables + _ADJACENCY_BYTES * num_interactions


_DENSE_BYTES = 40  # per n²: five n-by-n float64 matrices at tabu's peak
_ADJACENCY_BYTES = 32  # per interaction: twice (int32 index + float64 bias, 16 bytes)
_MAX_INDEX = 2**31 - 1  # dimod's index type is int32


class JobLimits(BaseModel):
    """What a data center accepts; anything beyond is rejected with the limit it broke. Memory is
    governed by ``max_model_bytes`` (the estimate of :func:`model_bytes`); the counts bound the arrays a
    job may declare, whatever their memory (docs/offload.md, "Size limits")."""

    model_config = ConfigDict(extra="forbid")
    max_variables: int = Field(5000, ge=1, le=_MAX_INDEX)
    max_interactions: int = Field(
        2_000_000, ge=0, description="the complete model on 2000 variables has 1,999,000 interactions"
    )
    max_model_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="the estimated memory of a model in a solver process, 40·n² + 32·m bytes "
        "(1 GiB: every model within the default counts; a complete n = 2000 needs 224 MB)",
    )
    max_payload_bytes: int = Field(
        8 * 1024 * 1024,
        ge=256,
        description="a job message; keep it below the broker's max_packet_size "
        "(8,500,000 in configs/mosquitto)",
    )
    max_file_bytes: int = Field(
        1 << 30,
        ge=256,
        description="`qxedge solve FILE`: the largest file read (a file is not a broker message); "
        "parsing its JSON takes 5 to 8 times its size in memory",
    )
    max_constraints: int = Field(10_000, ge=0, description="cqm jobs: constraints of one model")
    max_unpacked_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="cqm jobs: the model's file once unzipped, all its members together (a zip bomb "
        "stops here: each member is read with this limit)",
    )
    min_deadline_ms: int = Field(10, ge=1)
    max_deadline_ms: int = Field(600_000, ge=1)
    max_jobs_in_flight_per_site: int = Field(100, ge=1, description="queued or solving, per worker")
    max_result_bytes: int = Field(
        8_000_000,
        ge=1024,
        description="larger results are answered 'result too large'; keep it below the broker's "
        "max_packet_size (8,500,000 in configs/mosquitto) less the topic",
    )


class JobEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int
    job_id: str = Field(pattern=_ID)
    site: str = Field(pattern=_SITE)
    kind: Literal["bqm", "cqm"] = "bqm"
    problem: dict[str, Any]
    deadline_ms: int = Field(gt=0)
    submitted_at: float
    solver: SolverName = "auto"
    reply_to: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Candidate(BaseModel):
    """One solver's answer (or why it has none) within a result."""

    model_config = ConfigDict(extra="forbid")
    solver: str
    status: Literal["ok", "timeout", "skipped", "refused", "error"] = "ok"
    energy: float | None = None
    raw_best_energy: float | None = Field(None, description="QAOA: best sampled energy before any polishing")
    seconds: float = 0.0
    reason: str | None = None
    sample: dict[str, int] | None = Field(None, exclude=True)  # kept out of the listing
    details: dict[str, Any] = Field(default_factory=dict)
    feasible: bool | None = Field(None, description="cqm jobs: whether the sample meets every constraint")
    objective: float | None = Field(None, description="cqm jobs: the objective's value at the sample")
    bound: float | None = Field(None, description="milp: the proven lower bound on the objective")
    gap: float | None = Field(None, description="milp: (objective - bound) / |objective|, 0 when proven")


class ResultEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int = SCHEMA_VERSION
    job_id: str | None
    status: Status
    reason: str | None = None
    sample: dict[str, int] | None = None
    energy: float | None = None
    raw_energy: float | None = Field(None, description="the credited candidate's raw_best_energy, if any")
    solver: str | None = Field(None, description="the credit: a backend, or <backend>+polish")
    candidates: list[Candidate] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    worker: str | None = None
    feasible: bool | None = Field(None, description="cqm jobs: whether the sample meets every constraint")
    objective: float | None = Field(None, description="cqm jobs: the objective's value at the sample")

    def payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


@dataclass(frozen=True, slots=True)
class Job:
    """A ``bqm`` job; its model as decoded (dimod's model is built when first asked: :attr:`bqm`)."""

    envelope: JobEnvelope
    model: DecodedBqm | dimod.BinaryQuadraticModel
    received_at: float

    @property
    def bqm(self) -> dimod.BinaryQuadraticModel:
        return built(self.model)

    @property
    def deadline_at(self) -> float:
        """Epoch seconds by which the answer must be back. Clocks are assumed NTP-synchronised; a job
        stamped in the future (a clock ahead) counts from its arrival, so its deadline cannot stretch."""
        return _deadline_at(self.envelope, self.received_at)


def _deadline_at(envelope: JobEnvelope, received_at: float) -> float:
    return min(envelope.submitted_at, received_at) + envelope.deadline_ms / 1000.0


@dataclass(frozen=True, slots=True)
class CqmJob:
    """A ``cqm`` job: its model is dimod's ConstrainedQuadraticModel (:mod:`hybrid.cqm_wire`)."""

    envelope: JobEnvelope
    cqm: dimod.ConstrainedQuadraticModel
    received_at: float

    @property
    def deadline_at(self) -> float:
        """As :attr:`Job.deadline_at`."""
        return _deadline_at(self.envelope, self.received_at)


AnyJob = Job | CqmJob


def sized_payload(result: ResultEnvelope, max_bytes: int) -> tuple[ResultEnvelope, bytes]:
    """The result to publish and its payload: over ``max_bytes``, a small ``error`` result saying so
    instead (a packet over the broker's limit gets the worker dropped, and QoS 1 sends it again at
    every reconnect: the worker would never recover)."""
    payload = result.payload()
    if len(payload) <= max_bytes:
        return result, payload
    small = ResultEnvelope(
        job_id=result.job_id,
        status="error",
        reason=f"result too large ({len(payload)} bytes > max_result_bytes {max_bytes})",
        timings=result.timings,
        worker=result.worker,
    )
    return small, small.payload()


def results_topic(site: str, job_id: str) -> str:
    return site_topic(site, f"results/{job_id}")


def jobs_topic(site: str) -> str:
    return site_topic(site, "jobs")


def site_of_topic(topic: str) -> str | None:
    """``qx/v1/{site}/jobs`` → site (None unless the site is a plain name we may answer on)."""
    parts = topic.split("/")
    if (
        len(parts) == 4
        and parts[:2] == ["qx", "v1"]
        and parts[3] == "jobs"
        and re.fullmatch(_SITE_CHARS, parts[2])
    ):
        return parts[2]
    return None


PEEK_BYTES = 4096
BIG_PAYLOAD_BYTES = 64 * 1024  # a payload this large is parsed off the event loop, its time predicted
_PEEKED = {
    field: re.compile(rb'"' + field + rb'"\s*:\s*(-?[0-9][0-9.eE+-]{0,30})')
    for field in (b"deadline_ms", b"submitted_at")
}


def peek_due(payload: bytes) -> float | None:
    """When a payload's answer is due, without parsing it (``submitted_at`` + ``deadline_ms``, found among
    the envelope's fields at either end of the payload, around its problem); None when either is not
    there. Only a guess to refuse a job early: the parsed job is what counts."""
    ends = payload[:PEEK_BYTES] + b"\n" + payload[-PEEK_BYTES:]
    found = {}
    for field, pattern in _PEEKED.items():
        match = pattern.search(ends)
        try:
            found[field] = float(match.group(1)) if match else math.nan
        except ValueError:
            return None
    if not all(math.isfinite(v) for v in found.values()):
        return None
    return min(found[b"submitted_at"], time.time()) + found[b"deadline_ms"] / 1000


class DecodeRate:
    """Seconds per byte that parsing and checking a large job takes here: a guess (25 ns: 13 ns measured
    on a quiet 2-core box for a complete n = 2000 model's 28.6 MB with its arrays read straight into
    NumPy, :mod:`hybrid.json_arrays`; 16 to 27 ns beside other work) until this worker has measured
    its own."""

    def __init__(self, seconds_per_byte: float = 25e-9) -> None:
        self.seconds_per_byte = seconds_per_byte

    def predict(self, size: int) -> float:
        return size * self.seconds_per_byte

    def observe(self, size: int, seconds: float) -> None:
        self.seconds_per_byte += 0.5 * (seconds / size - self.seconds_per_byte)


def peek_job_id(payload: bytes) -> str | None:
    """The job id of a payload without parsing it (to answer a job refused before decoding)."""
    ends = payload[:PEEK_BYTES] + b"\n" + payload[-PEEK_BYTES:]  # the envelope's fields, around its problem
    match = re.search(rb'"job_id"\s*:\s*"(' + _ID_CHARS.encode() + rb')"', ends)
    return match.group(1).decode() if match else None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "job"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{where}: {msg}"


_BQM_KEYS = (
    "type", "version", "use_bytes", "num_variables", "num_interactions", "variable_labels",
    "variable_type", "offset", "linear_biases", "quadratic_biases", "quadratic_head", "quadratic_tail",
)  # fmt: skip
_BQM_SCHEMA = re.compile(r"[23]\.\d+\.\d+")  # the versions dimod's from_serializable reads without bytes
_LABEL_INT = 2**63  # a numeric label is within 64 bits (dimod keeps an integral one as a C integer)
_MAX_BIAS_SUM = 1e300  # below it no energy, nor a change of vartype (x4), overflows a float


def _shown(value: Any, width: int = 60, show: Callable[[Any], str] = json.dumps) -> str:
    """``value`` in a reason, as JSON (or ``show``), cut to ``width`` (what cannot be shown, named by
    its type)."""
    try:
        text = show(value)
    except (TypeError, ValueError, RecursionError):  # ValueError: an int over 4300 digits
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


def _label(raw: Any) -> Hashable:
    """A JSON label → the model's label (a list becomes a tuple, as dimod serialises tuples)."""
    if isinstance(raw, list) and all(_is_scalar_label(x) for x in raw):
        return tuple(raw)
    if _is_scalar_label(raw):
        return cast(Hashable, raw)
    raise JobRejected(
        f"malformed BQM: label {_shown(raw)} is not a string, a number within 64 bits or a flat list of them"
    )


def _is_scalar_label(x: Any) -> bool:
    """A string that is Unicode text (no lone surrogate: a result could not carry it), or an integer or
    a finite float within 64 bits (dimod indexes an integral label as a C integer: 1e30 overflows it);
    never a boolean."""
    kind = type(x)
    if kind is str:
        return x.isascii() or _is_text(x)
    return (kind is int or (kind is float and math.isfinite(x))) and -_LABEL_INT <= x < _LABEL_INT


def _is_text(x: str) -> bool:
    try:
        x.encode()
    except UnicodeEncodeError:
        return False
    return True


def _labels(raw: list[Any]) -> list[Hashable]:
    """The model's labels; JobRejected naming the first two that would be one variable or one sample key
    (results carry ``str(label)``: 1 and "1", 1 and 1.0, or [1, 2] and "(1, 2)", would come back as one
    key; booleans are no labels, so True cannot meet 1 or "True")."""
    labels = [_label(x) for x in raw]
    first: dict[tuple[bool, Hashable], int] = {}  # (as a sample key?, label or key) -> its first index
    for i, label in enumerate(labels):
        for key in ((False, label), (True, str(label))):
            j = first.setdefault(key, i)
            if j != i:
                raise JobRejected(
                    f"malformed BQM: labels {_shown(raw[j])} and {_shown(raw[i])} collide "
                    f"(one variable or one sample key {str(label)[:60]!r})"
                )
    return labels


def _biases(problem: dict[str, Any], key: str, length: int) -> npt.NDArray[np.float64]:
    """``problem[key]`` as float64, converted once (read as an array already by
    :func:`~qxedge.hybrid.json_arrays.parse_arrays` when long); JobRejected unless it is ``length`` finite
    numbers."""
    raw = problem[key]
    if isinstance(raw, np.ndarray) and raw.dtype == np.float64 and raw.ndim == 1:
        if len(raw) != length:
            raise JobRejected(f"malformed BQM: {key} has {len(raw)} entries, expected {length}")
        if not np.isfinite(raw).all():
            raise JobRejected(f"non-finite bias in {key}")
        return raw
    if not isinstance(raw, list):
        raise JobRejected(f"malformed BQM: {key} must be a list of numbers")
    if len(raw) != length:
        raise JobRejected(f"malformed BQM: {key} has {len(raw)} entries, expected {length}")
    if not set(map(type, raw)) <= {int, float}:  # never a boolean, a string or a list
        raise JobRejected(f"malformed BQM: {key} must be a list of numbers")
    try:
        values = np.array(raw, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        raise JobRejected(f"non-finite bias in {key}") from None
    if not np.isfinite(values).all():
        raise JobRejected(f"non-finite bias in {key}")
    return values


def _indices(problem: dict[str, Any], key: str, n: int, m: int) -> npt.NDArray[np.int32]:
    """``problem[key]`` as int32 variable indices, converted once; JobRejected unless it is ``m``
    integers in ``[0, n)`` (dimod's native code does not check: -1 was a crash, 10**9 an allocation); a
    long one may arrive as int64 already (:func:`~qxedge.hybrid.json_arrays.parse_arrays`)."""
    raw = problem[key]
    if isinstance(raw, np.ndarray) and raw.dtype == np.int64 and raw.ndim == 1:
        if len(raw) != m:
            raise JobRejected(f"malformed BQM: {key} has {len(raw)} entries, expected {m}")
        outside = (raw < 0) | (raw >= n)
        if outside.any():
            bad = int(raw[int(outside.argmax())])
            raise JobRejected(f"malformed BQM: {key} holds index {_shown(bad)}, outside [0, {n})")
        return raw.astype(np.int32)
    if not isinstance(raw, list):
        raise JobRejected(f"malformed BQM: {key} must be a list of integers")
    if len(raw) != m:
        raise JobRejected(f"malformed BQM: {key} has {len(raw)} entries, expected {m}")
    if not set(map(type, raw)) <= {int}:  # a JSON integer beyond 64 bits is parsed as a float
        at, bad = next((i, x) for i, x in enumerate(raw) if type(x) is not int)
        raise JobRejected(f"malformed BQM: {key} must be a list of integers: {_shown(bad)} at [{at}]")
    try:
        index = np.array(raw, dtype=np.int64)
    except OverflowError:  # beyond 64 bits
        index = None
    if index is None or (index.size > 0 and not 0 <= index.min() <= index.max() < n):
        bad = next(i for i in raw if not 0 <= i < n)
        raise JobRejected(f"malformed BQM: {key} holds index {_shown(bad)}, outside [0, {n})")
    return index.astype(np.int32)  # n <= 2**31 - 1 (JobLimits.max_variables)


def _offset(raw: Any) -> float:
    try:
        if type(raw) in (int, float) and math.isfinite(raw):
            return float(raw)
    except OverflowError:  # an integer too large for a float
        pass
    raise JobRejected("non-finite or non-numeric offset")


def _append_order(
    head: npt.NDArray[np.int32], tail: npt.NDArray[np.int32], n: int
) -> npt.NDArray[np.intp] | None:
    """A permutation that lists the interactions in an order dimod appends them in, or None when they
    are in one already (by lower then higher index, or by higher then lower, as ``to_serializable``
    writes them). dimod inserts each interaction into two sorted neighbourhoods: out of order, each
    insertion moves the rest of a neighbourhood (a shuffled complete n = 2000: 3.4 s, against 0.17 s)."""
    if head.size < 2:
        return None
    low = np.minimum(head, tail).astype(np.int64)
    high = np.maximum(head, tail).astype(np.int64)
    by_low = low * n + high
    if (by_low[1:] >= by_low[:-1]).all():
        return None
    by_high = high * n + low
    if (by_high[1:] >= by_high[:-1]).all():
        return None
    return np.argsort(by_low, kind="stable")


def decode_bqm(problem: Any, limits: JobLimits) -> dimod.BinaryQuadraticModel:
    """A serialised BQM → BinaryQuadraticModel, every field checked first (:func:`check_bqm`)."""
    return build_checked(check_bqm(problem, limits))


def build_checked(model: DecodedBqm) -> dimod.BinaryQuadraticModel:
    """dimod's model of checked arrays (built once, kept by ``model``); JobRejected should dimod refuse
    them all the same."""
    try:
        return model.bqm()
    except Exception as exc:  # checked by check_bqm; a rejection rather than a worker's error all the same
        raise JobRejected(f"malformed BQM: {type(exc).__name__}: {str(exc)[:200]}") from exc


def check_bqm(problem: Any, limits: JobLimits) -> DecodedBqm:
    """A serialised BQM → its checked arrays, from which dimod's model is built when first asked
    (:class:`~qxedge.hybrid.decoded_bqm.DecodedBqm`). The sizes are checked against ``limits`` first, from
    the declared counts, before any array is built; then every field dimod's native code reads, in Python
    (types, lengths, index ranges, labels, finite biases), each array converted to NumPy once."""
    if not isinstance(problem, dict) or problem.get("type") != "BinaryQuadraticModel":
        raise JobRejected('malformed BQM: "type" must be "BinaryQuadraticModel"')
    n, m = problem.get("num_variables"), problem.get("num_interactions")
    if type(n) is not int or type(m) is not int or n < 0 or m < 0:
        raise JobRejected("malformed BQM: num_variables and num_interactions must be non-negative integers")
    if n > limits.max_variables:
        raise JobRejected(f"too many variables: {n} > limit {limits.max_variables}")
    if m > limits.max_interactions:
        raise JobRejected(f"too many interactions: {m} > limit {limits.max_interactions}")
    need = model_bytes(n, m)
    if need > limits.max_model_bytes:
        raise JobRejected(
            f"model too large: {n} variables and {m} interactions need ~{need:,} bytes in a solver "
            f"(40·n² + 32·m) > limit max_model_bytes {limits.max_model_bytes:,}"
        )
    if problem.get("use_bytes", False) is not False:
        raise JobRejected("malformed BQM: use to_serializable(use_bytes=False)")
    missing = [key for key in _BQM_KEYS if key not in problem]
    if missing:
        raise JobRejected(f"malformed BQM: missing {', '.join(missing)}")
    version = problem["version"]
    schema = version.get("bqm_schema") if isinstance(version, dict) else None
    if not isinstance(schema, str) or not _BQM_SCHEMA.fullmatch(schema):
        raise JobRejected('malformed BQM: "version" must be {"bqm_schema": "3.0.0"}')
    vartype = problem["variable_type"]
    if vartype not in ("BINARY", "SPIN"):
        raise JobRejected('malformed BQM: "variable_type" must be "BINARY" or "SPIN"')
    if not isinstance(problem["variable_labels"], list) or len(problem["variable_labels"]) != n:
        raise JobRejected(f"malformed BQM: variable_labels must be a list of {n} labels")
    linear = _biases(problem, "linear_biases", n)
    quadratic = _biases(problem, "quadratic_biases", m)
    head = _indices(problem, "quadratic_head", n, m)
    tail = _indices(problem, "quadratic_tail", n, m)
    offset = _offset(problem["offset"])
    with np.errstate(over="ignore"):
        total = float(np.abs(linear).sum()) + float(np.abs(quadratic).sum()) + abs(offset)
    if not total < _MAX_BIAS_SUM:
        raise JobRejected(f"biases too large: their magnitudes sum to {total:.3g} (limit 1e300)")
    labels = _labels(problem["variable_labels"])
    order = _append_order(head, tail, n)
    if order is not None:
        head, tail, quadratic = head[order], tail[order], quadratic[order]
    return DecodedBqm(linear, head, tail, quadratic, offset, dimod.as_vartype(vartype), labels)


def decode_job(
    payload: bytes, limits: JobLimits, *, topic_site: str | None = None, rate: DecodeRate | None = None
) -> AnyJob:
    """Validate a job payload off the wire; raise JobRejected (with the job id when it could be read).
    With a ``rate``, a large payload that could not even be parsed before its deadline is refused at
    once (an answer after the deadline is of no use: the agent has decided by then), and the time each
    large one takes is measured into the rate."""
    received = time.time()
    size = len(payload)
    if size > limits.max_payload_bytes:
        raise JobRejected(f"payload of {size} bytes over the limit of {limits.max_payload_bytes}")
    big = rate is not None and size > BIG_PAYLOAD_BYTES
    if rate is not None and big:
        due, need = peek_due(payload), rate.predict(size)
        if due is not None and received + need > due:
            raise JobRejected(
                f"the payload of {size / 1e6:.1f} MB needs ~{need:.2f} s to parse here, more than the "
                f"{max(0.0, due - received):.2f} s its deadline leaves",
                peek_job_id(payload),
            )
    doc = parse_arrays(payload)
    if doc is None:
        doc = parse_json(payload, peek_job_id(payload))
    job = decode_document(doc, limits, topic_site=topic_site, received_at=received)
    if rate is not None and big:
        rate.observe(size, time.time() - received)
    return job


def parse_json(data: bytes, job_id: str | None = None, what: str = "the job") -> Any:
    """A JSON document, by orjson (a third of the stdlib's time on a model's number arrays). What orjson
    refuses goes through the stdlib, which takes more (integers beyond 64 bits, NaN) for the model's
    own checks to name, or says why it is not JSON; JobRejected either way."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise JobRejected(f"{what} is not JSON: {str(exc)[:120]}", job_id) from None
    except RecursionError:
        raise JobRejected(f"{what} is nested too deeply", job_id) from None


def decode_document(
    doc: Any, limits: JobLimits, *, topic_site: str | None = None, received_at: float | None = None
) -> AnyJob:
    """Validate a job already parsed from JSON (``qxedge solve`` reads files larger than any message);
    ``received_at`` (epoch seconds, default now) is when it arrived. Raise JobRejected, with the job id
    when it could be read."""
    received = time.time() if received_at is None else received_at
    if not isinstance(doc, dict):
        raise JobRejected("a job must be a JSON object")
    raw_id = doc.get("job_id")
    job_id = raw_id if isinstance(raw_id, str) and re.fullmatch(_ID_CHARS, raw_id) else None
    if doc.get("v") != SCHEMA_VERSION:
        raise JobRejected(
            f"unknown schema version {_shown(doc.get('v'), show=repr)} "
            f"(this worker speaks v{SCHEMA_VERSION})",
            job_id,
        )
    solver = doc.get("solver", "auto")
    if solver not in solver_names():
        raise JobRejected(
            f"unknown solver {_shown(solver, show=repr)} (one of {', '.join(solver_names())})", job_id
        )
    try:
        env = JobEnvelope.model_validate(doc)
    except ValidationError as exc:
        raise JobRejected(_first_error(exc), job_id) from None
    if topic_site is not None and env.site != topic_site:
        raise JobRejected(f"site {env.site!r} does not match the topic's site {topic_site!r}", job_id)
    if env.reply_to != results_topic(env.site, env.job_id):
        raise JobRejected(f"reply_to must be {results_topic(env.site, env.job_id)}", job_id)
    if not limits.min_deadline_ms <= env.deadline_ms <= limits.max_deadline_ms:
        raise JobRejected(
            f"deadline_ms {env.deadline_ms} out of range "
            f"[{limits.min_deadline_ms}, {limits.max_deadline_ms}]",
            job_id,
        )
    if not math.isfinite(env.submitted_at) or env.submitted_at <= 0:
        raise JobRejected("submitted_at must be epoch seconds", job_id)
    if env.kind == "cqm":
        from qxedge.hybrid.cqm_wire import decode_cqm

        try:
            return CqmJob(env, decode_cqm(env.problem, limits), received)
        except JobRejected as exc:
            raise JobRejected(str(exc), job_id) from None
    try:
        model = check_bqm(env.problem, limits)
    except JobRejected as exc:
        raise JobRejected(str(exc), job_id) from None
    return Job(env, model, received)


def unlabel_sample(bqm: dimod.BinaryQuadraticModel, sample: dict[str, int]) -> dict[Any, int]:
    """A sample with JSON (string) labels → the model's own labels; KeyError for a foreign label."""
    labels = {str(v): v for v in bqm.variables}
    return {labels[k]: x for k, x in sample.items()}


def label_sample(bqm: dimod.BinaryQuadraticModel, values: np.ndarray | list[int]) -> dict[str, int]:
    """Values in ``bqm.variables`` order → ``{label: value}`` with JSON-safe (string) labels."""
    return {str(v): int(x) for v, x in zip(bqm.variables, values, strict=True)}
