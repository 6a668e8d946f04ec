import json
import math
from datetime import UTC, datetime

import pytest

from qxedge.connectors.readings import ReadingBatch, ReadingDecoder, Rejected, TopicPattern
from qxedge.core.errors import PayloadError

NOW = 1_795_629_600.0  # 2026-11-25T18:00:00Z


def decode(*messages: tuple[str, bytes | str], limit: int = 3000) -> tuple[ReadingBatch, list[Rejected]]:
    decoder = ReadingDecoder(TopicPattern("plant/{line}/{asset}/{signal}"), limit, max_ahead_s=300)
    batch, rejected = ReadingBatch(), []
    decoder.decode(((t, p.encode() if isinstance(p, str) else p) for t, p in messages), NOW, batch, rejected)
    return batch, rejected


def test_topic_pattern_maps_asset_and_signal() -> None:
    pattern = TopicPattern("plant/{line}/{asset}/{signal}")
    assert pattern.match("plant/line1/pump1/temp") == ("line1/pump1", "temp")
    assert pattern.match("plant/line1/pump1") == ("line1/pump1", None)
    for bad in ("other/line1/pump1/temp", "plant/line1", "plant/line1/pump1/temp/x", "plant//pump1/temp"):
        with pytest.raises(PayloadError):
            pattern.match(bad)


@pytest.mark.parametrize(
    "pattern", ["plant/{asset}", "plant/{line}/{signal}/x", "plant/+/{signal}", "{signal}"]
)
def test_topic_pattern_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        TopicPattern(pattern)


def test_single_value_batch_form_bool_and_rfc3339() -> None:
    batch, rejected = decode(
        ("plant/l1/p1/temp", '{"ts": 1764086000.5, "value": 71.3}'),
        ("plant/l1/p1", '{"ts": "2026-11-25T16:00:00Z", "values": {"power": 15, "running": true}}'),
        ("plant/l1/p1/vibration", '{"value": 2.5, "unit": "mm/s"}'),  # no ts: receive time
    )
    assert rejected == []
    assert batch.assets == ["l1/p1"] * 4
    assert batch.signals == ["temp", "power", "running", "vibration"]
    assert batch.values == [71.3, 15.0, 1.0, 2.5]
    assert batch.ts[0] == 1764086000.5
    assert batch.ts[1] == batch.ts[2] == datetime(2026, 11, 25, 16, tzinfo=UTC).timestamp()
    assert batch.ts[3] == NOW


S, A = "plant/l1/p1/temp", "plant/l1/p1"  # a signal topic, an asset topic


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "code"),
    [
        (S, b"\xff\xfe{", "not valid UTF-8", "invalid_utf8"),
        (S, b'{"value": 1', "not valid JSON", "invalid_json"),
        (S, b"[1, 2]", "must be a JSON object", "wrong_shape"),
        (S, b'{"value": NaN}', "not a finite number", "bad_value"),
        (S, b'{"value": -Infinity}', "not a finite number", "bad_value"),
        (S, b'{"value": 1e999}', "not a finite number", "bad_value"),
        (S, b'{"value": 1, "note": NaN}', "not a finite number (NaN is not JSON)", "bad_value"),
        (S, b'{"value": "71.3"}', "expected a number or a boolean, got str", "bad_value"),
        (S, b'{"value": null}', "got NoneType", "bad_value"),
        (S, b'{"ts": 1}', 'missing "value"', "wrong_shape"),
        (S, b'{"value": 1, "values": {"a": 1}}', '"values" goes on the asset topic', "wrong_shape"),
        (S, b'{"ts": -5, "value": 1}', "ts: expected epoch seconds", "bad_ts"),
        (S, b'{"ts": "yesterday", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": true, "value": 1}', "ts: expected epoch seconds", "bad_ts"),
        (S, b'{"ts": 1e999, "value": 1}', "not a finite number", "bad_value"),
        (A, b'{"value": 1}', 'needs a non-empty "values"', "wrong_shape"),
        (A, b'{"values": {}}', 'needs a non-empty "values"', "wrong_shape"),
        (A, b'{"value": 1, "values": {"a": 1}}', 'and no "value"', "wrong_shape"),
        (A, b'{"values": {"a": 1, "b": "x"}}', "values.b: expected a number", "bad_value"),
        (A, b'{"values": {"a/b": 1}}', "invalid signal name", "bad_name"),
        ("elsewhere/l1/p1/temp", b'{"value": 1}', "topic does not match", "bad_topic"),
        (S, b'{"value": 1, "pad": "' + b"x" * 5000 + b'"}', "exceeds the limit of 3000", "oversize"),
        (S, b'{"value": 1' + b"0" * 400 + b"}", "not a finite number", "bad_value"),
        (S, b"[" * 3000, "nested too deeply", "invalid_json"),
        (S, b'{"ts": "2026-11-25T18:00:00", "value": 1}', "with a Z or +HH:MM offset", "bad_ts"),
        (S, b'{"ts": 1795629600125, "value": 1}', "in the future (milliseconds?", "bad_ts"),
        (S, b'{"ts": 1795633200, "value": 1}', "3600 s in the future", "bad_ts"),
        (S, b'{"ts": 1e300, "value": 1}', "ts: 1e+300 s in the future (milliseconds?", "bad_ts"),
        # issue 25: encodings json.loads guesses, which the README rejects
        (S, '{"value": 1}'.encode("utf-16-le"), "NUL bytes: UTF-16?", "invalid_utf8"),
        (S, '{"value": 1}'.encode("utf-16"), "not valid UTF-8", "invalid_utf8"),
        (S, b'\xef\xbb\xbf{"value": 1}', "byte order mark", "invalid_utf8"),
        (A, b'{"values": {"x\xed\xa0\x80": 1}}', "not valid UTF-8", "invalid_utf8"),  # an encoded surrogate
        (A, b'{"values": {"x\\ud800": 1}}', "lone surrogate", "invalid_utf8"),  # a JSON escape of one
        (S, b'{"value": 1, "note": "\\udc00"}', "lone surrogate", "invalid_utf8"),
        # issue 25: RFC 3339 only (no basic format, no offset without a colon, no comma, no empty fraction)
        (S, b'{"ts": "20240101T000000Z", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": "2026-11-25T18:00:00+0100", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": "2026-11-25T18:00:00,5Z", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": "2026-11-25T18:00:00.Z", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": "2026-11-25", "value": 1}', "not an RFC 3339 date-time", "bad_ts"),
        (S, b'{"ts": "2026-11-25T24:00:00Z", "value": 1}', "not a valid time", "bad_ts"),
        (S, b'{"ts": "2026-02-30T10:00:00Z", "value": 1}', "not a valid time", "bad_ts"),
        (S, b'{"ts": "1969-12-31T23:59:59Z", "value": 1}', "before 1970", "bad_ts"),
        (S, b'{"ts": "0001-01-01T00:00:00+01:00", "value": 1}', "before 1970", "bad_ts"),
        # issue 25: signal names bounded, without control characters
        (A, b'{"values": {"' + b"n" * 129 + b'": 1}}', "129 characters, over the limit of 128", "bad_name"),
        (A, b'{"values": {"a\\u0000b": 1}}', "contains '\\x00'", "bad_name"),
        (A, b'{"values": {"a\\tb": 1}}', "contains '\\t'", "bad_name"),
        (A, b'{"values": {"a\x7f": 1}}', "contains '\\x7f'", "bad_name"),
        (A, b'{"values": {"a\xc2\x85": 1}}', "contains '\\x85'", "bad_name"),  # C1 (NEL)
        (A, b'{"values": {"": 1}}', "empty", "bad_name"),
        ("plant/l1/p1/te\x01mp", b'{"value": 1}', "topic: invalid signal name", "bad_name"),
        ("plant/l1/p\x1b1/temp", b'{"value": 1}', "control character in its asset levels", "bad_topic"),
        ("plant/l1/p1/" + "t" * 200, b'{"value": 1}', "over the limit of 128", "bad_name"),
    ],
)
def test_invalid_payloads_are_rejected_with_a_reason_and_a_code(
    topic: str, payload: bytes, reason: str, code: str
) -> None:
    batch, rejected = decode(
        ("plant/l1/p1/ok", '{"value": 1}'), (topic, payload), ("plant/l1/p1/ok", '{"value": 2}')
    )
    assert batch.values == [1.0, 2.0], "valid messages around the bad one are kept"
    assert len(rejected) == 1
    assert rejected[0].topic == topic and rejected[0].payload == payload
    assert reason in rejected[0].reason
    assert rejected[0].code == code


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-25T16:00:00Z", datetime(2026, 11, 25, 16, tzinfo=UTC)),
        ("2026-11-25t16:00:00z", datetime(2026, 11, 25, 16, tzinfo=UTC)),  # RFC 3339 5.6: lower case
        ("2026-11-25 16:00:00Z", datetime(2026, 11, 25, 16, tzinfo=UTC)),  # RFC 3339 5.6 note: a space
        ("2026-11-25T16:00:00.25Z", datetime(2026, 11, 25, 16, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-26T01:00:00+09:00", datetime(2026, 11, 25, 16, tzinfo=UTC)),
        ("2026-11-25T15:30:00-00:30", datetime(2026, 11, 25, 16, tzinfo=UTC)),
        ("2026-11-25T16:00:00.123456789Z", datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T16:00:00.123456789012Z", datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_forms_are_accepted(ts: str, expected: datetime) -> None:
    batch, rejected = decode((S, json.dumps({"ts": ts, "value": 1})))
    assert rejected == [] and batch.ts == [expected.timestamp()]


def test_names_at_the_limit_and_beyond_ascii_are_accepted() -> None:
    names = {"n" * 128: 1.0, "température": 2.0, "압력": 3.0, "x😀": 4.0}
    batch, rejected = decode((A, json.dumps({"values": names})), (A, b'{"values": {"x\\ud83d\\ude00": 5}}'))
    assert rejected == [] and batch.signals == [*names, "x😀"]


def test_integers_beyond_64_bits_are_numbers() -> None:
    batch, rejected = decode((S, b'{"value": 36893488147419103232}'))  # 2**65: orjson refuses, json parses
    assert rejected == [] and batch.values == [2.0**65]


def test_batch_form_is_all_or_nothing() -> None:
    batch, rejected = decode(("plant/l1/p1", '{"values": {"a": 1, "b": 2, "c": Infinity}}'))
    assert len(batch) == 0 and len(rejected) == 1


def test_large_batch_decodes_every_reading() -> None:
    values = {f"s{i}": i * 0.5 for i in range(100)}
    batch, rejected = decode(("plant/l1/p1", json.dumps({"ts": NOW, "values": values})))
    assert not rejected and len(batch) == 100 and math.isclose(sum(batch.values), sum(values.values()))
