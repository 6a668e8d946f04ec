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


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("plant/l1/p1/temp", b"\xff\xfe{", "not valid UTF-8"),
        ("plant/l1/p1/temp", b'{"value": 1', "not valid JSON"),
        ("plant/l1/p1/temp", b"[1, 2]", "must be a JSON object"),
        ("plant/l1/p1/temp", b'{"value": NaN}', "not a finite number"),
        ("plant/l1/p1/temp", b'{"value": -Infinity}', "not a finite number"),
        ("plant/l1/p1/temp", b'{"value": 1e999}', "not a finite number"),
        ("plant/l1/p1/temp", b'{"value": "71.3"}', "expected a number or a boolean, got str"),
        ("plant/l1/p1/temp", b'{"value": null}', "got NoneType"),
        ("plant/l1/p1/temp", b'{"ts": 1}', 'missing "value"'),
        ("plant/l1/p1/temp", b'{"ts": -5, "value": 1}', "ts: expected epoch seconds"),
        ("plant/l1/p1/temp", b'{"ts": "yesterday", "value": 1}', "not an RFC 3339 time"),
        ("plant/l1/p1/temp", b'{"ts": true, "value": 1}', "ts: expected epoch seconds"),
        ("plant/l1/p1", b'{"value": 1}', 'needs a non-empty "values"'),
        ("plant/l1/p1", b'{"values": {}}', 'needs a non-empty "values"'),
        ("plant/l1/p1", b'{"values": {"a": 1, "b": "x"}}', "values.b: expected a number"),
        ("plant/l1/p1", b'{"values": {"a/b": 1}}', "invalid signal name"),
        ("elsewhere/l1/p1/temp", b'{"value": 1}', "topic does not match"),
        ("plant/l1/p1/temp", b'{"value": 1, "pad": "' + b"x" * 5000 + b'"}', "exceeds the limit of 3000"),
        ("plant/l1/p1/temp", b'{"value": 1' + b"0" * 400 + b"}", "not a finite number"),
        ("plant/l1/p1/temp", b"[" * 3000, "nested too deeply"),
        ("plant/l1/p1/temp", b'{"ts": "2026-11-25T18:00:00", "value": 1}', "needs a time zone offset"),
        ("plant/l1/p1/temp", b'{"ts": 1795629600125, "value": 1}', "in the future (milliseconds?"),
        ("plant/l1/p1/temp", b'{"ts": 1795633200, "value": 1}', "3600 s in the future"),
    ],
)
def test_invalid_payloads_are_rejected_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    batch, rejected = decode(
        ("plant/l1/p1/ok", '{"value": 1}'), (topic, payload), ("plant/l1/p1/ok", '{"value": 2}')
    )
    assert batch.values == [1.0, 2.0], "valid messages around the bad one are kept"
    assert len(rejected) == 1
    assert rejected[0].topic == topic and rejected[0].payload == payload
    assert reason in rejected[0].reason


def test_batch_form_is_all_or_nothing() -> None:
    batch, rejected = decode(("plant/l1/p1", '{"values": {"a": 1, "b": 2, "c": Infinity}}'))
    assert len(batch) == 0 and len(rejected) == 1


def test_large_batch_decodes_every_reading() -> None:
    values = {f"s{i}": i * 0.5 for i in range(100)}
    batch, rejected = decode(("plant/l1/p1", json.dumps({"ts": NOW, "values": values})))
    assert not rejected and len(batch) == 100 and math.isclose(sum(batch.values), sum(values.values()))
