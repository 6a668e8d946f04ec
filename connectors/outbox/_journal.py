"""A stream's journal in the outbox's SQLite: items accepted now, made into a record later.

The history stream holds readings for ``history.every_s`` before it cuts a batch; until the batch is a
record of the outbox, a ``kill -9`` would lose them. With a journal (``Outbox.journal``) each item
(a batch of readings) is written to the ``journal`` table at the outbox's next flush (every
``flush_ms``, in the outbox's thread, in the same transaction as its records: one more row per flush,
whatever the number of items). Each row holds the items between two positions (``upto``: the count of
items added, across restarts). A cut takes ``mark()``; once the records made of the items before the
mark are put, ``done(mark)`` deletes the rows up to it *in the transaction that commits those
records*: an item is on disk as a journal row or in a record, never neither (after its first flush)
nor both. At the next start :attr:`Journal.restored` hands back the rows left, in order, for the
next cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Journal(Generic[T]):
    """One stream's journal; made by :meth:`Outbox.journal`. ``add`` is the hot path (a list append)."""

    def __init__(
        self,
        stream: str,
        encode: Callable[[list[T]], bytes],
        restored: list[tuple[int, bytes]],
        wake: asyncio.Event,
    ) -> None:
        self.stream = stream
        self.encode = encode  # called in the outbox's thread
        self.restored = [payload for _, payload in restored]  # rows of the last run, in order
        self.position = max((upto for upto, _ in restored), default=0)  # items added, ever
        self._open: list[T] = []  # added since the last seal
        self._sealed: list[tuple[int, list[T]]] = []  # (upto, items): not on disk yet
        self._done = 0  # rows up to this position are to be deleted (their items are in records)
        self._deleted = 0  # ... and are deleted up to this one
        self._wake = wake
        self.written = 0  # rows written
        self.items_written = 0

    @property
    def pending(self) -> int:
        """Items added and not on disk yet."""
        return len(self._open) + sum(len(items) for _, items in self._sealed)

    def add(self, item: T) -> None:
        """Journal ``item`` (at the next flush); the caller never changes it afterwards."""
        self._open.append(item)
        self.position += 1
        if len(self._open) == 1:
            self._wake.set()

    def mark(self) -> int:
        """The position after the items added so far (a row never spans a mark)."""
        if self._open:
            self._sealed.append((self.position, self._open))
            self._open = []
        return self.position

    def done(self, upto: int) -> None:
        """The items before ``upto`` (a mark) are in records put since (or were refused): their rows go
        in the transaction that commits those records; those not written yet never will be."""
        if upto <= self._done:
            return
        self._done = upto
        self._sealed = [(u, items) for u, items in self._sealed if u > upto]
        self._wake.set()

    # ----------------------------------------------------------------- the outbox's flush
    def _take(self) -> tuple[list[tuple[int, list[T]]], int] | None:
        """(on the loop) What the next transaction does: write the sealed items, and delete the rows up
        to a position (0: none); None when there is nothing to do."""
        self.mark()
        delete_upto = self._done if self._done > self._deleted else 0
        if not self._sealed and not delete_upto:
            return None
        sealed, self._sealed = self._sealed, []
        return sealed, delete_upto

    def _committed(self, taken: tuple[list[tuple[int, list[T]]], int]) -> None:
        sealed, delete_upto = taken
        self._deleted = max(self._deleted, delete_upto)
        self.written += len(sealed)
        self.items_written += sum(len(items) for _, items in sealed)

    def _failed(self, taken: tuple[list[tuple[int, list[T]]], int]) -> None:
        """The transaction failed: write them again at the next flush (unless done meanwhile)."""
        sealed, _ = taken
        self._sealed[:0] = [(u, items) for u, items in sealed if u > self._done]
