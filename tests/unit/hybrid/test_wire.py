import json
import math
import time
from typing import Any

import dimod
import numpy as np
import pytest

from qxedge.hybrid.wire import (
    DecodeRate,
    JobLimits,
    JobRejected,
    ResultEnvelope,
    decode_bqm,
    decode_job,
    model_bytes,
    peek_due,
    sized_payload,
)

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


def test_a_job_is_decoded_without_building_dimods_model_which_is_then_built_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dimod's model is built when first asked (hybrid.decoded_bqm): a dense job's search starts first."""
    real = dimod.BinaryQuadraticModel.from_numpy_vectors
    builds: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> dimod.BinaryQuadraticModel:
        builds.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dimod.BinaryQuadraticModel, "from_numpy_vectors", counted)
    decoded = decode_job(encode(job()), LIMITS)
    assert builds == []
    assert decoded.bqm.energy({"a": 1, "b": 1, 3: 1}) == pytest.approx(1 - 2 + 0.5 + 3 - 1 + 0.25)
    assert decoded.bqm is decoded.bqm and builds == [1]


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


def test_a_result_over_max_result_bytes_becomes_a_small_error() -> None:
    big = ResultEnvelope(
        job_id="j-1", status="ok", sample={f"x{i}": 1 for i in range(200)}, solver="sa", worker="w1"
    )
    assert sized_payload(big, 10_000) == (big, big.payload())
    sent, payload = sized_payload(big, 1024)
    size = len(big.payload())
    assert json.loads(payload) == {
        "v": 1,
        "job_id": "j-1",
        "status": "error",
        "reason": f"result too large ({size} bytes > max_result_bytes 1024)",
        "candidates": [],
        "timings": {},
        "worker": "w1",
    }
    assert sent.status == "error" and len(payload) < 1024 < size


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
            encode(job(problem=problem(quadratic_head=[-1, 1]))),
            "quadratic_head holds index -1, outside [0, 3",
        ),
        (encode(job(problem=problem(quadratic_tail=[1, 10**9]))), "quadratic_tail holds index 1000000000"),
        (
            encode(job(problem=problem(quadratic_head=[0, 10**30]))),
            "quadratic_head must be a list of integers: 1e+30 at [1]",
        ),
        (encode(job(problem=problem(quadratic_head=[0, True]))), "quadratic_head must be a list of integers"),
        (encode(job(problem=problem(quadratic_tail=[1.0, 2]))), "quadratic_tail must be a list of integers"),
        (encode(job(problem=problem(quadratic_head=[0]))), "quadratic_head has 1 entries, expected 2"),
        (encode(job(problem=problem(quadratic_biases=[1.0]))), "quadratic_biases has 1 entries, expected 2"),
        (encode(job(problem=problem(linear_biases=[1.0, 2.0]))), "linear_biases has 2 entries, expected 3"),
        (encode(job(problem=problem(variable_labels=["a", "b"]))), "variable_labels must be a list of 3"),
        (encode(job(problem=problem(variable_labels=["a", None, 3]))), "label null is not a string"),
        (encode(job(problem=problem(variable_labels=["a", [[1]], 3]))), "label [[1]] is not a string"),
        (encode(job(problem=problem(variable_labels=["a", {"b": 1}, 3]))), 'label {"b": 1} is not'),
        (encode(job(problem=problem(variable_labels=["a", True, 3]))), "label true is not a string"),
        (encode(job(problem=problem(variable_type="QUBIT"))), '"variable_type" must be "BINARY" or "SPIN"'),
        (encode(job(problem=problem(version="3"))), '"version" must be'),
        (encode(job(problem={k: v for k, v in problem().items() if k != "offset"})), "missing offset"),
        (encode(job(problem=problem(use_bytes=True))), "use to_serializable(use_bytes=False)"),
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
        (b"\xff{", "the job is not JSON"),
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


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ([1, "1", "c"], 'labels 1 and "1" collide'),
        (["a", [1, 2], "(1, 2)"], 'labels [1, 2] and "(1, 2)" collide'),
        (["a", 1, 1.0], "labels 1 and 1.0 collide"),
        (["a", 0, -0.0], "labels 0 and -0.0 collide"),
        (["a", [1, 2], [1.0, 2]], "labels [1, 2] and [1.0, 2] collide"),
        (["a", "b", "a"], 'labels "a" and "a" collide'),
        ([1, True, "c"], "label true is not a string"),  # a boolean is no label: never one with 1 or "True"
        (["True", [True], "c"], "label [true] is not a string"),
        (["a", "\ud800", "c"], 'label "\\ud800" is not a string'),  # a result could not carry it
        (["a", 1e30, "c"], "label 1e+30 is not a string, a number within 64 bits"),  # dimod: C integer
        (["a", 2**63, "c"], "label 9223372036854775808 is not"),
    ],
)
def test_labels_that_would_come_back_as_one_sample_key_are_rejected(labels: list[Any], named: str) -> None:
    with pytest.raises(JobRejected) as info:
        decode_job(encode(job(problem=problem(variable_labels=labels))), LIMITS)
    assert named in str(info.value)


def test_labels_within_the_rules_are_kept() -> None:
    labels = ["True", 1, 2.5, -(2**63), 2**63 - 1, [1, "1"], "日本"]
    bqm = decode_bqm(problem(variable_labels=labels, num_variables=7, linear_biases=[0.0] * 7), LIMITS)
    assert list(bqm.variables)[:5] == ["True", 1, 2.5, -(2**63), 2**63 - 1]


def test_biases_whose_energies_would_overflow_are_rejected() -> None:
    with pytest.raises(JobRejected, match=r"biases too large: their magnitudes sum to inf \(limit 1e300\)"):
        decode_bqm(problem(linear_biases=[1e308, 1e308, 0.0]), LIMITS)
    assert decode_bqm(problem(linear_biases=[1e299, -1e299, 0.0]), LIMITS).num_variables == 3


@pytest.mark.parametrize("doc", [None, [], "BinaryQuadraticModel", 3])
def test_a_model_that_is_not_an_object_is_rejected(doc: Any) -> None:
    with pytest.raises(JobRejected, match='"type" must be "BinaryQuadraticModel"'):
        decode_bqm(doc, LIMITS)


@pytest.mark.parametrize(("schema", "ok"), [("3.0.0", True), ("2.0.0", True), ("1.0.0", False), ("3", False)])
def test_the_serialisation_schemas_dimod_reads(schema: str, ok: bool) -> None:
    doc = problem(version={"bqm_schema": schema})
    if ok:
        assert decode_bqm(doc, LIMITS).num_variables == 3
    else:
        with pytest.raises(JobRejected, match='"version" must be'):
            decode_bqm(doc, LIMITS)


def test_the_model_memory_estimate_and_its_limit() -> None:
    """40·n² (tabu's dense matrices) + 32·m (dimod's adjacency), checked before any array is built: the
    arrays here are far too short, yet the reason is the size."""
    assert model_bytes(2000, 1_999_000) == 40 * 2000**2 + 32 * 1_999_000 == 223_968_000
    limits = JobLimits(max_variables=5000, max_interactions=10**7, max_model_bytes=200_000_000)
    with pytest.raises(JobRejected) as info:
        decode_bqm(problem(num_variables=2000, num_interactions=1_999_000), limits)
    assert str(info.value) == (
        "model too large: 2000 variables and 1999000 interactions need ~223,968,000 bytes in a solver "
        "(40·n² + 32·m) > limit max_model_bytes 200,000,000"
    )


def test_the_default_limits_take_a_complete_model_of_2000_variables() -> None:
    """Issue 21: tabu solves a complete n = 2000 to the best known in 2 s; the interaction count alone
    refused every complete model above n = 632."""
    n = 2000
    rng = np.random.default_rng(7)
    head, tail = np.triu_indices(n, 1)
    serialised = {
        **problem(),
        "num_variables": n,
        "num_interactions": len(head),
        "variable_labels": list(range(n)),
        "linear_biases": rng.uniform(-1, 1, n).tolist(),
        "quadratic_biases": rng.uniform(-1, 1, len(head)).tolist(),
        "quadratic_head": head[::-1].tolist(),  # in an order dimod inserts slowly: sorted first
        "quadratic_tail": tail[::-1].tolist(),
    }
    bqm = decode_bqm(serialised, JobLimits())
    assert (bqm.num_variables, bqm.num_interactions) == (n, n * (n - 1) // 2)
    i = 1234
    assert bqm.get_quadratic(int(head[i]), int(tail[i])) == serialised["quadratic_biases"][::-1][i]


def test_tuple_labels_come_back_as_tuples() -> None:
    bqm = dimod.BinaryQuadraticModel({("x", 1): 1.0, ("x", 2): -1.0, 3: 0.0}, {}, 0.0, dimod.BINARY)
    decoded = decode_job(encode(job(problem=bqm.to_serializable(use_bytes=False))), LIMITS)
    assert list(decoded.bqm.variables) == [("x", 1), ("x", 2), 3]


def big_job(deadline_ms: int) -> bytes:
    """A job of ~200 kB, its envelope's fields after its problem as the agent writes them."""
    bqm = dimod.BinaryQuadraticModel({i: 1.0 for i in range(200)}, {}, 0.0, dimod.BINARY)
    bqm.add_quadratic_from((i, j, -1.0) for i in range(200) for j in range(i + 1, 200, 2))
    doc = job(problem=bqm.to_serializable(use_bytes=False), deadline_ms=deadline_ms)
    doc = {"problem": doc.pop("problem"), **doc}  # the problem first: the deadline is at the far end
    return encode(doc)


def test_the_due_time_of_a_payload_is_read_without_parsing_it() -> None:
    payload = big_job(1500)
    doc = json.loads(payload)
    assert peek_due(payload) == pytest.approx(doc["submitted_at"] + 1.5)
    assert peek_due(b'{"v": 1, "deadline_ms": "soon"}') is None


def test_a_large_payload_that_cannot_be_parsed_by_its_deadline_is_refused_at_once() -> None:
    """A 28 MB complete n = 2000 job with a 1 s deadline took 1.5 s to parse: it was answered `late`,
    0.8 s after its deadline (issue 21's overrun). With the parse time measured, it is refused at once."""
    limits = JobLimits(max_payload_bytes=1 << 20, max_deadline_ms=60_000)
    rate = DecodeRate()
    assert decode_job(big_job(60_000), limits, rate=rate).bqm.num_variables == 200
    measured = rate.seconds_per_byte
    assert measured != DecodeRate().seconds_per_byte  # it learned this machine's rate
    slow = DecodeRate(seconds_per_byte=1e-3)  # 200 s for 200 kB
    with pytest.raises(
        JobRejected, match=r"needs ~\d+\.\d\d s to parse here, more than the 1\.\d\d s"
    ) as err:
        decode_job(big_job(1500), limits, rate=slow)
    assert err.value.job_id == "j-1"
    assert decode_job(big_job(1500), limits).bqm.num_variables == 200  # no rate: parsed as before
