"""Property tests (hypothesis) of the job decoder, issue 21: no input can crash a worker.

Whatever a job carries, :func:`decode_job` (and :func:`decode_bqm` under it) returns a job whose model has
the declared number of variables and at most the declared interactions, the model dimod itself reads from
that serialisation, or raises :class:`JobRejected` with a non-empty reason; never another exception.
The strategies start from valid serialisations and break them (wrong types, out-of-range, boolean and
float indices, length mismatches, NaN, infinities and huge integers, odd labels, missing and extra keys,
giant counts with short arrays, deep nesting), plus raw bytes and random JSON. A crash of dimod's native
code would end the test run, so the nastiest payloads also run in a child process
(:func:`test_the_nastiest_payloads_in_a_child_process`). Example counts keep the file under ~20 s;
with ``CI`` set the examples are derandomized (the same on every run).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dimod
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qxedge.hybrid.wire import (
    Job,
    JobLimits,
    JobRejected,
    ResultEnvelope,
    decode_bqm,
    decode_job,
    label_sample,
    unlabel_sample,
)

LIMITS = JobLimits(max_variables=50, max_interactions=200, max_payload_bytes=200_000, max_deadline_ms=60_000)
WIDE = JobLimits(  # nothing refused by size: the checks behind the limits must hold on their own
    max_variables=2**31 - 1, max_interactions=2**40, max_model_bytes=2**62, max_payload_bytes=2**30
)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SITE, JOB_ID = "gumi", "j-1"
T = TypeVar("T")


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 2, 1.0, 1.5, -0.0, math.nan, math.inf, -math.inf, 2**31 - 1, 2**31,
    2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400, -(10**400), 1e308, "", "0", "x",
    "\ud800", "日本語", "\x00", [], [None], [0], [[1]], [True, False], [1.0, 2.0], ["1", "2"], [math.nan],
    {}, {"a": 1}, {"bqm_schema": "3.0.0"}, {"bqm_schema": "1.0.0"}, deep(60),
]  # fmt: skip
LABELS = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=6),
    st.floats(-1e18, 1e18, allow_nan=False),
    st.tuples(st.integers(0, 9), st.text(max_size=3)),
)
ODD_LABELS = st.one_of(
    st.sampled_from([True, False, None, math.nan, math.inf, 2**63, -(2**63) - 1, 10**400, "\udfff"]),
    st.sampled_from(["1", "1.0", "True", "(0, '')", 1, 1.0, -0.0, 0, [1, 2], [1.0, 2], "(1, 2)"]).map(
        copy.deepcopy
    ),
    st.lists(st.integers(0, 3) | st.text(max_size=2) | st.none() | st.lists(st.integers(), max_size=2)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),  # unicode, never a lone surrogate
)
INDICES = st.integers(-5, 60) | st.sampled_from([-(2**31), 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 10**30])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
NASTIES = st.sampled_from(NASTY).map(copy.deepcopy)  # fresh: the mutations change lists in place
ANY = JSON | NASTIES | INDICES


@st.composite
def models(draw: st.DrawFn, max_variables: int = 10) -> dimod.BinaryQuadraticModel:
    """A valid model: labels of every kind a job may carry, random biases, any vartype."""
    labels = draw(st.lists(LABELS, max_size=max_variables, unique_by=(lambda x: x, str)))
    bias = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-100, 100)
    bqm = dimod.BinaryQuadraticModel(draw(st.sampled_from(["BINARY", "SPIN"])))
    bqm.offset = draw(bias)
    for label in labels:
        bqm.add_variable(label, draw(bias))
    if len(labels) >= 2:
        at = st.integers(0, len(labels) - 1)
        for i, j in draw(st.lists(st.tuples(at, at), max_size=3 * len(labels))):
            if i != j:
                bqm.add_quadratic(labels[i], labels[j], draw(bias))
    return bqm


def serialised(bqm: dimod.BinaryQuadraticModel) -> dict[str, Any]:
    """The model as it arrives off the wire (tuples become lists)."""
    doc: dict[str, Any] = json.loads(json.dumps(bqm.to_serializable(use_bytes=False)))
    return doc


@st.composite
def coo_problems(draw: st.DrawFn) -> dict[str, Any]:
    """A valid serialisation written by hand: interactions in any order, either way round, repeated,
    and self-loops (which dimod folds into the linear biases or the offset)."""
    n = draw(st.integers(1, 12))
    m = draw(st.integers(0, 40))
    index = st.integers(0, n - 1)
    bias = st.integers(-50, 50)  # integers: any summation order gives the same model
    return {
        "type": "BinaryQuadraticModel",
        "version": {"bqm_schema": "3.0.0"},
        "use_bytes": False,
        "num_variables": n,
        "num_interactions": m,
        "variable_labels": draw(st.permutations([f"x{i}" for i in range(n)])),
        "variable_type": draw(st.sampled_from(["BINARY", "SPIN"])),
        "offset": draw(bias),
        "linear_biases": draw(st.lists(bias, min_size=n, max_size=n)),
        "quadratic_biases": draw(st.lists(bias, min_size=m, max_size=m)),
        "quadratic_head": draw(st.lists(index, min_size=m, max_size=m)),
        "quadratic_tail": draw(st.lists(index, min_size=m, max_size=m)),
    }


def _replace_field(draw: st.DrawFn, p: dict[str, Any]) -> None:
    p[draw(st.sampled_from([*p, "offset"]))] = draw(ANY)


def _arrays(p: dict[str, Any]) -> list[str]:
    return [k for k, v in p.items() if isinstance(v, list)]


def _replace_entry(draw: st.DrawFn, p: dict[str, Any]) -> None:
    keys = [k for k in _arrays(p) if p[k]]
    if keys:
        key = draw(st.sampled_from(keys))
        at = draw(st.integers(0, len(p[key]) - 1))
        nasty = INDICES if key in ("quadratic_head", "quadratic_tail") else ANY
        p[key][at] = draw(ODD_LABELS if key == "variable_labels" else nasty | NASTIES)


def _resize_array(draw: st.DrawFn, p: dict[str, Any]) -> None:
    keys = _arrays(p)
    if keys:
        key = draw(st.sampled_from(keys))
        if p[key] and draw(st.booleans()):
            p[key].pop(draw(st.integers(0, len(p[key]) - 1)))
        else:
            p[key].append(draw(ANY))


def _count(draw: st.DrawFn, p: dict[str, Any]) -> None:
    key = draw(st.sampled_from(["num_variables", "num_interactions"]))
    p[key] = draw(
        st.sampled_from([-1, 0, 1, 2**31, 2**40, 10**30, True, 1.0, "3", None]) | st.integers(0, 60)
    )


def _drop_key(draw: st.DrawFn, p: dict[str, Any]) -> None:
    p.pop(draw(st.sampled_from([*p, "offset"])), None)


def _extra_key(draw: st.DrawFn, p: dict[str, Any]) -> None:
    p[draw(st.text(max_size=12))] = draw(ANY)


def _vartype(draw: st.DrawFn, p: dict[str, Any]) -> None:
    p["variable_type"] = draw(
        st.sampled_from(["binary", "Spin", "DISCRETE", "", 0, None, ["SPIN"], {"SPIN": 1}])
    )


def _labels(draw: st.DrawFn, p: dict[str, Any]) -> None:
    old = p.get("variable_labels")
    n = len(old) if isinstance(old, list) and old else 1
    p["variable_labels"] = draw(
        st.lists(
            ODD_LABELS | LABELS.map(lambda x: list(x) if isinstance(x, tuple) else x), min_size=n, max_size=n
        )
    )


def _huge_numbers(draw: st.DrawFn, p: dict[str, Any]) -> None:
    key = draw(st.sampled_from(["offset", "linear_biases", "quadratic_biases"]))
    huge = st.sampled_from([math.nan, math.inf, -math.inf, 10**400, 2**1024, 1e308, -1e308, 10**300])
    if isinstance(p.get(key), list) and p[key]:
        p[key] = [draw(huge) for _ in p[key]]
    else:
        p[key] = draw(huge)


MUTATIONS: list[Callable[[st.DrawFn, dict[str, Any]], None]] = [
    _replace_field, _replace_entry, _resize_array, _count, _drop_key, _extra_key, _vartype, _labels,
    _huge_numbers,
]  # fmt: skip


@st.composite
def mutated_problems(draw: st.DrawFn) -> dict[str, Any]:
    """A valid serialisation, then one to three of the mutations above."""
    p = serialised(draw(models()))
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        mutate(draw, p)
    return p


def job_doc(model: Any, **changes: Any) -> dict[str, Any]:
    doc = {
        "v": 1,
        "job_id": JOB_ID,
        "site": SITE,
        "kind": "bqm",
        "problem": model,
        "deadline_ms": 1500,
        "submitted_at": time.time(),
        "solver": "auto",
        "reply_to": f"qx/v1/{SITE}/results/{JOB_ID}",
        "meta": {},
    }
    doc.update(changes)
    return doc


ENVELOPE_KEYS = [
    "v",
    "job_id",
    "site",
    "kind",
    "problem",
    "deadline_ms",
    "submitted_at",
    "solver",
    "reply_to",
    "meta",
    "x",
]


@st.composite
def mutated_jobs(draw: st.DrawFn) -> bytes:
    """A job whose model, or envelope, or both, is broken; as the bytes of a message."""
    problem = draw(mutated_problems()) if draw(st.booleans()) else serialised(draw(models()))
    doc = job_doc(problem)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(ENVELOPE_KEYS))
        if draw(st.integers(0, 4)) == 0:
            doc.pop(key, None)
        else:
            doc[key] = draw(ANY | st.sampled_from([deep(500), "qx/v1/gumi/results/j-1", 10**6, 0, 5]))
    return json.dumps(doc).encode()


def outcome(decode: Callable[[], T]) -> T | Rejection:
    try:
        return decode()
    except JobRejected as exc:
        return Rejection(str(exc))


@dataclass(frozen=True)
class Rejection:
    reason: str


def check_bqm(problem: Any, limits: JobLimits) -> None:
    """The property of decode_bqm: the model dimod reads from the serialisation, of the declared size,
    or a rejection with a reason."""
    bqm = outcome(lambda: decode_bqm(problem, limits))
    if isinstance(bqm, Rejection):
        assert bqm.reason, "a rejection says why"
        event(f"rejected: {bqm.reason[:40]}")
        return
    event("decoded")
    assert bqm.num_variables == problem["num_variables"]
    assert bqm.num_interactions <= problem["num_interactions"]
    as_floats = {key: [float(b) for b in problem[key]] for key in ("linear_biases", "quadratic_biases")}
    reference = dimod.BinaryQuadraticModel.from_serializable({**problem, **as_floats})  # checked: safe
    assert list(bqm.variables) == list(reference.variables)
    assert bqm.is_almost_equal(reference, places=6)
    check_answerable(bqm)


def check_answerable(bqm: dimod.BinaryQuadraticModel) -> None:
    """A model that was accepted can be answered: its energies are finite in either vartype (a solver
    may change it), and a sample comes back through a result's JSON to the model's own labels."""
    for model in (bqm.binary, bqm.spin):
        for value in model.vartype.value:
            sample = dict.fromkeys(model.variables, value)
            assert math.isfinite(model.energy(sample)), sample
    sample = dict.fromkeys(bqm.variables, 1)
    result = ResultEnvelope(job_id=JOB_ID, status="ok", sample=label_sample(bqm, list(sample.values())))
    back = ResultEnvelope.model_validate_json(result.payload())
    assert back.sample is not None and unlabel_sample(bqm, back.sample) == sample


def check_job(payload: bytes, limits: JobLimits) -> None:
    job = outcome(lambda: decode_job(payload, limits, topic_site=SITE))
    if isinstance(job, Rejection):
        assert job.reason, "a rejection says why"
        event(f"rejected: {job.reason[:40]}")
        return
    event("decoded")
    assert isinstance(job, Job)
    problem = json.loads(payload)["problem"]
    assert job.bqm.num_variables == problem["num_variables"]
    assert job.bqm.num_interactions <= problem["num_interactions"]
    assert math.isfinite(job.deadline_at)
    check_answerable(job.bqm)


@FUZZ
@given(bqm=models())
def test_valid_models_decode_to_themselves(bqm: dimod.BinaryQuadraticModel) -> None:
    """Label for label (dimod may list the variables in another order: [0, -1.0] comes back as
    [-1.0, 0], the same model)."""
    decoded = decode_bqm(serialised(bqm), LIMITS)
    assert set(decoded.variables) == set(bqm.variables)
    assert decoded.is_almost_equal(bqm, places=6) and decoded.vartype is bqm.vartype


@FUZZ
@given(problem=coo_problems())
def test_interactions_in_any_order_decode_to_the_model_dimod_reads(problem: dict[str, Any]) -> None:
    """The decoder hands dimod its interactions sorted (an order it appends in): the same model."""
    decoded = decode_bqm(problem, LIMITS)
    assert decoded == dimod.BinaryQuadraticModel.from_serializable(problem)


@FUZZ
@given(problem=mutated_problems())
def test_mutated_models_decode_or_are_rejected(problem: dict[str, Any]) -> None:
    check_bqm(problem, LIMITS)
    check_bqm(problem, WIDE)  # giant counts with short arrays: rejected by the checks, not the limits


@FUZZ
@given(problem=ANY | st.dictionaries(st.sampled_from(["type", "num_variables", "version", "x"]), ANY))
def test_anything_as_a_model_is_rejected(problem: Any) -> None:
    check_bqm(problem, WIDE)


@FUZZ
@given(payload=mutated_jobs())
def test_mutated_jobs_decode_or_are_rejected(payload: bytes) -> None:
    check_job(payload, LIMITS)


@settings(FUZZ, max_examples=150)
@given(payload=st.binary(max_size=300) | JSON.map(lambda doc: json.dumps(doc).encode()))
def test_random_bytes_and_json_are_rejected(payload: bytes) -> None:
    check_job(payload, LIMITS)


@settings(FUZZ, max_examples=150)
@given(
    bqm=models(max_variables=4),
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_corrupted_bytes_of_a_valid_job_are_rejected_or_decode(
    bqm: dimod.BinaryQuadraticModel, cut: int, flips: list[tuple[int, int]]
) -> None:
    payload = bytearray(json.dumps(job_doc(serialised(bqm))).encode())
    for at, byte in flips:
        payload[at % len(payload)] = byte
    check_job(bytes(payload[: max(1, len(payload) - cut % 40)]), LIMITS)


def nastiest_payloads() -> list[bytes]:
    """Every field of a valid job, and every entry of its arrays, replaced by each nasty value; the
    shapes that crashed or exhausted dimod's native code before it was guarded; broken bytes."""
    bqm = dimod.BinaryQuadraticModel(
        {"a": 1.0, "b": -2.0, 3: 0.5}, {("a", "b"): 3.0, ("b", 3): -1.0}, 0.25, "SPIN"
    )
    base = serialised(bqm)
    problems: list[Any] = []
    for key in base:
        for value in NASTY:
            problems.append({**base, key: value})
            if isinstance(base[key], list):
                for at in range(len(base[key])):
                    problems.append({**base, key: [value if i == at else x for i, x in enumerate(base[key])]})
    for head in (-1, -2, 3, 2**31 - 1, 2**31, 2**32 - 1, -(2**31), 10**9):
        problems.append({**base, "quadratic_head": [head, 1]})
        problems.append({**base, "quadratic_tail": [1, head]})
    for n in (0, 3, 4, 2**31 - 1, 2**40):  # giant counts with short arrays, empty models
        problems.append({**base, "num_variables": n})
        problems.append({**base, "num_interactions": n})
        problems.append(
            {**base, "num_variables": n, "num_interactions": n, "variable_labels": list(range(min(n, 4)))}
        )
    payloads = [json.dumps(job_doc(p)).encode() for p in problems]
    payloads += [json.dumps(job_doc(base, **{k: v})).encode() for k in ENVELOPE_KEYS for v in NASTY]
    payloads += [
        b"",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"v": 1, "problem": ' + b"{" * 50_000,
        b"nul\x00l",
        b"1e999",
    ]
    return payloads


CHILD = """
import base64, json, sys
from qxedge.hybrid.wire import JobLimits, JobRejected, decode_job
limits = JobLimits.model_validate_json(sys.argv[1])
for line in sys.stdin:
    payload = base64.b64decode(line)
    try:
        decode_job(payload, limits, topic_site="gumi")
    except JobRejected as exc:
        assert str(exc), payload[:200]
print("decoded", sys.argv[2])
"""


def test_the_nastiest_payloads_in_a_child_process() -> None:
    """A crash of dimod's native code (a segfault, an allocation until killed) fails this test instead of
    ending the run: the payloads are decoded in a child python, which must exit 0."""
    payloads = nastiest_payloads()
    lines = "".join(base64.b64encode(p).decode() + "\n" for p in payloads)
    for limits in (LIMITS, WIDE):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, limits.model_dump_json(), str(len(payloads))],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-3000:]}"
        assert child.stdout.strip() == f"decoded {len(payloads)}"
