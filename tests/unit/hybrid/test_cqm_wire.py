"""The ``cqm`` job's wire form (issue 22): dimod's own CQM file, read with limits and checked before
dimod builds anything; a bad file is a ``rejected`` job with a reason, never a crash (hypothesis)."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
import zipfile
from typing import Any

import dimod
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qxedge.hybrid.cqm_wire import decode_cqm, encode_cqm, read_cqm
from qxedge.hybrid.wire import CqmJob, JobLimits, JobRejected, decode_job

LIMITS = JobLimits()
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mixed() -> dimod.ConstrainedQuadraticModel:
    """Binary and integer variables, linear and quadratic terms, ==, <= and >=, odd labels."""
    x, y, z = dimod.Binaries(["x", "y", "z"])
    i = dimod.Integer("i", lower_bound=-2, upper_bound=5)
    j = dimod.Integer(("j", 2), upper_bound=9)
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(2 * x * y - 3 * z + i + 4 + i * i - j)
    cqm.add_constraint(x + y + z == 1, label="one")
    cqm.add_constraint(y * z + i <= 3, label=("t", 1))
    cqm.add_constraint(3 * x - i + j >= -1, label=7)
    return cqm


def file_of(cqm: dimod.ConstrainedQuadraticModel, compress: bool = False) -> bytes:
    with cqm.to_file(compress=compress) as f:
        return bytes(f.read())


def job(problem: Any, **changes: Any) -> bytes:
    doc = {
        "v": 1,
        "job_id": "c-1",
        "site": "gumi",
        "kind": "cqm",
        "problem": problem,
        "deadline_ms": 1000,
        "submitted_at": time.time(),
        "reply_to": "qx/v1/gumi/results/c-1",
    }
    return json.dumps({**doc, **changes}).encode()


@pytest.mark.parametrize("compress", [False, True])
def test_a_cqm_job_round_trips(compress: bool) -> None:
    cqm = mixed()
    decoded = decode_job(job(encode_cqm(cqm, compress=compress)), LIMITS, topic_site="gumi")
    assert isinstance(decoded, CqmJob)
    assert decoded.cqm.is_equal(cqm)
    assert decoded.cqm.lower_bound("i") == -2 and decoded.cqm.vartype(("j", 2)) is dimod.INTEGER


def test_a_model_with_range_labels_and_no_constraints() -> None:
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(dimod.Binary(0) + 2 * dimod.Binary(1))
    assert read_cqm(file_of(cqm), LIMITS).is_equal(cqm)


def rezip(raw: bytes, change: dict[str, bytes | None], compression: int = zipfile.ZIP_STORED) -> bytes:
    """``raw`` with archive members replaced (None: removed) or added, its header kept."""
    length = struct.unpack_from("<I", raw, 10)[0]
    header = raw[: 14 + length]
    old = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    out.write(header)
    with zipfile.ZipFile(out, "a", compression=compression) as new:
        for name in old.namelist():
            if name not in change:
                new.writestr(name, old.read(name))
        for name, data in change.items():
            if data is not None:
                new.writestr(name, data)
    return out.getvalue()


def spin_model() -> dimod.ConstrainedQuadraticModel:
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(dimod.Spin("s"))
    return cqm


def real_model() -> dimod.ConstrainedQuadraticModel:
    cqm = dimod.ConstrainedQuadraticModel()
    cqm.set_objective(dimod.Real("r", upper_bound=3))
    return cqm


def soft_model() -> dimod.ConstrainedQuadraticModel:
    cqm = dimod.ConstrainedQuadraticModel()
    x, y = dimod.Binaries("xy")
    cqm.add_constraint(x + y <= 1, weight=2.0, label="soft")
    return cqm


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not a cqm", "does not start with DIMODCQM"),
        (b"DIMODCQM\x01\x00" + bytes(4), "file format version 1.0"),
        (file_of(spin_model()), "spin variables are not supported"),
        (file_of(real_model()), "real variables are not supported"),
        (file_of(soft_model()), "is soft (weighted)"),
        (file_of(mixed())[:300], "not a readable zip archive"),
        (rezip(file_of(mixed()), {"objective": None}), "the archive has no objective"),
        (rezip(file_of(mixed()), {"extra": b"x"}), "unknown archive member 'extra'"),
        (rezip(file_of(mixed()), {'constraints/"one"/sense': b"!="}), "sense must be ==, <= or >="),
        (rezip(file_of(mixed()), {'constraints/"one"/rhs': b"\x00" * 7}), "rhs must be one float64"),
        (
            rezip(file_of(mixed()), {'constraints/"one"/rhs': struct.pack("<d", float("nan"))}),
            "non-finite or huge bias",
        ),
        (rezip(file_of(mixed()), {"variable_labels.json": b'["x", "x", 1, 2, 3]'}), "collide"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(JobRejected) as caught:
        read_cqm(raw, LIMITS)
    assert reason in str(caught.value)


def test_indices_out_of_range_are_rejected_before_dimod_sees_them() -> None:
    """dimod's own reader trusts these indices (a crash, or memory it does not own)."""
    raw = file_of(mixed())
    objective = zipfile.ZipFile(io.BytesIO(raw)).read("objective")
    at = objective.index(b"INDX") + 8
    bad = objective[:at] + struct.pack("<i", 10**6) + objective[at + 4 :]
    with pytest.raises(JobRejected, match=r"names a variable index outside \[0, 5\)"):
        read_cqm(rezip(raw, {"objective": bad}), LIMITS)
    quad = objective.index(b"QUAD") + 12
    bad = objective[:quad] + struct.pack("<i", -7) + objective[quad + 4 :]
    with pytest.raises(JobRejected, match="local index outside"):
        read_cqm(rezip(raw, {"objective": bad}), LIMITS)


def test_limits_count_variables_constraints_and_unpacked_bytes() -> None:
    raw = file_of(mixed())
    with pytest.raises(JobRejected, match=r"too many variables: 5 > limit 4"):
        read_cqm(raw, JobLimits(max_variables=4))
    with pytest.raises(JobRejected, match=r"too many constraints: 3 > limit 2"):
        read_cqm(raw, JobLimits(max_constraints=2))
    with pytest.raises(JobRejected, match="max_unpacked_bytes"):
        read_cqm(raw, JobLimits(max_unpacked_bytes=1024))


def test_a_zip_bomb_stops_at_the_byte_limit() -> None:
    """A member that inflates to 64 MiB from ~64 kB: refused from its declared size, before reading."""
    bomb = rezip(file_of(mixed()), {"objective": bytes(64 << 20)}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 200_000
    with pytest.raises(JobRejected, match="max_unpacked_bytes"):
        read_cqm(bomb, JobLimits(max_unpacked_bytes=1 << 20))


def test_a_member_that_lies_about_its_size_is_rejected() -> None:
    """The central directory says 16 bytes, the member inflates to 4096: read up to 16, then the CRC."""
    raw = bytearray(rezip(file_of(mixed()), {"objective": bytes(4096)}, compression=zipfile.ZIP_DEFLATED))
    entry = raw.rfind(b"PK\x01\x02", 0, raw.rindex(b"objective"))
    struct.pack_into("<I", raw, entry + 24, 16)  # the entry's uncompressed size
    assert zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("objective").file_size == 16
    with pytest.raises(JobRejected, match="malformed CQM"):
        read_cqm(bytes(raw), LIMITS)


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ({"type": "BinaryQuadraticModel"}, 'malformed CQM: "type" must be "ConstrainedQuadraticModel"'),
        ({"type": "ConstrainedQuadraticModel", "encoding": "hex", "data": ""}, '"encoding" must be "base64"'),
        ({"type": "ConstrainedQuadraticModel", "encoding": "base64", "data": "***"}, "is not base64"),
        ({"type": "ConstrainedQuadraticModel", "encoding": "base64", "data": 3}, "must be a base64 string"),
        ({"type": "ConstrainedQuadraticModel", "encoding": "base64"}, 'exactly the keys "type"'),
    ],
)
def test_bad_envelopes_are_rejected_with_the_job_id(problem: Any, reason: str) -> None:
    with pytest.raises(JobRejected) as caught:
        decode_job(job(problem), LIMITS)
    assert reason in str(caught.value) and caught.value.job_id == "c-1"


def test_a_bqm_problem_in_a_cqm_job_and_back_are_rejected() -> None:
    bqm = dimod.BinaryQuadraticModel({"a": 1.0}, {}, 0.0, "BINARY")
    with pytest.raises(JobRejected, match="malformed CQM"):
        decode_job(job(bqm.to_serializable(use_bytes=False)), LIMITS)
    with pytest.raises(JobRejected, match="malformed BQM"):
        decode_job(job(encode_cqm(mixed()), kind="bqm"), LIMITS)


VALID = [file_of(mixed()), file_of(mixed(), compress=True), file_of(soft_model())]


@FUZZ
@given(
    base=st.sampled_from(VALID),
    edits=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 5000)),
)
def test_fuzzed_files_are_models_or_rejections(
    base: bytes, edits: list[tuple[int, int]], cut: int | None
) -> None:
    raw = bytearray(base)
    for at, value in edits:
        raw[at % len(raw)] = value
    data = bytes(raw[:cut] if cut is not None else raw)
    try:
        cqm = read_cqm(data, LIMITS)
    except JobRejected as exc:
        reason = str(exc)
        assert reason  # a reason, and no other exception
    else:
        assert cqm.num_variables() <= LIMITS.max_variables
        assert len(cqm.constraints) <= LIMITS.max_constraints


@FUZZ
@given(
    problem=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.binary(max_size=50).map(lambda b: base64.b64encode(b).decode()),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["type", "encoding", "data", "x"]), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_fuzzed_problems_are_rejections(problem: Any) -> None:
    with pytest.raises(JobRejected):
        decode_cqm(problem, LIMITS)
