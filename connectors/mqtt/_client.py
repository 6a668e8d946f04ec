"""MQTT link: paho-mqtt driven by the asyncio event loop, messages handed over in batches.

Why not aiomqtt or paho's own thread: on this machine kind aiomqtt's iterator moved ~17.7k msg/s where
a raw paho callback loop moved ~41.5k msg/s (FIELD-NOTES.md); a paho thread beside the event loop would
fight it for the GIL on every message. Here paho runs *inside* the loop, with no thread of its own:

- paho's socket is registered with ``loop.add_reader`` / ``add_writer`` (``on_socket_open``,
  ``on_socket_register_write``); the reader callback calls ``loop_read()`` in a burst until a call
  brings no new message, so one wake-up of the loop reads everything the kernel has buffered;
- a publish on the loop thread is written to the socket at once (paho, given an external loop, would
  only register the socket for writing: the message would wait for the caller's step to end and one
  more loop iteration); the writer callback sends what the kernel could not take at once;
- paho's message callback only appends ``(topic, payload)`` to its subscription's list; the consumer
  awaits ``Subscription.next_batch()`` and takes the whole list at once (no task, no future per message),
  or the subscription's ``on_batch`` gets the list at the end of the read burst, on the loop (no task
  wakes up at all: the agent decodes readings so);
- QoS 1 messages are acknowledged by the client, not by paho (``manual_ack``): at the end of the read
  burst, all in one write, or, for a subscription with ``ack_after`` (the agent's plant readings with the
  history upstream on), once their consumer says they are safe (on disk): a ``kill -9`` before then
  leaves them with the broker, which sends them again to the persistent session; a QoS 1 message that
  comes right after a connect, before its subscription is made again (a persistent session's queue),
  waits for it (``PARK_S``) unacknowledged instead of being dropped as unroutable;
- when a consumer falls behind, its list reaching ``high_water`` pauses reading from the socket until it
  catches up: TCP back-pressure instead of unbounded memory;
- a task of the client's own TaskGroup calls ``loop_misc()`` every second (keep-alive, dead-link
  detection) and reconnects with the jittered exponential backoff of :mod:`qxedge.core.backoff`,
  logging each wait before it waits; subscriptions and birth messages (the agent's retained ``online``
  state) are renewed on every connect.

The blocking part of connecting (DNS, TCP) runs in a worker thread so it never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from qxedge.connectors.mqtt._matcher import CachedMatcher
from qxedge.connectors.mqtt.config import BrokerConfig, TlsConfig, split_url
from qxedge.core.backoff import Backoff
from qxedge.core.errors import BrokerUnavailable, ConnectorError

log = logging.getLogger(__name__)

Message = tuple[str, bytes]
_Ack = tuple[int, int, int]  # a QoS > 0 message to acknowledge: (packet id, QoS, CRC-32 of its payload)


class PendingAcks:
    """A read burst's QoS 1 messages, not acknowledged yet: what a subscription's ``ack_after`` gets.
    Calling it acknowledges them (on the connection that read them); ``keys`` (packet id, payload
    CRC-32) let a later run drop the broker's resends of them (:meth:`MqttClient.have_already`)."""

    __slots__ = ("_client", "_session", "entries")

    def __init__(self, client: MqttClient, session: int, entries: list[_Ack]) -> None:
        self._client = client
        self._session = session
        self.entries = entries

    def __call__(self) -> None:
        self._client._ack(self.entries, self._session, safe=True)

    @property
    def keys(self) -> list[tuple[int, int]]:
        return [(mid, crc) for mid, _qos, crc in self.entries]


# called at the end of a read burst with its QoS 1 messages; calls them (on the loop) once what they
# carried is safe, e.g. on disk
AckAfter = Callable[[PendingAcks], None]
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry interval: the 3.1.1 clean_session=False


def publish_properties(
    expiry_s: float | None, response_topic: str | None, correlation: bytes | None
) -> Properties | None:
    """MQTT 5 PUBLISH properties: message expiry (whole seconds, at least 1), response topic and
    correlation data; None when there are none."""
    if expiry_s is None and response_topic is None and correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if expiry_s is not None:
        props.MessageExpiryInterval = max(1, math.ceil(expiry_s))
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


async def each_message(subscription: Subscription, handle: Callable[[str, bytes], Awaitable[None]]) -> None:
    """Hand every message of ``subscription`` to ``handle``; one bad message never ends the loop."""
    async for batch in subscription:
        for topic, payload in batch:
            try:
                await handle(topic, payload)
            except Exception:
                log.exception("could not handle a message on %s", topic)


@dataclass(frozen=True, slots=True)
class Publication:
    """A message published on every connect (``birth``) or as the MQTT will."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Subscription:
    """The messages of one topic filter, handed to one consumer in batches."""

    def __init__(
        self,
        owner: MqttClient,
        topic_filter: str,
        qos: int,
        high_water: int,
        on_batch: Callable[[list[Message]], None] | None = None,
        ack_after: AckAfter | None = None,
    ) -> None:
        self.topic_filter = topic_filter
        self.also: tuple[str, ...] = ()  # more filters subscribed for it (each within topic_filter)
        self.qos = qos
        self.high_water = high_water
        self.on_batch = on_batch  # takes each burst's messages on the loop instead of a consumer task
        self.ack_after = ack_after  # acknowledges each burst's QoS 1 messages once they are safe
        self._owner = owner
        self._buffer: list[Message] = []
        self._unacked: list[_Ack] = []  # the QoS > 0 messages of this burst
        self._wake = asyncio.Event()
        self._closed = False
        self.active = asyncio.Event()  # the broker acknowledged it on the current connection

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        # Runs inside loop_read() on the event loop thread: keep it tiny.
        if (
            msg.qos
            and self._owner._have
            and self._owner._safe_already(msg.mid, msg.qos, msg.dup, msg.payload)
        ):
            return
        self._take(msg.topic, bytes(msg.payload), msg.mid, msg.qos)

    def _take(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        if not self._buffer and self.on_batch is None:
            self._wake.set()
        self._buffer.append((topic, payload))
        self._owner.received += 1
        if qos:
            self._unacked.append((mid, qos, zlib.crc32(payload) if self.ack_after is not None else 0))

    def filters(self) -> list[tuple[str, int]]:
        """What is subscribed for it, with the QoS: its filter, then ``also``."""
        return [(f, self.qos) for f in (self.topic_filter, *self.also)]

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    def _deliver(self) -> None:
        """Hand the messages of a read burst to ``on_batch`` (it must not raise; if it does, the
        messages are lost and the error is logged: the client goes on reading)."""
        if self.on_batch is None or not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            self.on_batch(batch)
        except Exception:
            log.exception("could not take %d messages on %s", len(batch), self.topic_filter)

    def _settle(self, session: int) -> None:
        """The end of a read burst: its messages to ``on_batch``, then their acknowledgements to
        ``ack_after``, or to the client's write at the end of the burst."""
        self._deliver()
        if not self._unacked:
            return
        acks, self._unacked = self._unacked, []
        if self.ack_after is None:
            self._owner._ack_now += acks
        else:
            self.ack_after(PendingAcks(self._owner, session, acks))

    async def next_batch(self) -> list[Message]:
        """Every message received since the last call (at least one); [] once the client is closed."""
        while not self._buffer:
            if self._closed:
                return []
            self._wake.clear()
            await self._wake.wait()
        batch, self._buffer = self._buffer, []
        self._owner._resume_reading()
        return batch

    def drain(self) -> list[Message]:
        """The messages received so far, without waiting (e.g. retained ones right after subscribing)."""
        batch, self._buffer = self._buffer, []
        self._owner._resume_reading()
        return batch

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[Message]:
        batch = await self.next_batch()
        if not batch:
            raise StopAsyncIteration
        return batch

    def close(self) -> None:
        """End the iteration (the consumer gets its last messages, then StopAsyncIteration)."""
        self._closed = True
        self._wake.set()


class MqttClient:
    """An MQTT connection driven by the running event loop; use ``async with``.

    ``birth`` messages are published after every (re)connect; ``will`` is left with the broker (a callable
    is called before each connect, for wills that change per connection: Sparkplug's NDEATH ``bdSeq``);
    ``on_connect`` is called after each successful connect, once subscriptions are renewed.
    """

    _READ_BURST = 2000
    PARK_S = 5.0  # how long a QoS 1 message no subscription matches waits for one after a connect
    MAX_PARKED = 10_000

    def __init__(
        self,
        config: BrokerConfig,
        *,
        role: str = "client",
        will: Publication | Callable[[], Publication] | None = None,
        birth: tuple[Publication, ...] = (),
        clean_session: bool = True,
        on_connect: Callable[[], None] | None = None,
        fresh_only: tuple[str, ...] = (),
        start_offline: bool = False,
    ) -> None:
        """``fresh_only``: topic filters whose QoS 1 messages are never held across an outage (setpoints):
        refused while the link is down and dropped from paho's queue when it goes down (``stale_dropped``).
        ``start_offline``: a broker that cannot be reached at start is no error, the client keeps trying
        in the background (one that refuses the connection, e.g. bad credentials, still is).
        """
        self.start_offline = start_offline
        self._resubscribed: dict[int, Subscription] = {}
        self.config = config
        self.birth = birth
        self.will = will
        self.on_connect = on_connect
        self.received = 0
        self.unroutable = 0
        self.dropped_publishes = 0
        self.stale_dropped = 0
        self.reconnects = 0
        self.ack_listener: Callable[[int], None] | None = None  # called with the mid of each PUBACK
        self.fresh_only = fresh_only
        stable = config.persistent_session  # a stable id: the broker finds the session again after a restart
        # else a suffix of 8 hex digits (config.SESSION_SUFFIX: no site id may end like it)
        self.client_id = config.client_id or f"qxedge-{role}" + ("" if stable else f"-{uuid.uuid4().hex[:8]}")
        self.v5 = config.protocol == "5"
        self._clean = clean_session and not stable
        if self.v5:  # MQTT 5 has clean_start and a session expiry instead of clean_session
            self._paho = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5, manual_ack=True
            )
        else:
            self._paho = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=paho.MQTTv311,
                clean_session=self._clean,
                manual_ack=True,  # acknowledged at the end of each read burst, or later (ack_after)
            )
        self._paho._on_message_filtered = CachedMatcher()  # no garbage cycle per message (see there)
        self._paho.max_queued_messages_set(config.max_queued_messages)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            self._paho.username_pw_set(config.username, password)
        if split_url(config.url)[0] == "mqtts":
            tls = config.tls or TlsConfig()
            self._paho.tls_set_context(tls.context())
            self._paho.tls_insecure_set(not tls.verify_hostname)
        if isinstance(will, Publication):
            self._paho.will_set(will.topic, will.payload, will.qos, will.retain)
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_subscribe = self._on_subscribe
        self._paho.on_publish = self._on_publish
        self._paho.on_message = self._on_unroutable
        self._paho.on_socket_open = self._on_socket_open
        self._paho.on_socket_close = self._on_socket_close
        self._paho.on_socket_register_write = self._on_socket_register_write
        self._paho.on_socket_unregister_write = self._on_socket_unregister_write
        self._subscriptions: list[Subscription] = []
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._puback: dict[int, asyncio.Future[None]] = {}  # publish_acked: mid -> its PUBACK
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._closing = False
        self._sock: socket.socket | None = None
        self._write_watched: socket.socket | None = None  # the socket the writer callback is registered for
        self._reading_paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._in_paho = False  # inside paho's loop_read / loop_write / loop_misc (its callbacks may run)
        self._session = 0  # counts the connections: an acknowledgement goes only on the one that read it
        self._ack_now: list[_Ack] = []  # to acknowledge at the end of the burst
        self.acks_dropped = 0  # messages not acknowledged: the connection that read them was gone
        # QoS 1 messages of this connection no subscription matched yet, right after the connect:
        # (topic, payload, mid, qos, dup), until _unpark
        self._parked: list[tuple[str, bytes, int, int, bool]] = []
        self._park_until = 0.0
        self._have: dict[int, int] = {}  # packet id -> payload CRC-32 of messages safe already (have_already)
        self.resent_dropped = 0  # the broker's resends of messages that were safe already
        self._writing_now = False  # inside _publish, which sends the message itself
        self._stack = contextlib.AsyncExitStack()

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> MqttClient:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            await self._connect(first=True)
        except BrokerUnavailable as exc:
            if not self.start_offline or exc.refused:
                raise
            log.warning("%s; starting without it, reconnecting in the background", exc)
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._maintainer = tasks.create_task(self._maintain(), name=f"mqtt-maintain[{self.client_id}]")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        if self._connected.is_set():
            self._paho.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._disconnected.wait()
        self._drop_socket()
        for sub in self._subscriptions:
            sub.close()
        self._maintainer.cancel()  # it may be sleeping in a backoff or waiting on a connect
        await self._stack.aclose()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once the link is up (at once when it is)."""
        await self._connected.wait()

    @property
    def outbox_depth(self) -> int:
        """QoS 1/2 messages published and not yet acknowledged by the broker (held in memory)."""
        return len(self._paho._out_messages)  # paho has no public count

    # ----------------------------------------------------------------- API
    async def subscribe(
        self,
        topic_filter: str,
        qos: int = 0,
        *,
        high_water: int = 50_000,
        on_batch: Callable[[list[Message]], None] | None = None,
        also: tuple[str, ...] = (),
        ack_after: AckAfter | None = None,
    ) -> Subscription:
        """Subscribe and wait for the broker's SUBACK; messages arrive through the returned object, or,
        with ``on_batch``, are handed to it on the loop at the end of each read burst (no task wakes up
        for them: the reading path of bench/latency.py); it must be quick and never block.

        ``also``: more filters, each within ``topic_filter`` (e.g. exact topics under a wildcard),
        subscribed in the same SUBSCRIBE for brokers that send retained messages only to exact-topic
        subscriptions (RabbitMQ). Their messages come through this subscription, once per copy the
        broker sends (a broker may send one per matching filter).

        QoS 1 messages are acknowledged at the end of the read burst that brought them, or, with
        ``ack_after``, when it calls the function it is given: a message not safe yet is not
        acknowledged, so the broker keeps it (and sends it again after a reconnect)."""
        sub = Subscription(self, topic_filter, qos, high_water, on_batch, ack_after)
        sub.also = also
        # paho matches callbacks against the topic, not against "$share/<group>/<filter>".
        match_filter = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        self._paho.message_callback_add(match_filter, sub._on_message)
        self._subscriptions.append(sub)
        self._hand_parked(sub, match_filter)
        if self.connected:  # else the subscription is made on the next connect
            await self._await_suback(self._paho.subscribe(sub.filters()), topic_filter)
            sub.active.set()
        return sub

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        *,
        expiry_s: float | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> bool:
        """Queue a message; False (and counted in ``dropped_publishes``) when it cannot be sent. With
        MQTT 5 (``protocol: "5"``) the message carries ``expiry_s`` (the broker discards it after that many
        seconds, rounded up), ``response_topic`` and ``correlation`` data; with 3.1.1 they are left out."""
        if qos > 0 and self.fresh_only and not self.connected and self._is_fresh_only(topic):
            self.stale_dropped += 1
            return False
        props = publish_properties(expiry_s, response_topic, correlation) if self.v5 else None
        rc = self._publish(topic, payload, qos, retain, props).rc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (qos > 0 and rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.dropped_publishes += 1
            return False
        return True

    async def publish_acked(
        self, topic: str, payload: bytes, *, retain: bool = False, within_s: float = 2.0
    ) -> bool:
        """Publish at QoS 1 and wait, at most ``within_s``, for the broker's PUBACK: the last message
        before a disconnect (the agent's retained ``offline``), which paho would otherwise still hold
        behind its full in-flight window when the DISCONNECT goes out. False when not connected or not
        acknowledged in time."""
        mid = self.publish_tracked(topic, payload, retain=retain)
        if mid is None:
            return False
        acked = self._puback[mid] = self._running_loop().create_future()
        try:
            async with asyncio.timeout(within_s):
                await acked
        except TimeoutError:
            return False
        finally:
            self._puback.pop(mid, None)
        return True

    def publish_tracked(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """Publish at QoS 1 while connected; the message id (``ack_listener`` gets it with the PUBACK),
        or None when it was not queued. paho re-sends it after a reconnect until acknowledged."""
        if not self.connected:
            return None
        info = self._publish(topic, payload, 1, retain)
        return info.mid if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def _publish(
        self, topic: str, payload: bytes | str, qos: int, retain: bool, props: Properties | None = None
    ) -> paho.MQTTMessageInfo:
        """paho's publish, and the message sent at once where that is possible: on the loop thread, not
        inside a paho call (its callbacks hold a lock that writing takes again). Then paho's request to
        watch the socket for writing is skipped (two epoll_ctl calls a message); the writer callback
        is registered only when the kernel did not take the whole message."""
        sock = self._sock
        now = not self._in_paho and sock is not None and threading.get_ident() == self._loop_thread
        self._writing_now = now
        try:
            info = self._paho.publish(topic, payload, qos, retain, props)
        finally:
            self._writing_now = False
        if now and sock is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._paho_call(self._paho.loop_write)
            if self._sock is sock:  # what the kernel did not take: paho thinks the socket is watched already
                self._add_writer(sock)
        return info

    def _paho_call(self, loop_fn: Callable[[], MQTTErrorCode]) -> MQTTErrorCode:
        """Call one of paho's ``loop_*`` functions, remembering that its callbacks may run now."""
        self._in_paho = True
        try:
            return loop_fn()
        finally:
            self._in_paho = False

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _code: ReasonCode, _props: Any) -> None:
        if self.ack_listener is not None:
            self.ack_listener(mid)
        acked = self._puback.get(mid)
        if acked is not None and not acked.done():
            acked.set_result(None)

    def _is_fresh_only(self, topic: str) -> bool:
        return any(paho.topic_matches_sub(f, topic) for f in self.fresh_only)

    def _drop_stale(self) -> None:
        """The link is down: setpoints still queued would be written late after the reconnect."""
        with self._paho._out_message_mutex:  # paho has no public API for its queue
            out = self._paho._out_messages
            for mid in [mid for mid, m in out.items() if m.qos > 0 and self._is_fresh_only(m.topic)]:
                del out[mid]
                self.stale_dropped += 1

    # ----------------------------------------------------------------- connecting
    async def _connect(self, *, first: bool) -> None:
        loop = self._running_loop()
        self._connack = loop.create_future()
        cfg = self.config
        if callable(self.will):
            will = self.will()
            self._paho.will_set(will.topic, will.payload, will.qos, will.retain)
        connect: Callable[[], Any] = (
            (lambda: self._paho.connect(cfg.host, cfg.port, cfg.keepalive_s, **self._v5_connect()))
            if first
            else self._paho.reconnect
        )
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                await loop.run_in_executor(None, connect)
            async with asyncio.timeout(cfg.connect_timeout_s):
                code = await self._connack
        except (OSError, TimeoutError) as exc:
            self._drop_socket()
            raise BrokerUnavailable(
                f"cannot reach the MQTT broker at {cfg.url}: {exc or 'timed out'}{self._v5_hint}"
            ) from exc
        if code.is_failure:
            self._drop_socket()
            refusal = f"the MQTT broker at {cfg.url} refused the connection: {code}{self._v5_hint}"
            raise BrokerUnavailable(refusal, refused=True)

    @property
    def _v5_hint(self) -> str:
        return " (protocol 5: the broker may not speak MQTT 5; 3.1.1 is the default)" if self.v5 else ""

    def _v5_connect(self) -> dict[str, Any]:
        """MQTT 5: clean_start, and a session that outlives the connection when it is not clean."""
        if not self.v5:
            return {}
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if self._clean else SESSION_NEVER_EXPIRES
        return {"clean_start": self._clean, "properties": props}

    def _on_connect(self, _c: paho.Client, _u: Any, _flags: Any, code: ReasonCode, _props: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)
        if code.is_failure:
            return
        self._disconnected.clear()
        self._session += 1
        self._parked = []  # the broker sends what they held again on this connection
        self._park_until = time.monotonic() + self.PARK_S
        self._connected.set()
        for sub in self._subscriptions:
            rc, mid = self._paho.subscribe(sub.filters())
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._resubscribed[mid] = sub
        for msg in self.birth:
            self._paho.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        log.info("connected to %s", self.config.url)
        if self.on_connect is not None:
            self.on_connect()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _flags: Any, code: ReasonCode, _props: Any) -> None:
        was_connected = self._connected.is_set()
        if self._connack is not None and not self._connack.done():  # closed before its CONNACK
            self._connack.set_exception(ConnectionError("the broker closed the connection before CONNACK"))
        self._connected.clear()
        self._disconnected.set()
        self._resubscribed.clear()
        for sub in self._subscriptions:
            sub.active.clear()
        if self.fresh_only:
            self._drop_stale()
        if was_connected and not self._closing:
            log.warning("lost the MQTT broker at %s (%s); reconnecting", self.config.url, code)

    async def _maintain(self) -> None:
        """Keep-alive and dead-link detection once a second; a lost link is tried again at the next
        second, then after each failure after the backoff's delay (the log line says how long)."""
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while not self._closing:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._paho_call(self._paho.loop_misc)
            if self._connected.is_set() or self._closing:
                backoff.reset()
                continue
            while not self._closing:
                try:
                    await self._connect(first=False)
                except BrokerUnavailable as exc:
                    delay = backoff.next_delay()
                    log.warning("%s; next try in %.2f s", exc, delay)
                    await asyncio.sleep(delay)
                else:
                    self.reconnects += 1
                    break

    async def _await_suback(self, result: tuple[MQTTErrorCode, int | None], topic_filter: str) -> None:
        rc, mid = result
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectorError(f"could not subscribe to {topic_filter!r}: {paho.error_string(rc)}")
        fut = self._suback[mid] = self._running_loop().create_future()
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await fut
        except TimeoutError as exc:
            raise ConnectorError(f"no SUBACK for {topic_filter!r} from {self.config.url}") from exc
        finally:
            self._suback.pop(mid, None)

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode], _props: Any) -> None:
        resubscribed = self._resubscribed.pop(mid, None)
        if resubscribed is not None and not any(c.is_failure for c in codes):
            resubscribed.active.set()
        fut = self._suback.get(mid)
        if fut is None or fut.done():
            return
        failed = [c for c in codes if c.is_failure]
        if failed:
            fut.set_exception(ConnectorError(f"the broker refused the subscription: {failed[0]}"))
        else:
            fut.set_result(None)

    def _on_unroutable(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        """A message no subscription matches. A QoS 1 one that comes within ``PARK_S`` of a connect
        waits for its subscription, unacknowledged: a persistent session's queue arrives right after
        the CONNACK, before the owner has subscribed again. Later, or beyond ``MAX_PARKED``, it is
        acknowledged and counted as unroutable."""
        self.unroutable += 1
        if not msg.qos:
            return
        if self._park_until > time.monotonic() and len(self._parked) < self.MAX_PARKED:
            self._parked.append((msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup)))
            if len(self._parked) == 1:
                self._running_loop().call_later(self.PARK_S, self._unpark)
        else:
            self._ack_now.append((msg.mid, msg.qos, 0))

    def have_already(self, keys: Iterable[tuple[int, int]]) -> None:
        """(packet id, payload CRC-32) of QoS 1 messages made safe before a crash whose acknowledgement
        may not have reached the broker (:attr:`PendingAcks.keys`, kept with the data): when the broker
        sends one of them again (DUP, same id, same payload) it is acknowledged and dropped, not taken
        twice. A message that reuses one of the ids with other content is taken as usual."""
        self._have.update(keys)

    def _safe_already(self, mid: int, qos: int, dup: bool, payload: bytes | bytearray) -> bool:
        crc = self._have.pop(mid, None)  # a message with this id: the old one is answered either way
        if crc is None or not dup or crc != zlib.crc32(payload):
            return False
        self._ack_now.append((mid, qos, 0))
        self.resent_dropped += 1
        return True

    def _hand_parked(self, sub: Subscription, match_filter: str) -> None:
        """The parked messages ``sub`` matches go to it (before anything it receives from now on)."""
        mine = [p for p in self._parked if paho.topic_matches_sub(match_filter, p[0])]
        if not mine:
            return
        self._parked = [p for p in self._parked if not paho.topic_matches_sub(match_filter, p[0])]
        self.unroutable -= len(mine)
        for topic, payload, mid, qos, dup in mine:
            if not (self._have and self._safe_already(mid, qos, dup, payload)):
                sub._take(topic, payload, mid, qos)
        self._settle([sub])

    def _unpark(self) -> None:
        """``PARK_S`` after they came: the parked messages no subscription took are acknowledged."""
        if self._park_until > time.monotonic():
            self._running_loop().call_later(self._park_until - time.monotonic(), self._unpark)
            return
        parked, self._parked = self._parked, []
        self._ack([(mid, qos, 0) for _t, _p, mid, qos, _d in parked], self._session)

    def _settle(self, subscriptions: Iterable[Subscription]) -> None:
        """The end of a read burst (or of a hand-over): messages to their consumers, then every
        acknowledgement due now in one write."""
        session = self._session
        for sub in subscriptions:
            sub._settle(session)
        if self._ack_now:
            acks, self._ack_now = self._ack_now, []
            self._ack(acks, session)

    def _ack(self, acks: list[_Ack], session: int, *, safe: bool = False) -> None:
        """Acknowledge messages read on connection ``session``, all in one write. On a later connection
        their ids may name other messages: then nothing is sent (the broker sends them again; those
        ``safe`` already are dropped then, see :meth:`have_already`)."""
        sock = self._sock
        if session != self._session or not self._connected.is_set() or sock is None:
            self.acks_dropped += len(acks)
            if safe:
                self._have.update((mid, crc) for mid, _qos, crc in acks)
            return
        if self._in_paho or threading.get_ident() != self._loop_thread:
            self._running_loop().call_soon_threadsafe(partial(self._ack, acks, session, safe=safe))
            return
        self._writing_now = True  # written below, once: no writer registration per acknowledgement
        try:
            for mid, qos, _crc in acks:
                self._paho.ack(mid, qos)
        finally:
            self._writing_now = False
        self._paho_call(self._paho.loop_write)
        if self._sock is sock:  # what the kernel did not take
            self._add_writer(sock)

    # ----------------------------------------------------------------- socket ↔ event loop
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ConnectorError("MqttClient used outside 'async with'")
        return self._loop

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._running_loop().call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._in_loop(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        # small messages go out now, not after Nagle's wait
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._reading_paused = False
        self._running_loop().add_reader(sock, self._on_readable)

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._in_loop(self._unwatch, sock)

    def _unwatch(self, sock: socket.socket) -> None:
        loop = self._running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock)
            loop.remove_writer(sock)
        if self._write_watched is sock:
            self._write_watched = None
        if self._sock is sock:
            self._sock = None

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._unwatch(self._sock)

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        if not (self._writing_now and threading.get_ident() == self._loop_thread):  # _publish writes now
            self._in_loop(self._add_writer, sock)

    def _add_writer(self, sock: socket.socket) -> None:
        # asked from another thread, the queue may have been sent by a publish on the loop since
        if sock.fileno() >= 0 and self._paho.want_write():
            self._running_loop().add_writer(sock, self._paho_call, self._paho.loop_write)
            self._write_watched = sock

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        # after every write that empties its queue; unless the writer callback is registered there is
        # nothing to remove (a fifth of a publish's Python calls, in asyncio's selector)
        if self._write_watched is sock or threading.get_ident() != self._loop_thread:
            self._in_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: socket.socket) -> None:
        if self._write_watched is sock:
            self._write_watched = None
        with contextlib.suppress(ValueError, OSError):
            self._running_loop().remove_writer(sock)

    def _on_readable(self) -> None:
        try:
            for _ in range(self._READ_BURST):
                before = self.received + self.unroutable
                if self._paho_call(self._paho.loop_read) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if self.received + self.unroutable == before:
                    break  # no complete message left in the socket (or a control packet: read again later)
        finally:  # also when a callback of paho's raised: what the burst read is not held back
            self._settle(self._subscriptions)
        if any(sub.backlog >= sub.high_water for sub in self._subscriptions):
            self._pause_reading()
        elif self._tls_pending():
            self._running_loop().call_soon(self._on_readable)

    def _tls_pending(self) -> bool:
        """TLS: bytes already decrypted inside the SSL object do not make the socket readable again."""
        return self._sock is not None and bool(getattr(self._sock, "pending", lambda: 0)())

    def _pause_reading(self) -> None:
        if self._sock is not None and not self._reading_paused:
            self._reading_paused = True
            self._running_loop().remove_reader(self._sock)
            log.warning(
                "a consumer is %d messages behind: pausing reads (back-pressure)",
                max(sub.backlog for sub in self._subscriptions),
            )

    def _resume_reading(self) -> None:
        if self._reading_paused and self._sock is not None:
            self._reading_paused = False
            self._running_loop().add_reader(self._sock, self._on_readable)
            if self._tls_pending():
                self._running_loop().call_soon(self._on_readable)
