"""Upstream confirmations (connectors/confirm.py): the message, its checks, and the consumer's side."""

from __future__ import annotations

import json

import pytest

from qxedge.connectors.confirm import (
    MAX_RANGES,
    BadConfirmation,
    Receipts,
    merged,
    parse_confirmation,
    ranges,
)


def test_ranges_are_sorted_inclusive_runs() -> None:
    assert ranges([]) == []
    assert ranges([5, 3, 4, 4, 9, 0]) == [(0, 0), (3, 5), (9, 9)]


def test_merged_runs_are_sorted_and_disjoint() -> None:
    assert merged([]) == []
    assert merged([(5, 5), (3, 4), (4, 5), (9, 20), (10, 12), (22, 22)]) == [(3, 5), (9, 20), (22, 22)]


def test_receipts_confirm_what_came_since_the_last_take_duplicates_included() -> None:
    receipts = Receipts()
    for seq in (0, 1, 2, 2, 5):
        receipts.note("telemetry", seq)
    receipts.note("events", 7)
    taken = [json.loads(p) for p in receipts.take()]
    assert taken == [
        {"stream": "telemetry", "seqs": [[0, 2], [5, 5]]},
        {"stream": "events", "seqs": [[7, 7]]},
    ]
    assert receipts.take() == []
    receipts.note("telemetry", 2)  # sent again: confirmed again
    assert [parse_confirmation(p).seqs for p in receipts.take()] == [[(2, 2)]]


def test_receipts_split_long_confirmations() -> None:
    receipts = Receipts()
    for seq in range(0, 2 * (MAX_RANGES + 1), 2):
        receipts.note("telemetry", seq)
    parts = [parse_confirmation(p) for p in receipts.take()]
    assert [len(p.seqs) for p in parts] == [MAX_RANGES, 1]


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "<root>: Invalid JSON"),
        (b'{"stream": "telemetry"}', "seqs: Field required"),
        (b'{"stream": "", "seqs": []}', "stream: String should have at least 1 character"),
        (b'{"stream": "t", "seqs": [[5, 2]]}', "range [5, 2]: need 0 <= first <= last"),
        (b'{"stream": "t", "seqs": [[-1, 2]]}', "range [-1, 2]"),
        (b'{"stream": "t", "seqs": [[1]]}', "seqs.0"),
        (b'{"stream": "t", "seqs": [], "extra": 1}', "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_confirmations_say_what_is_wrong(payload: bytes, says: str) -> None:
    with pytest.raises(BadConfirmation, match="not a confirmation") as err:
        parse_confirmation(payload)
    assert says in str(err.value)
