"""The history batch format: what the agent encodes the historian reads back, and every kind of bad
message is refused with a reason (never an exception of another kind)."""

from __future__ import annotations

import contextlib
import io
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qxedge.connectors.history_wire import BadBatch, decode, encode_body, frame, payload


def body(n: int = 10) -> bytes:
    df = frame(
        [f"l1/p{i % 3}" for i in range(n)],
        ["temp"] * n,
        [1764086400.0 + i / 8 for i in range(n)],
        [float(i) for i in range(n)],
    )
    return payload("t", "history", 7, encode_body(df))


def test_round_trip() -> None:
    header, df = decode(body(10))
    assert (header.site, header.stream, header.seq, header.rows) == ("t", "history", 7, 10)
    assert header.first_ts == 1764086400.0 and header.last_ts == 1764086400.0 + 9 / 8
    assert df.columns == ["asset", "signal", "ts", "value"] and df.height == 10
    assert df.get_column("ts").dt.epoch("us")[1] == 1764086400_125000
    assert df.get_column("value").to_list() == [float(i) for i in range(10)]


def _with_header(data: bytes, **changes: object) -> bytes:
    line, _, rest = data.partition(b"\n")
    doc = {**json.loads(line), **changes}
    return json.dumps(doc).encode() + b"\n" + rest


def _ipc(df: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    df.write_ipc_stream(out, compression="zstd")
    return out.getvalue()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda good: b"no newline at all", "no header line"),
        (lambda good: b"{not json\n" + good, "not JSON"),
        (lambda good: b"[1]\n", "expected an object"),
        (lambda good: _with_header(good, v=2), "unsupported version"),
        (lambda good: _with_header(good, format="parquet"), "unsupported format"),
        (lambda good: _with_header(good, site="../etc"), "site must match"),
        (lambda good: _with_header(good, seq=-1), "seq must be a whole number"),
        (lambda good: _with_header(good, seq=True), "seq must be a whole number"),
        (lambda good: _with_header(good, first_ts=float("nan")), "first_ts must be a finite"),
        (lambda good: _with_header(good, rows=11), "header says 11 rows"),
        (lambda good: good[:-5], "body bytes"),
        (lambda good: _with_header(good[: good.index(b"\n") + 1] + b"garbage", bytes=7), "not an Arrow IPC"),
    ],
)
def test_bad_messages_say_why(make: object, reason: str) -> None:
    good = body()
    assert callable(make)
    with pytest.raises(BadBatch, match=reason):
        decode(make(good))


def test_bad_bodies_say_why() -> None:
    head = {
        "v": 1,
        "site": "t",
        "stream": "h",
        "seq": 0,
        "format": "arrow-ipc-zstd",
        "first_ts": 0,
        "last_ts": 0,
    }
    good = frame(["a"], ["s"], [1.0], [1.0])
    cases = [
        (good.rename({"value": "v"}), "columns"),
        (good.with_columns(pl.lit(float("nan")).alias("value")), "not finite"),
        (good.with_columns(pl.lit(None, pl.Float64).alias("value")), "nulls in value"),
        (good.with_columns(pl.lit("").alias("signal")), "empty signal"),
        (good.clear(), "no rows"),
    ]
    for df, reason in cases:
        data = _ipc(df)
        message = json.dumps({**head, "rows": df.height, "bytes": len(data)}).encode() + b"\n" + data
        with pytest.raises(BadBatch, match=reason):
            decode(message)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    for message in (data, body()[:60] + data):
        with contextlib.suppress(BadBatch):
            decode(message)
