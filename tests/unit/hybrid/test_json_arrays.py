"""The model's long arrays read straight into NumPy (:mod:`hybrid.json_arrays`) give what orjson gives.

Equivalence with the plain reading (orjson's lists, then the model's checks) on valid models, on every
way of writing a number JSON allows, and on hostile text (hypothesis): either the fast reading says it
does not apply (None) or its document equals orjson's value for value; and a job decodes, or is
rejected with the same reason, whichever reading it went through.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qxedge.hybrid import json_arrays
from qxedge.hybrid.json_arrays import parse_arrays
from qxedge.hybrid.wire import JobLimits, JobRejected, decode_document, decode_job, parse_json
from qxedge.testing import random_bqm
from tests.unit.hybrid.test_wire_fuzz import LIMITS, job_doc, mutated_jobs, serialised

PROPS = settings(
    max_examples=300,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = json_arrays.INDEX_KEYS + json_arrays.BIAS_KEYS


def same_document(fast: Any, plain: Any) -> None:
    """``fast`` is ``plain`` with some number lists as NumPy arrays of the same values."""
    if isinstance(fast, np.ndarray):
        assert isinstance(plain, list)
        want = np.float64 if fast.dtype == np.float64 else np.int64
        expected = np.array(plain, dtype=want)
        assert fast.dtype == want and fast.shape == expected.shape
        assert np.array_equal(fast, expected)
        assert np.array_equal(np.signbit(fast), np.signbit(expected))  # -0.0 stays -0.0
    elif isinstance(fast, dict):
        assert isinstance(plain, dict) and list(fast) == list(plain)
        for key in fast:
            same_document(fast[key], plain[key])
    else:
        assert fast == plain or (fast != fast and plain != plain)  # NaN is not in JSON, all the same


def check(data: bytes) -> Any:
    """The property: None, or orjson's document with arrays; returns the fast document."""
    fast = parse_arrays(data, min_array_bytes=0)
    if fast is None:
        return None
    plain = orjson.loads(data)  # the fast reading never accepts what orjson refuses
    same_document(fast, plain)
    return fast


def test_a_complete_model_is_read_as_arrays_equal_to_orjson() -> None:
    problem = random_bqm(120, 1.0, 3, "SPIN").to_serializable(use_bytes=False)
    for data in (
        json.dumps(job_doc(problem)).encode(),
        orjson.dumps(problem),
        json.dumps(problem, indent=2).encode(),
    ):
        fast = check(data)
        assert fast is not None
        model = fast.get("problem", fast)
        assert {k for k in KEYS if isinstance(model[k], np.ndarray)} == set(KEYS)


def test_short_arrays_are_left_to_orjson() -> None:
    data = json.dumps(job_doc(random_bqm(5, 1.0, 1).to_serializable(use_bytes=False))).encode()
    assert parse_arrays(data) is None  # every array under MIN_ARRAY_BYTES
    assert check(data) is not None


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
)
SEPARATORS = st.sampled_from([",", ", ", " ,", " , ", ",\n", "\t,\r\n"])


def written(values: list[Any], separator: str) -> str:
    return "[" + separator.join(json.dumps(v) for v in values) + "]"


@PROPS
@given(
    heads=st.lists(st.integers(0, 2**64), min_size=1, max_size=40),
    biases=st.lists(NUMBERS, min_size=1, max_size=40),
    separator=SEPARATORS,
)
def test_every_way_of_writing_numbers_reads_as_orjson_does(
    heads: list[int], biases: list[Any], separator: str
) -> None:
    text = (
        f'{{"type": "BinaryQuadraticModel", "quadratic_head": {written(heads, separator)}, '
        f'"quadratic_biases": {written(biases, separator)}, "quadratic_tail": [0]}}'
    )
    fast = check(text.encode())
    fits = all(h < 10**18 for h in heads) and all(not isinstance(b, int) or abs(b) < 2**63 for b in biases)
    if fits:  # indices of up to 18 digits and numbers orjson reads: the fast reading takes them
        assert fast is not None and isinstance(fast["quadratic_head"], np.ndarray)


HOSTILE = st.text(alphabet="0123456789,-+.eE \n\t" + '"[]{}:xnul\\', max_size=40)


@PROPS
@given(
    key=st.sampled_from(KEYS),
    inner=HOSTILE,
    before=st.sampled_from(['{"a": 1, ', '{"problem": {', '{"meta": {"x": "', '{"problem": {"a": [']),
    after=st.sampled_from(["}", "}}", '"}, "v": 1}', "]}}", ', "quadratic_head": [1]}']),
    spacing=st.sampled_from([":", " : ", ":\n", "\\u003a"]),
)
def test_hostile_text_reads_as_orjson_or_not_at_all(
    key: str, inner: str, before: str, after: str, spacing: str
) -> None:
    check(f'{before}"{key}"{spacing}[{inner}]{after}'.encode())


COMPACT = st.text(alphabet="0123456789-+.eE, ", max_size=40)  # text Polars' reader may get


@PROPS
@given(key=st.sampled_from(KEYS), inner=COMPACT)
def test_compact_number_text_reads_as_orjson_or_not_at_all(key: str, inner: str) -> None:
    check(f'{{"problem": {{"{key}": [{inner}]}}}}'.encode())


@pytest.mark.parametrize(
    ("inner", "kinds"),
    [
        ("05,1", KEYS),  # a leading zero
        ("1, 05", KEYS),
        ("1,-05", json_arrays.BIAS_KEYS),
        ("1, -05", json_arrays.BIAS_KEYS),
        ("1 2", KEYS),
        ("+1,2", json_arrays.BIAS_KEYS),
        (".5,1", json_arrays.BIAS_KEYS),
        ("1.,2", json_arrays.BIAS_KEYS),
        ("1.e5,2", json_arrays.BIAS_KEYS),
        ("1,,2", KEYS),
        ("1,2,", KEYS),
        (",1,2", KEYS),
        ("1.2.3,4", json_arrays.BIAS_KEYS),
        ("1e2e3,4", json_arrays.BIAS_KEYS),
        ("1e400,2", json_arrays.BIAS_KEYS),  # orjson refuses what overflows to infinity
        ("9223372036854775808,1", json_arrays.INDEX_KEYS),  # beyond int64
    ],
)
def test_numbers_json_does_not_write_are_not_read(inner: str, kinds: tuple[str, ...]) -> None:
    for key in kinds:
        assert parse_arrays(f'{{"problem": {{"{key}": [{inner}]}}}}'.encode(), min_array_bytes=0) is None


@pytest.mark.parametrize("separator", [",", ", "])
def test_compact_numbers_read_as_orjson_reads_them(separator: str) -> None:
    biases = ["0", "-0.0", "-0e0", "10", "1E+05", "2e-3", "-12.5e-7", "0.5"]
    biases += ["18446744073709551615", "1e308", "5e-324", "1e-400"]
    for inner in (biases, ["1", "-0", "2"], ["-0"]):  # orjson: the integer -0 is 0, not -0.0
        fast = check(f'{{"problem": {{"quadratic_biases": [{separator.join(inner)}]}}}}'.encode())
        assert fast is not None and isinstance(fast["problem"]["quadratic_biases"], np.ndarray)
    indices = separator.join(["0", "10", "9223372036854775807", "7"])
    fast = check(f'{{"problem": {{"quadratic_head": [{indices}]}}}}'.encode())
    assert fast is not None and fast["problem"]["quadratic_head"].dtype == np.int64


@pytest.mark.parametrize("inner", ["1 ,2", "1,  2", " 1,2 ", "1,\n2"])
def test_other_whitespace_is_read_by_orjson(inner: str) -> None:
    """Whitespace Polars' reader does not skip (_written_as_json says no): orjson reads the text."""
    for key in KEYS:
        fast = check(f'{{"problem": {{"{key}": [{inner}]}}}}'.encode())
        assert fast is not None and isinstance(fast["problem"][key], np.ndarray)


@pytest.mark.parametrize(
    "text",
    [
        '{"quadratic_head": [1, 2], "quadratic_head": [3]}',  # repeated: orjson keeps the last
        '{"quadratic_head": 5, "quadratic_head": [3, 4]}',
        '{"quadratic_head": [3, 4], "quadratic_head": 5}',
        '{"meta": {"quadratic_head": [1, 2]}, "problem": {"quadratic_head": [3]}}',
        '{"meta": "\\"quadratic_head\\": [1, 2]", "problem": {"quadratic_head": [3]}}',
        '{"problem": {"quadratic\\u005fhead": [1, 2]}}',
        '{"problem": {"quadratic_head": [01, 2]}}',
        '{"problem": {"quadratic_head": [1, 2,]}}',
        '{"problem": {"quadratic_head": [1,, 2]}}',
        '{"problem": {"quadratic_head": [1 2]}}',
        '{"problem": {"quadratic_head": [18446744073709551616]}}',
        '{"problem": {"quadratic_head": [9223372036854775808]}}',
        '{"problem": {"quadratic_head": [-1, 2]}}',
        '{"problem": {"quadratic_head": []}}',
        '{"problem": {"quadratic_biases": [1e400, 2]}}',
        '{"problem": {"quadratic_biases": [.5, 1.]}}',
        '{"problem": {"quadratic_biases": [+1, -0.0, 1E5, 2e-3]}}',
        '{"problem": {"quadratic_biases": [1, 2]], "x": [1]}}',
        '{"problem": {"linear_biases": [1, [2]], "quadratic_biases": [3]}}',
        '[{"quadratic_head": [1, 2]}]',
    ],
)
def test_tricky_documents_read_as_orjson_or_not_at_all(text: str) -> None:
    data = text.encode()
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        assert parse_arrays(data, min_array_bytes=0) is None
        return
    check(data)


def outcome(decode: Any) -> Any:
    try:
        return decode()
    except JobRejected as exc:
        return ("rejected", str(exc))


@PROPS
@given(payload=mutated_jobs())
def test_jobs_decode_or_are_rejected_alike_through_either_reading(payload: bytes) -> None:
    """Every array of these small jobs goes through the fast reading (MIN_ARRAY_BYTES = 0)."""
    with mock.patch.object(json_arrays, "MIN_ARRAY_BYTES", 0):
        fast = outcome(lambda: decode_job(payload, LIMITS))
    plain = outcome(lambda: decode_document(parse_json(payload), LIMITS))
    if isinstance(plain, tuple) or isinstance(fast, tuple):
        assert fast == plain
    else:
        assert fast.bqm == plain.bqm and list(fast.bqm.variables) == list(plain.bqm.variables)


def test_a_large_job_decodes_to_the_model_of_the_plain_reading() -> None:
    bqm = random_bqm(300, 1.0, 11)
    payload = json.dumps(job_doc(serialised(bqm))).encode()
    limits = JobLimits(max_payload_bytes=1 << 30)
    assert parse_arrays(payload) is not None  # the long arrays are read fast
    job = decode_job(payload, limits)
    assert job.bqm == decode_document(parse_json(payload), limits).bqm  # type: ignore[union-attr]
    assert math.isclose(
        job.bqm.energy(dict.fromkeys(bqm.variables, 1)), bqm.energy(dict.fromkeys(bqm.variables, 1))
    )
