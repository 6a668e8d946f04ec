"""Upstream confirmations: the consumer of an outbox stream says which records it holds.

A broker's PUBACK only says that the broker took a record. mosquitto keeps what it took in memory and
saves it every ``autosave_interval``: killed with SIGKILL in between, it comes back without records it
had acknowledged and not yet delivered (``bench/faults.py``: up to 4 of the records in flight at the
kill, in 2 of 6 runs). With ``outbox: {confirm: upstream}`` the agent keeps each record until the
consumer confirms it on ``qx/v1/{site}/confirm``::

    {"stream": "telemetry", "seqs": [[0, 199], [204, 204]]}   # inclusive ranges of sequence numbers

and sends again what the broker acknowledged but the consumer never confirmed (see
:mod:`qxedge.connectors.outbox`). A consumer confirms every record it receives, a duplicate too (it was sent
again because no confirmation came), and de-duplicates by ``(stream, seq)`` itself. ``Receipts`` builds
the confirmations.
"""

from __future__ import annotations

import json
from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qxedge.core.errors import ConnectorError

# a confirmation names at most this many ranges (a consumer splits longer ones)
MAX_RANGES = 10_000


class BadConfirmation(ConnectorError):
    """A message on the confirm topic that is not a confirmation (says what is wrong)."""


class Confirmation(BaseModel):
    """``{"stream": ..., "seqs": [[first, last], ...]}``: the records of ``stream`` the consumer holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(min_length=1, max_length=200)
    seqs: list[tuple[int, int]] = Field(max_length=MAX_RANGES)

    @field_validator("seqs")
    @classmethod
    def _ranges(cls, seqs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for first, last in seqs:
            if not 0 <= first <= last:
                raise ValueError(f"range [{first}, {last}]: need 0 <= first <= last")
        return seqs

    def payload(self) -> bytes:
        return json.dumps({"stream": self.stream, "seqs": self.seqs}, separators=(",", ":")).encode()


def parse_confirmation(payload: bytes) -> Confirmation:
    try:
        return Confirmation.model_validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise BadConfirmation(f"not a confirmation ({problems}): {payload[:200]!r}") from None


def merged(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint inclusive runs covering the same numbers as ``runs`` (overlaps joined)."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted inclusive runs of the numbers in ``seqs`` (duplicates and order do not matter)."""
    return merged([(seq, seq) for seq in seqs])


class Receipts:
    """The consumer's side: ``note`` each record received, publish what ``take`` returns now and then
    (say every 0.2 s) at QoS 1 on ``qx/v1/{site}/confirm``."""

    def __init__(self) -> None:
        self._new: defaultdict[str, list[int]] = defaultdict(list)

    def note(self, stream: str, seq: int) -> None:
        self._new[stream].append(seq)

    def take(self) -> list[bytes]:
        """The confirmations of what was noted since the last call."""
        new, self._new = self._new, defaultdict(list)
        out = []
        for stream, seqs in new.items():
            runs = ranges(seqs)
            for i in range(0, len(runs), MAX_RANGES):
                out.append(Confirmation(stream=stream, seqs=runs[i : i + MAX_RANGES]).payload())
        return out
