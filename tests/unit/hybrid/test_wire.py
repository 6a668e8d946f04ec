import json
import math
import time
from typing import Any

import dimod
import pytest

from qxedge.hybrid.wire import JobLimits, JobRejected, ResultEnvelope, decode_job

LIMITS = JobLimits(
    max_variables=50,
    max_interactions=100,
    max_payload_bytes=20_000,
    min_deadline_ms=10,
    max_deadline_ms=60_000,
)


def job(**changes: Any) -> dict[str, Any]:
    bqm = dimod.BinaryQuadraticModel(
        {"a": 1.0, "b": -2.0, 3: 0.5}, {("a", "b"): 3.0, ("b", 3): -1.0}, 0.25, dimod.BINARY
    )
    doc = {
        "v": 1,
        "job_id": "j-1",
        "site": "gumi",
        "kind": "bqm",
        "problem": bqm.to_serializable(use_bytes=False),
        "deadline_ms": 1500,
        "submitted_at": time.time(),
        "solver": "auto",
        "reply_to": "qx/v1/gumi/results/j-1",
        "meta": {"plan": "x"},
    }
    doc.update(changes)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_round_trip() -> None:
    decoded = decode_job(encode(job()), LIMITS, topic_site="gumi")
    assert decoded.envelope.job_id == "j-1"
    assert decoded.bqm.num_variables == 3
    assert decoded.bqm.energy({"a": 1, "b": 1, 3: 1}) == pytest.approx(1 - 2 + 0.5 + 3 - 1 + 0.25)
    assert decoded.deadline_at == pytest.approx(decoded.envelope.submitted_at + 1.5)
    result = ResultEnvelope(
        job_id="j-1",
        status="ok",
        sample={"a": 0, "b": 1, "3": 0},
        energy=-1.75,
        solver="exact",
        timings={"solve_ms": 1.0},
        worker="w1",
    )
    assert ResultEnvelope.model_validate_json(result.payload()) == result


def problem(**changes: Any) -> dict[str, Any]:
    p = job()["problem"]
    p.update(changes)
    return p


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (encode(job(v=2)), "unknown schema version 2"),
        (encode({**job(), "v": None}), "unknown schema version None"),
        (encode(job(solver="annealer")), "unknown solver 'annealer'"),
        (encode(job(problem=problem(type="DQM"))), "malformed BQM"),
        (encode(job(problem=problem(linear_biases="x"))), "malformed BQM: linear_biases"),
        (encode(job(problem=problem(quadratic_head=[0, 99]))), "malformed BQM"),
        (encode(job(problem=problem(num_variables=-1))), "malformed BQM"),
        (
            encode(job(problem=problem(linear_biases=[1.0, math.nan, 0.0]))),
            "non-finite bias in linear_biases",
        ),
        (
            encode(job(problem=problem(quadratic_biases=[math.inf, 1.0]))),
            "non-finite bias in quadratic_biases",
        ),
        (encode(job(problem=problem(num_variables=51))), "too many variables: 51 > limit 50"),
        (encode(job(problem=problem(num_interactions=101))), "too many interactions: 101 > limit 100"),
        (encode(job(meta={"pad": "x" * 30_000})), "over the limit of 20000"),
        (encode(job(deadline_ms=5)), "deadline_ms 5 out of range [10, 60000]"),
        (encode(job(deadline_ms=120_000)), "out of range"),
        (encode(job(site="osan")), "does not match the topic's site 'gumi'"),
        (encode(job(reply_to="qx/v1/osan/results/j-1")), "reply_to must be qx/v1/gumi/results/j-1"),
        (encode(job(colour="red")), "colour: unknown key"),
        (encode({k: v for k, v in job().items() if k != "problem"}), "problem: Field required"),
        (b'{"v": 1, "problem": ' + b"[" * 3000, "nested too deeply"),
        (encode(job(problem=problem(linear_biases=[1.0, 10**400, 0.0]))), "non-finite bias in linear_biases"),
        (encode(job(problem=problem(offset=10**400))), "non-finite or non-numeric offset"),
        (b"\xff{", "not a JSON document"),
        (b"[1]", "must be a JSON object"),
    ],
)
def test_every_rejection_has_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(JobRejected) as info:
        decode_job(payload, LIMITS, topic_site="gumi")
    assert reason in str(info.value)


def test_rejection_keeps_the_job_id_when_readable() -> None:
    with pytest.raises(JobRejected) as info:
        decode_job(encode(job(v=7)), LIMITS)
    assert info.value.job_id == "j-1"
    for unsafe in ("bad id with spaces", "x\n", "a/b", "#"):  # never usable as a topic level
        with pytest.raises(JobRejected) as info:
            decode_job(encode(job(v=7, job_id=unsafe)), LIMITS)
        assert info.value.job_id is None


def test_a_job_from_a_clock_ahead_counts_from_its_arrival() -> None:
    decoded = decode_job(encode(job(submitted_at=time.time() + 3600)), LIMITS)
    assert decoded.deadline_at == pytest.approx(decoded.received_at + 1.5)


def test_sites_and_job_ids_from_the_outside_are_plain_names() -> None:
    from qxedge.hybrid.wire import peek_job_id, site_of_topic

    assert site_of_topic("qx/v1/gumi-3/jobs") == "gumi-3"
    assert site_of_topic("qx/v1/gu\nmi/jobs") is None and site_of_topic("qx/v1/gumi/other") is None
    assert peek_job_id(b'{"v": 1, "job_id": "j-42", "problem": {}}') == "j-42"
    assert peek_job_id(b'{"job_id": "bad\\n"}') is None
