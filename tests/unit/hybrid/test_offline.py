"""``qxedge solve FILE`` (hybrid/offline.py): a file is not a broker message; the deadline counts from
the moment the file has been read and validated."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dimod
import pytest

from qxedge.hybrid import offline
from qxedge.hybrid.decoded_bqm import DecodedBqm
from qxedge.hybrid.offline import read_job, solve_file
from qxedge.hybrid.service import DataCenterConfig
from qxedge.hybrid.wire import Job, JobRejected


def config(**limits: Any) -> DataCenterConfig:
    return DataCenterConfig.model_validate({"limits": limits, "solvers": {"workers": 0}})


def model(n: int = 60) -> dict[str, Any]:
    bqm = dimod.BinaryQuadraticModel({f"x{i}": (-1.0) ** i for i in range(n)}, {}, 0.0, "BINARY")
    bqm.add_quadratic_from((f"x{i}", f"x{i + 1}", 0.5) for i in range(n - 1))
    doc: dict[str, Any] = bqm.to_serializable(use_bytes=False)
    return doc


def envelope(problem: dict[str, Any]) -> dict[str, Any]:
    return {
        "v": 1,
        "job_id": "j-7",
        "site": "gumi",
        "problem": problem,
        "deadline_ms": 900,
        "submitted_at": 1.0,  # long ago: a file's job counts from when it was read
        "solver": "exact",
        "reply_to": "qx/v1/gumi/results/j-7",
    }


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("as_envelope", [False, True])
def test_a_file_larger_than_a_message_is_read(tmp_path: Path, as_envelope: bool) -> None:
    path = write(tmp_path, envelope(model()) if as_envelope else model())
    cfg = config(max_payload_bytes=256)
    assert path.stat().st_size > 256 * 5
    job = read_job(path, cfg, None, None)
    assert job.bqm.num_variables == 60
    assert job.envelope.solver == ("exact" if as_envelope else "auto")


def test_a_file_over_max_file_bytes_is_rejected_before_it_is_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, model())
    size = path.stat().st_size
    with pytest.raises(JobRejected) as info:
        read_job(path, config(max_file_bytes=size - 1), None, None)
    assert str(info.value) == f"{path} is larger than the limit of {size - 1:,} bytes (limits.max_file_bytes)"
    assert read_job(path, config(max_file_bytes=size), None, None).bqm.num_variables == 60


def test_a_file_nested_too_deeply_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)
    with pytest.raises(JobRejected, match="nested too deeply"):
        read_job(path, config(), None, None)


@pytest.mark.parametrize("as_envelope", [False, True])
def test_the_deadline_counts_from_when_the_file_was_read_and_validated(
    tmp_path: Path, as_envelope: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and validating a large file (a complete n = 2000: ~1.5 s) is not the solver's time."""
    validated: list[float] = []
    for name in ("check_bqm", "decode_document"):
        real = getattr(offline, name)

        def timed(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            validated.append(time.time())
            return result

        monkeypatch.setattr(offline, name, timed)
    path = write(tmp_path, envelope(model()) if as_envelope else model())
    job = read_job(path, config(), None, 500)
    assert len(validated) == 1
    assert job.received_at >= validated[0] and job.envelope.submitted_at == job.received_at
    assert job.deadline_at == pytest.approx(job.received_at + 0.5)


async def test_the_result_says_how_long_reading_took(tmp_path: Path) -> None:
    result = await solve_file(write(tmp_path, model(8)), config(), "exact", 30_000)
    assert result.status == "ok", result.reason
    assert list(result.timings) == ["read_ms", "queued_ms", "solve_ms"]
    assert result.timings["read_ms"] > 0
    rejected = await solve_file(write(tmp_path, {"type": "DQM"}), config(), None, None)
    assert rejected.status == "rejected" and rejected.timings["read_ms"] > 0


def test_a_job_read_from_a_file_is_a_job(tmp_path: Path) -> None:
    assert isinstance(read_job(write(tmp_path, model(3)), config(), "tabu", None), Job)


@pytest.mark.parametrize("deadline_ms", [5, 700_000])
def test_a_deadline_outside_the_limits_is_rejected(tmp_path: Path, deadline_ms: int) -> None:
    """--deadline-ms obeys the limits a job's own deadline_ms does (limits.min/max_deadline_ms)."""
    path = write(tmp_path, envelope(model()))
    with pytest.raises(JobRejected, match=rf"--deadline-ms {deadline_ms} out of range \[10, 600000\]"):
        read_job(path, config(), None, deadline_ms)


@pytest.mark.parametrize("as_envelope", [False, True])
def test_dimods_model_is_built_before_the_deadline_counts(
    tmp_path: Path, as_envelope: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building dimod's model (0.12 s for a complete n = 2000) is reading, not the solver's time: inside
    the clock it took a 0.2 s job's floor time."""
    built: list[float] = []
    real = DecodedBqm.bqm

    def timed(self: DecodedBqm) -> Any:
        built.append(time.time())
        return real(self)

    monkeypatch.setattr(DecodedBqm, "bqm", timed)
    path = write(tmp_path, envelope(model()) if as_envelope else model())
    job = read_job(path, config(), None, 500)
    assert built and built[0] <= job.received_at
