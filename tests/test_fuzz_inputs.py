"""Property tests (hypothesis) of the external-input decoders: the JSON reading codec and Sparkplug B.

Issue 25: whatever bytes arrive, a decoder either returns valid readings (finite numbers, names within
the rules, a valid ``ts``) or rejects the message with a reason and a code from the fixed set; it never
raises anything else, and it never accepts what docs/connectors/readings.md says is rejected. The
oracles below are written from the documented rules, not from the decoders' code. Example counts are
bounded so that the file runs in a few seconds in CI.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qxedge.connectors.readings import ReadingBatch, ReadingDecoder, Rejected, TopicPattern
from qxedge.connectors.sparkplug import SparkplugSourceConfig
from qxedge.connectors.sparkplug_b_pb2 import Payload
from qxedge.connectors.sparkplug_payload import decode as decode_sparkplug
from qxedge.connectors.sparkplug_source import SparkplugSource
from qxedge.core.errors import PayloadError, RejectCode

NOW = 1_795_629_600.0  # 2026-11-25T18:00:00Z
AHEAD = 300.0
SIGNAL, ASSET = "plant/l1/p1/temp", "plant/l1/p1"
CODES = {c.value for c in RejectCode}
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------- oracles (the documented rules)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


def control_or_surrogate(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF


def valid_name(name: object, *, topic_level: bool) -> bool:
    return (
        isinstance(name, str)
        and 1 <= len(name) <= 128
        and not any(control_or_surrogate(c) for c in name)
        and not (topic_level and any(c in "/+#" for c in name))
    )


def strict_json(payload: bytes) -> Any:
    """The document as RFC 8259 reads it (no BOM, no NaN, strict UTF-8), or raise."""
    text = payload.decode("utf-8")
    assert not text.startswith("\ufeff")

    def no_constant(name: str) -> None:
        raise ValueError(name)

    return json.loads(text, parse_constant=no_constant)


def strings_in(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(doc, list):
        return [s for item in doc for s in strings_in(item)]
    return []


def check_reading_outcome(topic: str, payload: bytes, batch: ReadingBatch, rejected: list[Rejected]) -> None:
    if rejected:
        (bad,) = rejected
        assert len(batch) == 0, "a message is accepted or rejected as a whole"
        assert bad.code in CODES and bad.reason and bad.topic == topic and bad.payload == payload
        return
    assert len(batch) >= 1
    # accepted: the README's rules hold for the payload ...
    doc = strict_json(payload)
    assert isinstance(doc, dict)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for s in strings_in(doc) for c in s)
    assert ("value" in doc) != ("values" in doc)
    assert ("value" in doc) == (topic == SIGNAL)
    ts = doc.get("ts")
    if isinstance(ts, str):
        assert RFC3339.match(ts), ts
    # ... and for every reading
    for asset, signal, t, value in zip(batch.assets, batch.signals, batch.ts, batch.values, strict=True):
        assert asset == "l1/p1" and valid_name(signal, topic_level=True)
        assert type(value) is float and math.isfinite(value)
        assert type(t) is float and math.isfinite(t) and 0 < t <= NOW + AHEAD


def decode_one(topic: str, payload: bytes) -> tuple[ReadingBatch, list[Rejected]]:
    decoder = ReadingDecoder(TopicPattern("plant/{line}/{asset}/{signal}"), 4096, max_ahead_s=AHEAD)
    batch, rejected = ReadingBatch(), []
    decoder.decode([(topic, payload)], NOW, batch, rejected)
    return batch, rejected


# ----------------------------------------------------------------- strategies
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_ish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# names that probe the rules: control characters, separators, surrogates, long ones
names = st.text(max_size=8) | st.sampled_from(
    ["", "a/b", "x#", "x+", "a\x00b", "a\tb", "a\x7f", "a\x85", "x\ud800", "\udc00", "n" * 128, "n" * 129]
)
timestamps = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.sampled_from(
        [
            "2026-11-25T18:00:00Z",
            "2026-11-25t18:00:00.5z",
            "2026-11-25 18:00:00+09:00",
            "20240101T000000Z",
            "2026-11-25T18:00:00+0100",
            "2026-11-25T18:00:00,5Z",
            "2026-11-25T18:00:00.Z",
            "2026-11-25T18:00:00",
            "2026-13-25T18:00:00Z",
            "2026-11-25T18:00:60Z",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "\uff19\uff19\uff19\uff19-11-25T18:00:00Z",  # fullwidth digits: \d matches them without re.ASCII
        ]
    )
    | st.text(max_size=30)
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "ts": timestamps,
        "value": json_ish,
        "values": st.dictionaries(names, json_ish, max_size=4) | json_ish,
        "unit": json_ish,
    },
)


def serialise(doc: Any, style: int) -> bytes:
    """Three encodings: ASCII-escaped (\\ud800 escapes), raw UTF-8 with surrogates encoded (ED A0 80),
    and UTF-16 (which json.loads on bytes would have guessed)."""
    if style == 0:
        return json.dumps(doc, allow_nan=True).encode()
    text = json.dumps(doc, allow_nan=True, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass") if style == 1 else text.encode("utf-16", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[at]
    return bytes(data)


VALID_READINGS = [
    b'{"ts": 1795629500.25, "value": 71.3}',
    b'{"ts": "2026-11-25T17:59:00.125+09:00", "value": true}',
    b'{"values": {"temp": 71.3, "power": 15, "on": false}, "ts": "2026-11-25T17:00:00Z"}',
]


# ----------------------------------------------------------------- the reading codec
@FUZZ
@given(topic=st.sampled_from([SIGNAL, ASSET]), payload=st.binary(max_size=200))
def test_reading_decoder_on_arbitrary_bytes(topic: str, payload: bytes) -> None:
    check_reading_outcome(topic, payload, *decode_one(topic, payload))


@FUZZ
@given(topic=st.sampled_from([SIGNAL, ASSET]), doc=documents, style=st.integers(0, 2))
def test_reading_decoder_on_json_like_documents(topic: str, doc: dict[str, Any], style: int) -> None:
    payload = serialise(doc, style)
    assume(len(payload) <= 4096)
    check_reading_outcome(topic, payload, *decode_one(topic, payload))


@FUZZ
@given(data=st.data(), topic=st.sampled_from([SIGNAL, ASSET]), valid=st.sampled_from(VALID_READINGS))
def test_reading_decoder_on_mutated_valid_payloads(data: st.DataObject, topic: str, valid: bytes) -> None:
    payload = data.draw(mutated(valid))
    check_reading_outcome(topic, payload, *decode_one(topic, payload))


def test_the_valid_seeds_are_valid() -> None:
    for payload in VALID_READINGS:
        topic = ASSET if b'"values"' in payload else SIGNAL
        batch, rejected = decode_one(topic, payload)
        assert not rejected and len(batch) >= 1


# ----------------------------------------------------------------- Sparkplug B
DOUBLE, INT32, INT64, BOOLEAN, STRING = 10, 3, 4, 11, 12

metric_values = st.one_of(
    st.tuples(st.just(DOUBLE), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just(INT32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(INT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(BOOLEAN), st.booleans()),
    st.tuples(st.just(STRING), st.text(max_size=8)),
    st.tuples(st.integers(0, 40), st.none()),
)
sparkplug_metrics = st.lists(
    st.tuples(
        st.none() | st.text(max_size=10) | st.sampled_from(["a\x00b", "n" * 129, "Inputs/temp"]),
        st.none() | st.integers(0, 2**64 - 1),
        st.none() | st.integers(0, 2**64 - 1),
        metric_values,
    ),
    max_size=5,
)


def sparkplug_payload(timestamp: int | None, metrics: list[Any]) -> bytes:
    payload = Payload()
    if timestamp is not None:
        payload.timestamp = timestamp
    payload.seq = 0
    for name, alias, stamp, (datatype, value) in metrics:
        m = payload.metrics.add(datatype=datatype)
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        if stamp is not None:
            m.timestamp = stamp
        if value is None:
            m.is_null = True
        elif datatype == DOUBLE:
            m.double_value = value
        elif datatype == INT32:
            m.int_value = value
        elif datatype == INT64:
            m.long_value = value
        elif datatype == BOOLEAN:
            m.boolean_value = value
        else:
            m.string_value = value
    return payload.SerializeToString()


def check_source(messages: list[tuple[str, bytes]]) -> None:
    config = SparkplugSourceConfig(groups=["plc"], max_payload_bytes=4096, max_ahead_s=AHEAD)
    requests: list[tuple[str, bytes]] = []
    source = SparkplugSource(config, ("qx", "edge"), lambda t, p: requests.append((t, p)))
    batch = source.decode(messages, NOW)  # never raises
    for asset, signal, t, value in zip(batch.assets, batch.signals, batch.ts, batch.values, strict=True):
        assert asset in ("press1", "press1/die1")
        assert valid_name(signal, topic_level=False), repr(signal)
        assert type(value) is float and math.isfinite(value)
        assert math.isfinite(t) and 0 < t <= NOW + AHEAD
    assert all(t == "spBv1.0/plc/NCMD/press1" for t, _ in requests)


TOPICS = st.sampled_from(
    [
        "spBv1.0/plc/NBIRTH/press1",
        "spBv1.0/plc/DBIRTH/press1/die1",
        "spBv1.0/plc/DDATA/press1/die1",
        "spBv1.0/plc/NDATA/press1",
        "spBv1.0/plc/NDEATH/press1",
    ]
)


@FUZZ
@given(payload=st.binary(max_size=300))
def test_sparkplug_decode_on_arbitrary_bytes(payload: bytes) -> None:
    try:
        decode_sparkplug(payload, 256)
    except PayloadError as exc:
        error = exc
    else:
        return
    assert error.code in (RejectCode.OVERSIZE, RejectCode.INVALID_PROTOBUF) and str(error)


@FUZZ
@given(messages=st.lists(st.tuples(TOPICS, st.binary(max_size=120)), max_size=4))
def test_sparkplug_source_on_arbitrary_bytes(messages: list[tuple[str, bytes]]) -> None:
    check_source(messages)


@FUZZ
@given(
    data=st.data(),
    batch=st.lists(
        st.tuples(TOPICS, st.none() | st.integers(0, 2**64 - 1), sparkplug_metrics, st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_sparkplug_source_on_valid_and_mutated_payloads(
    data: st.DataObject, batch: list[tuple[str, int | None, list[Any], bool]]
) -> None:
    messages = []
    for topic, stamp, metrics, mutate in batch:
        raw = sparkplug_payload(stamp, metrics)
        messages.append((topic, data.draw(mutated(raw)) if mutate and raw else raw))
    check_source(messages)


def test_sparkplug_source_skips_metric_names_that_are_not_utf8() -> None:
    """protobuf (proto2, upb) hands a string field that is not UTF-8 back as bytes; it became a
    reading whose signal was bytes before the source checked names."""
    birth = sparkplug_payload(None, [("ab", 1, None, (DOUBLE, 1.0)), ("ok", 2, None, (DOUBLE, 2.0))])
    bad = birth.replace(b"ab", b"\xff\xfe", 1)
    config = SparkplugSourceConfig(groups=["plc"], max_ahead_s=AHEAD)
    source = SparkplugSource(config, ("qx", "edge"), lambda t, p: None)
    batch = source.decode([("spBv1.0/plc/DBIRTH/press1/die1", bad)], NOW)
    assert batch.signals == ["ok"] and source.stats.skipped["bad metric name"] == 1
