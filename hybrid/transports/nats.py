"""Jobs from a NATS JetStream work queue fed by NATS's MQTT, results back to the agents' MQTT topics.

Agents keep speaking MQTT to NATS's MQTT listener; NATS maps the topic ``qx/v1/{site}/jobs`` to the
subject ``qx.v1.{site}.jobs``, which a work-queue stream (``stream``, created when missing) binds. All
workers pull from one durable consumer (``queue``) with explicit acks: each job goes to one worker; one
not acknowledged within ``ack_wait_s`` (its worker died) is delivered again, to whichever worker pulls
next, up to ``max_deliver`` times. A living worker tells JetStream it is still working (``in_progress``)
every third of ``ack_wait_s`` while it holds a job, so a long solve is never handed to a second worker.

Results go to ``$MQTT.msgs.<subject of the result topic>``: the stream NATS's MQTT keeps for its QoS 1
subscribers, so the agent gets them at QoS 1 (also after a reconnect of a persistent session); where that
stream is missing, as a plain publish on the subject (QoS 0 to MQTT subscribers). On a cluster
(``url`` naming its servers, comma-separated) the stream has ``replicas`` copies: with 3, queued jobs
and acknowledgements survive the loss of any one node, and the worker reconnects to another server.

A node's loss costs the stream or its consumer their leader when that node led them; until the others
have elected one (4-9 s), jobs are not stored. With replicas, a worker therefore also takes jobs from a
plain queue subscription while the stream cannot (:mod:`qxedge.hybrid.transports.nats_standby`), and a
result that NATS's MQTT QoS 1 stream does not store within ``STORE_WAIT_S`` (its leader is gone) goes out
plainly, as do the results of the next ``STORE_REST_S``: an agent connected at that moment gets it at
QoS 0, one that is not gets it by re-sending the job (answered from the job ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from qxedge.connectors.mqtt import BrokerConfig
from qxedge.core.cancels import raise_if_cancelling
from qxedge.core.errors import TransportError
from qxedge.hybrid.transports.base import Delivery, subject_to_topic, topic_to_subject
from qxedge.hybrid.transports.config import TransportConfig
from qxedge.hybrid.transports.nats_standby import LOOK_S, Standby

log = logging.getLogger(__name__)

JOBS_SUBJECT = "qx.v1.*.jobs"  # what the MQTT topics qx/v1/+/jobs map to
MQTT_QOS1_PREFIX = "$MQTT.msgs."  # NATS's MQTT: the subjects of its QoS 1 message stream
# what NATS's MQTT puts on a QoS 1 message it stores: without it, a message that reaches the MQTT
# subscriber's server over a cluster route is dropped (NATS 2.9; one server delivers it either way)
MQTT_QOS1_HEADERS = {"Nmqtt-Pub": "1"}
STREAM_MAX_AGE_S = 3600.0  # a job still queued after an hour is past any deadline
STORE_WAIT_S = 0.5  # a result NATS's MQTT QoS 1 stream has not stored by then goes out plainly ...
STORE_REST_S = 2.0  # ... and so do the results of the next seconds, before the stream is tried again
FETCH_S = 1.0  # a pull request's life: a worker that reconnected asks again within this
RECONNECT_WAIT_S = 0.5  # between attempts at one server (the others of a cluster are tried at once)
NO_PEERS_FOR_PLACEMENT = 10005  # JetStream's error code: not enough servers (yet) for the replicas
PLACEMENT_WAIT_S = 30.0  # how long a worker waits for a forming cluster to have servers for them


class NatsTransport:
    def __init__(self, config: TransportConfig, broker: BrokerConfig, worker_id: str, prefetch: int) -> None:
        assert config.url is not None  # checked by TransportConfig
        self.config = config
        self.broker = broker
        self.worker_id = worker_id
        self.prefetch = prefetch
        self.name = (
            f"NATS JetStream work queue {config.stream} ({JOBS_SUBJECT}, consumer {config.queue}) "
            f"at {config.url}"
        )
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._held: dict[int, Msg] = {}  # id -> a job delivered, not acknowledged yet
        self._room = asyncio.Event()  # fewer than prefetch jobs held
        self._room.set()
        self._batches: asyncio.Queue[list[Delivery]] = asyncio.Queue()  # for deliveries()
        self._plain_until = 0.0  # monotonic: till then results are published plainly (see publish)
        self.standby: Standby | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def __aenter__(self) -> NatsTransport:
        cfg = self.config
        try:
            self._nc = await nats.connect(
                cfg.servers,
                user=cfg.username,
                password=cfg.secret,
                name=f"qxedge-solver-{self.worker_id}",
                connect_timeout=5,
                reconnect_time_wait=RECONNECT_WAIT_S,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TransportError(f"NATS: cannot connect to {cfg.url}: {exc or type(exc).__name__}") from exc
        self._stack.push_async_callback(self._nc.close)
        try:
            self._js = self._nc.jetstream(timeout=5)
            await self._ensure_stream()
            self._sub = await self._js.pull_subscribe(
                JOBS_SUBJECT,
                durable=cfg.queue,
                stream=cfg.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=cfg.ack_wait_s,
                    max_deliver=cfg.max_deliver,
                    filter_subject=JOBS_SUBJECT,
                ),
            )
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            loops = [
                tasks.create_task(self._fetch(), name=f"nats-fetch[{self.worker_id}]"),
                tasks.create_task(self._keep_held(), name=f"nats-in-progress[{self.worker_id}]"),
            ]
            if cfg.replicas > 1:
                self.standby = Standby(
                    self._nc,
                    JOBS_SUBJECT,
                    f"{cfg.queue}-standby",
                    self._leads,
                    self._batches.put_nowait,
                    cfg.stream,
                )
                loops.append(tasks.create_task(self.standby.run(), name=f"nats-standby[{self.worker_id}]"))
            for loop in loops:
                self._stack.callback(loop.cancel)  # first thing on the way out
        except BaseException as exc:
            await self._stack.aclose()
            if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
                raise TransportError(
                    f"NATS: JetStream is not enabled at {cfg.url} (start nats-server with -js, or a "
                    "jetstream {} block in its config; the account needs JetStream too)"
                ) from exc
            if isinstance(exc, nats.errors.Error | nats.js.errors.Error | TimeoutError):
                raise TransportError(f"NATS: cannot set up the work queue at {cfg.url}: {exc}") from exc
            raise
        return self

    async def _ensure_stream(self) -> None:
        cfg = self.config
        wanted = StreamConfig(
            name=cfg.stream,
            subjects=[JOBS_SUBJECT],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=STREAM_MAX_AGE_S,
            num_replicas=cfg.replicas,
        )
        placing_until = time.monotonic() + PLACEMENT_WAIT_S
        while True:
            try:
                await self._js.add_stream(wanted)
                return
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != NO_PEERS_FOR_PLACEMENT:
                    break  # there already, with another config
                if time.monotonic() > placing_until:
                    raise TransportError(
                        f"NATS: the cluster at {cfg.url} cannot place {cfg.replicas} replica(s) of the "
                        f"stream {cfg.stream} ({exc.description}): fewer JetStream servers than replicas?"
                    ) from None
                log.info(
                    "NATS: the cluster cannot place the stream %s yet (%s); trying again", cfg.stream, exc
                )
                await asyncio.sleep(0.5)
        info = await self._js.stream_info(cfg.stream)
        if JOBS_SUBJECT not in (info.config.subjects or []) or (
            info.config.retention != RetentionPolicy.WORK_QUEUE
        ):
            raise TransportError(
                f"NATS: the stream {cfg.stream} exists but is not a work queue on {JOBS_SUBJECT} "
                f"(subjects {info.config.subjects}, retention {info.config.retention})"
            )

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def deliveries(self) -> AsyncIterator[list[Delivery]]:
        while True:
            yield await self._batches.get()

    async def _fetch(self) -> None:
        """Pull jobs from the stream into ``_batches``, no more than ``prefetch`` held at once."""
        while True:
            while len(self._held) >= self.prefetch:
                self._room.clear()
                await self._room.wait()
            try:
                msgs = await self._sub.fetch(self.prefetch - len(self._held), timeout=FETCH_S)
            except TimeoutError:  # no job (nats-py raises its own or asyncio's)
                raise_if_cancelling()  # nats-py waits with asyncio.wait_for: it may drop a cancel
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:  # reconnecting: try again shortly
                log.warning("NATS: could not fetch jobs (%s); trying again", exc)
                await asyncio.sleep(1.0)
                continue
            raise_if_cancelling()
            batch = []
            for msg in msgs:
                self._held[id(msg)] = msg
                batch.append(
                    Delivery(
                        subject_to_topic(msg.subject),
                        msg.data,
                        redelivered=msg.metadata.num_delivered > 1,
                        settle=functools.partial(self._ack, msg),
                    )
                )
            if batch:
                self._batches.put_nowait(batch)

    async def _leads(self) -> bool:
        """Whether the job stream and the workers' consumer both have a leader (they answer in time)."""
        cfg = self.config
        try:
            async with asyncio.timeout(LOOK_S):
                stream, consumer = await asyncio.gather(
                    self._js.stream_info(cfg.stream), self._js.consumer_info(cfg.stream, cfg.queue)
                )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
            raise_if_cancelling()
            return False
        return all(info.cluster is None or bool(info.cluster.leader) for info in (stream, consumer))

    async def _ack(self, msg: Msg) -> None:
        self._held.pop(id(msg), None)
        self._room.set()
        try:
            await msg.ack()
        except (nats.errors.Error, nats.js.errors.Error) as exc:  # redelivered, answered from the ledger
            log.warning("NATS: could not acknowledge a job (%s): it will be delivered again", exc)
        raise_if_cancelling()

    async def _keep_held(self) -> None:
        """Extend the ack wait of every job held, every third of ``ack_wait_s``."""
        while True:
            await asyncio.sleep(self.config.ack_wait_s / 3)
            for msg in list(self._held.values()):
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                    await msg.in_progress()
                raise_if_cancelling()

    async def publish(self, topic: str, payload: bytes, job_id: str | None = None) -> None:
        subject = topic_to_subject(topic)
        if time.monotonic() >= self._plain_until:
            try:
                await self._js.publish(
                    MQTT_QOS1_PREFIX + subject, payload, timeout=STORE_WAIT_S, headers=MQTT_QOS1_HEADERS
                )
                raise_if_cancelling()
                return
            except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
                pass  # no MQTT QoS 1 stream (or it has no leader now): a plain publish
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                self._plain_until = time.monotonic() + STORE_REST_S
                log.warning(
                    "NATS: could not store the result on %s (%s); publishing results plainly for %g s",
                    topic,
                    exc or type(exc).__name__,
                    STORE_REST_S,
                )
        try:
            await self._nc.publish(subject, payload)
        except nats.errors.Error as exc:
            log.warning("NATS: could not publish the result on %s: %s", topic, exc)
        raise_if_cancelling()

    def missing(self, stage: str = "jobs") -> str:
        if stage == "mqtt":
            return (
                f"NATS: MQTT is not enabled (nothing speaks MQTT at {self.broker.url}: nats-server needs an "
                "mqtt {} block, a server_name and JetStream; NATS speaks MQTT 3.1.1 only)"
            )
        return (
            f"NATS: jobs published over MQTT at {self.broker.url} never reached the stream "
            f"{self.config.stream} ({JOBS_SUBJECT}): is that MQTT listener this NATS server's (or its "
            "cluster's), in the same account as the worker?"
        )
