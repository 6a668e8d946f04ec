"""A second way in for jobs while a NATS cluster's job stream cannot take them (it has no leader).

A replicated JetStream stream stores a message only while it has a leader. When the node leading it
dies, the others elect a new one in 4-9 s (nats-server's Raft election timeout, fixed), and the jobs
agents publish over MQTT meanwhile are not stored: with deadlines of a few seconds, each would fall back
at its agent. The standby is a plain NATS queue subscription on the jobs' subject (queue group
``{queue}-standby``: each message reaches one worker). It holds each copy until a look at the stream
that began after the copy arrived:

- the stream and the workers' consumer both name a leader: the copy is dropped (the stream has the job
  and delivers it);
- either does not (no answer within ``LOOK_S``, an error, no leader): the job is handed to the worker
  like any other, and the job ledger keeps it to one solve.

A look is made at most every ``EVERY_S`` while copies are held, so a healthy stream costs two JetStream
API requests per ``EVERY_S`` per worker, whatever the job rate. Once a look has found no leader, copies
are taken as they come and the looks go on, every ``EVERY_S``, until one finds the leaders back: the
first job sent after a leader is lost reaches a worker within ``EVERY_S + LOOK_S``, the next ones at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from qxedge.hybrid.transports.base import Delivery, subject_to_topic

log = logging.getLogger(__name__)

EVERY_S = 0.25  # at most one look at the stream this often, while copies are held
LOOK_S = 1.0  # a stream or consumer that has not answered by then has no leader (a loaded one answers in ms)


class Standby:
    """``run()`` takes copies of jobs from ``subject`` (queue group ``queue``) and hands the ones the
    stream cannot have to ``hand_over``; ``leads()`` says whether the stream and its consumer lead."""

    def __init__(
        self,
        nc: Any,
        subject: str,
        queue: str,
        leads: Callable[[], Awaitable[bool]],
        hand_over: Callable[[list[Delivery]], None],
        stream: str,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._queue = queue
        self._leads = leads
        self._hand_over = hand_over
        self._stream = stream
        self._held: deque[tuple[float, Msg]] = deque()  # (monotonic arrival, copy)
        self._arrived = asyncio.Event()
        self.dropped = 0  # copies of jobs the stream delivers
        self.taken = 0  # jobs taken from here while the stream could not take them
        self._taken_since: int | None = None  # taken when the stream stopped leading (None: it leads)

    async def run(self) -> None:
        sub = await self._nc.subscribe(self._subject, queue=self._queue, cb=self._hold)
        try:
            while True:
                if self._taken_since is None:  # the stream leads: look only for copies held
                    await self._arrived.wait()
                began = time.monotonic()
                leads = await self._leads()
                copies = []
                while self._held and self._held[0][0] < began:
                    copies.append(self._held.popleft()[1])
                if not self._held:
                    self._arrived.clear()
                self._settle(leads, copies)
                await asyncio.sleep(max(0.0, EVERY_S - (time.monotonic() - began)))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _hold(self, msg: Msg) -> None:
        if self._taken_since is not None:  # no leader at the last look: taken at once
            self._take([msg])
            return
        self._held.append((time.monotonic(), msg))
        self._arrived.set()

    def _settle(self, leads: bool, copies: list[Msg]) -> None:
        if leads:
            self.dropped += len(copies)
            if self._taken_since is not None:
                log.warning(
                    "NATS: the job stream %s leads again; %d job(s) came through the standby "
                    "subscription meanwhile",
                    self._stream,
                    self.taken - self._taken_since,
                )
                self._taken_since = None
            return
        if self._taken_since is None:
            self._taken_since = self.taken
            log.warning(
                "NATS: the job stream %s or its consumer has no leader (a node lost: an election "
                "takes seconds); taking jobs from the standby subscription %s meanwhile",
                self._stream,
                self._queue,
            )
        if copies:
            self._take(copies)

    def _take(self, copies: list[Msg]) -> None:
        self.taken += len(copies)
        self._hand_over([Delivery(subject_to_topic(m.subject), m.data) for m in copies])
