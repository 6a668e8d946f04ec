"""Benchmark results saved as JSON (qxedge.testing.bench_results) and the docs' tables made from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from qxedge.testing import bench_results
from qxedge.testing.bench_results import BEGIN, END, Results, add_save_option, render, updated
from tests.conftest import ROOT


def test_the_benchmark_page_shows_every_saved_result() -> None:
    """Fails when a result in bench/results changed and docs/benchmarks.md was not regenerated."""
    assert bench_results.main([str(ROOT), "--check"]) == 0, "run ./run docs to regenerate the tables"


def test_every_benchmark_can_save_its_results() -> None:
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.stem == "run_all":
            continue
        source = path.read_text()
        assert "add_save_option(parser)" in source and ".save()" in source, f"{path.name} has no --save"


def fake_run(tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Results:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    add_save_option(parser)
    monkeypatch.setattr(sys, "argv", ["ingest.py", *argv])
    script = tmp_path / "bench" / "ingest.py"
    script.parent.mkdir(exist_ok=True)
    return Results(str(script), parser, parser.parse_args(argv))


def test_saved_results_name_the_command_the_machine_and_the_shorter_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = fake_run(tmp_path, ["--messages", "3000", "--save"], monkeypatch)
    table = results.table("flood", ["round", "msg/s", "ratio"])
    table.add("1", 41_500.25, 1.4567)
    results.note("a note")
    path = results.save()
    assert path == tmp_path / "bench" / "results" / "ingest.json"
    doc = json.loads(path.read_text())
    assert doc["bench"] == "ingest"
    assert doc["command"] == "./run bench ingest --messages 3000"
    assert doc["quick"] is True and doc["arguments"] == {"messages": 3000}
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"].count(".") == 2
    assert doc["date"].startswith("20") and "commit" in doc
    assert doc["tables"] == [
        {"title": "flood", "columns": ["round", "msg/s", "ratio"], "rows": [["1", 41_500.25, 1.4567]]}
    ]

    page = render(tmp_path / "bench" / "results")
    assert "`./run bench ingest --messages 3000`: quick run" in page
    assert "| round | msg/s | ratio |" in page and "| 1 | 41,500 | 1.46 |" in page and "- a note" in page


def test_nothing_is_written_without_save_and_defaults_are_not_quick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fake_run(tmp_path, [], monkeypatch).save() is None
    assert not (tmp_path / "bench" / "results").exists()
    path = fake_run(tmp_path, ["--save"], monkeypatch).save()
    assert path is not None and json.loads(path.read_text())["quick"] is False


def test_a_row_must_fill_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = fake_run(tmp_path, [], monkeypatch).table("t", ["a", "b"])
    with pytest.raises(ValueError, match="table 't': 1 cells for 2 columns"):
        table.add(1)


def test_the_tables_go_between_the_markers_and_the_check_sees_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = f"# Benchmarks\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert updated(page, "new\n") == f"# Benchmarks\n\nbefore\n\n{BEGIN}\n\nnew\n\n{END}\n\nafter\n"
    with pytest.raises(ValueError, match="lacks the markers"):
        updated("# no markers\n", "new\n")

    results = fake_run(tmp_path, ["--save"], monkeypatch)
    results.table("flood", ["round", "msg/s"]).add("1", 41_500.0)
    results.save()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(page)
    assert bench_results.main([str(tmp_path), "--check"]) == 1
    assert bench_results.main([str(tmp_path)]) == 0
    assert bench_results.main([str(tmp_path), "--check"]) == 0


def test_a_broken_result_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "ingest.json").write_text('{"bench": "ingest"}')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(f"{BEGIN}\n{END}\n")
    assert bench_results.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bench/results/ingest.json: not a saved benchmark result (KeyError: 'machine')" in err


def test_a_variant_is_saved_beside_the_plain_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_run(tmp_path, ["--save", "batch", "--rounds", "1"], monkeypatch).save()
    assert path == tmp_path / "bench" / "results" / "ingest-batch.json"
    doc = json.loads(path.read_text())
    assert doc["bench"] == "ingest-batch" and doc["command"] == "./run bench ingest --rounds 1"
    with pytest.raises(SystemExit):
        fake_run(tmp_path, ["--save", "Bad Name"], monkeypatch)
