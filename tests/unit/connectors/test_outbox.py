"""The outbox's bookkeeping of upstream confirmations, without a broker (its client never connects).
Against real brokers killed mid-stream: tests/integration/test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.connectors.outbox import Outbox, OutboxConfig, OutboxError
from qxedge.testing.faults import CONFIRM, TELEMETRY


def unconnected_outbox(tmp_path: Path) -> Outbox:
    config = OutboxConfig(confirm="upstream")
    return Outbox(
        tmp_path / "o.sqlite", config, MqttClient(BrokerConfig(url="mqtt://h:1")), confirm_topic=CONFIRM
    )


def confirmation(seqs: list[list[int]]) -> list[tuple[str, bytes]]:
    return [(CONFIRM, json.dumps({"stream": "telemetry", "seqs": seqs}).encode())]


def test_confirmations_narrow_wide_many_and_before_the_puback(tmp_path: Path) -> None:
    box = unconnected_outbox(tmp_path)
    box._unconfirmed = {("telemetry", seq): (seq + 1, float(seq)) for seq in range(100)}  # id = seq + 1
    box._inflight = {7: (101, "telemetry", 100, TELEMETRY, b"")}
    box._on_confirmations(confirmation([[5, 5], [3, 4], [4, 5], [90, 10**15]]))  # unsorted, overlapping
    assert sorted(box._acked) == [4, 5, 6, *range(91, 101)] and box.stats["confirmed"] == 13
    assert box._confirmed_early == {("telemetry", 100)}  # its PUBACK comes later: done then
    box._on_ack(7)
    assert box._acked[-1] == 101 and not box._confirmed_early
    box._on_confirmations(confirmation([[seq, seq] for seq in range(0, 20_000, 2)]))  # 10,000 ranges
    assert sorted(box._unconfirmed) == [("telemetry", seq) for seq in (1, 7, 9, *range(11, 90, 2))]
    other = [(CONFIRM, json.dumps({"stream": "other", "seqs": [[0, 10**15]]}).encode())]
    box._on_confirmations(other)  # another stream's numbers confirm nothing here
    assert len(box._unconfirmed) == 43


def test_records_sent_again_twice_go_out_in_id_order(tmp_path: Path) -> None:
    box = unconnected_outbox(tmp_path)
    box._unconfirmed = {("telemetry", seq): (seq + 1, float(seq)) for seq in (20, 5, 30)}  # id = seq + 1
    box._again_ids.extend([12, 15])  # a first resend, still going out
    box._again.extend([(10, "telemetry", 9, TELEMETRY, b""), (11, "telemetry", 10, TELEMETRY, b"")])
    box.stats["resent"] = 2
    box._queue_again([("telemetry", 20), ("telemetry", 5)])
    assert list(box._again_ids) == [6, 10, 11, 12, 15, 21]  # loaded again in chunks, in id order
    assert not box._again and box.stats["resent"] == 0 and list(box._unconfirmed) == [("telemetry", 30)]


def test_confirm_upstream_needs_a_topic(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="needs the topic"):
        Outbox(
            tmp_path / "o.sqlite",
            OutboxConfig(confirm="upstream"),
            MqttClient(BrokerConfig(url="mqtt://h:1")),
        )


def test_a_confirm_stream_waits_for_its_consumer_the_others_for_the_puback(tmp_path: Path) -> None:
    box = Outbox(
        tmp_path / "o.sqlite",
        OutboxConfig(),  # confirm: broker for every other stream
        MqttClient(BrokerConfig(url="mqtt://h:1")),
        confirm_topic=CONFIRM,
        confirm_streams=("history",),
    )
    assert box.confirm_topic == CONFIRM
    box._next_seq = {"history": 1, "telemetry": 1}
    box._inflight = {1: (1, "telemetry", 0, TELEMETRY, b""), 2: (2, "history", 0, "qx/v1/t/history", b"")}
    box.depth = 2
    box._on_ack(1)
    box._on_ack(2)
    assert box._acked == [1] and list(box._unconfirmed) == [("history", 0)]
    # nobody confirmed history since the start: a graceful stop does not wait for it ...
    assert box._left_to_drain() == 1  # (the telemetry record, deleted at the next flush)
    box._acked.clear()
    box.depth = 1
    assert box._left_to_drain() == 0
    # ... once its consumer confirmed something, it does
    history = [(CONFIRM, json.dumps({"stream": "history", "seqs": [[5, 5]]}).encode())]
    box._on_confirmations(history)
    assert box._left_to_drain() == 1
    box._on_confirmations([(CONFIRM, json.dumps({"stream": "nobody", "seqs": [[0, 0]]}).encode())])
    assert box._confirming == {"history"}  # only its own streams
