"""Batches from edges through an MQTT broker: the platform half of the MQTT transport.

:class:`MqttIngest` subscribes to ``{root}/edges/+/batches``, ``.../tags`` and
``.../status`` (docs/wire.md) and treats each message as the HTTP routes treat a request:
same size limits, same decoding and validation, the same :class:`Ingestor` with its
acknowledged, ledgered commit. After the commit it publishes the answer — the HTTP
answer's body plus ``"status"`` — with QoS 1 to that edge's ``.../acks`` topic; the edge
removes the batch from its outbox only then.

**When the broker's copy goes.** aiomqtt hands messages over after paho has already sent
the PUBACK (paho acknowledges QoS 1 as soon as its ``on_message`` callback returns, and
aiomqtt's callback only queues the message). A platform killed between that PUBACK and
its commit would leave the batch only in the edge's outbox (delivered again after the
edge's timeout: no loss, but a detour). So this consumer switches paho to manual
acknowledgement (``manual_ack``, paho ≥ 2; aiomqtt does not expose it, hence the one
reach into ``Client._client``) and sends each PUBACK itself, **after** the commit and
after the answer reached the broker. A platform killed mid-batch gets the message again
from the broker when it reconnects (persistent session: fixed client id,
``clean_start`` false, a long session expiry). PUBACKs go out in the order the messages
arrived (MQTT 5 §4.6), while up to ``max_inflight`` messages are processed at once.

**Several consumers.** With ``shared_group`` the batches and status reports are taken
through an MQTT 5 shared subscription, so several processes (``shopfloor ingest``
workers) split them; the PostgreSQL historian's shared mode stores each batch once
whichever worker gets it. What Mosquitto does with the messages of a member that died
(measured, docs/scale-out.md): with a persistent session they stay queued for it — and
new ones keep being dealt to it — until it comes back; with ``session_expiry = "0s"``
the survivors get every new message at once and the dead member's unacknowledged ones
are dropped by the broker, so they come again from the edges' outboxes after the
edges' answer timeout.

**Bounded.** The CONNECT asks for Receive Maximum = ``max_inflight``: the broker should
send no more than that many QoS 1 messages before it has their PUBACKs, so waiting
batches stay in the broker, not in this process. Mosquitto 2.0 keeps to it only until
PUBACKs start flowing; from then on it sends what it queued for this client (measured:
320 unacknowledged messages at Receive Maximum 5, see
tests/integration/server/test_mqtt_shared_subscription.py). So the local queue holds up
to ``max_inflight + max_queued`` messages (default 16 + 1000, Mosquitto's own
``max_queued_messages`` default) and they are processed ``max_inflight`` at a time.
Beyond it the overflow policy is *reconnect*: an unacknowledged message is never dropped
silently (that would hold one of the broker's in-flight slots until the next session);
the link is dropped (counted, logged once) and the broker sends everything
unacknowledged again — with a session that outlives the connection. (Before, the room
beyond Receive Maximum was 64 messages: under a burst the consumer reconnected again and
again, and a worker with ``session_expiry = "0s"`` lost its queue at each reconnect, so
the edges had to send it again after their timeout; ``bench/scale.py`` found it.)

**Answers.** ``200`` committed (``duplicate`` as over HTTP); ``400``/``413``/``415``/``422``
with the error envelope for an invalid batch; ``429`` with ``retry_after`` when the
historian is behind (:meth:`Ingestor.admit`); ``503`` with ``retry_after`` when the
commit failed. Every answer carries the batch's ``seq`` (and ``seqs`` when coalesced),
read from the body or, for a body that cannot be read, from the message's user
properties. A refused or busy batch is PUBACKed too: the edge still holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.config.mqtt_link import (
    PROP_CONTENT_ENCODING,
    PROP_EDGE_TIME,
    PROP_SEQ,
    PROP_SEQS,
    TOPIC_ACKS,
    TOPIC_BATCHES,
    TOPIC_STATUS,
    TOPIC_TAGS,
)
from shopfloor.errors import (
    ConfigError,
    HistorianError,
    IngestBusy,
    PayloadError,
    ShutdownError,
)
from shopfloor.model import DataType, TagMeta, now_ns
from shopfloor.model.tags import validate_path
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.loopnoise import quiet_socket_teardown
from shopfloor.runtime.supervisor import Supervisor
from shopfloor.server.ingest.service import Ingestor
from shopfloor.wire import (
    ARROW_MEDIA_TYPE,
    DEFAULT_MAX_BYTES,
    EDGE_ID_PATTERN,
    PayloadTooLarge,
    UnsupportedEncoding,
    UnsupportedMediaType,
    decode,
    normalise_encoding,
)

__all__ = ["MqttIngest", "MqttIngestStats"]

logger = logging.getLogger(__name__)

_EDGE_ID = re.compile(EDGE_ID_PATTERN)
_INLINE_DECODE_BYTES = 256 * 1024
_INLINE_COMPRESSED_BYTES = 16 * 1024
_COMMIT_RETRY_S = 5
"""``retry_after`` when a commit failed (as the HTTP route's ``Retry-After``)."""
_DISCONNECT_S = 2.0
_LOST_GRACE_S = 5.0
"""After the link is lost, how long batches being committed may finish before cancelling."""


@dataclass(slots=True)
class MqttIngestStats:
    """What the MQTT ingest did since start.

    Attributes:
        connected: whether the link to the broker stands now.
        connects: successful connections (the first one included).
        received: messages taken from the broker.
        committed: batches committed (answered 200, duplicates included).
        duplicates: batches that were committed before (answered ``duplicate: true``).
        refused: batches answered 4xx (invalid; the edge quarantines them eventually).
        busy: batches answered 429 (the historian is behind).
        failed: batches answered 503 (the commit failed, or the platform is stopping).
        tags_messages: tag metadata messages registered.
        status_reports: status reports stored.
        ignored: messages on unknown topics or from invalid edge ids.
        answers_lost: answers that could not be published (the message is delivered again).
        overflows: reconnects because the broker sent more than ``max_inflight +
            max_queued`` unacknowledged messages.
        in_flight: messages being processed now.
        waiting: messages the broker handed over that wait to be processed (at most
            ``max_inflight`` minus ``in_flight`` while the broker keeps Receive Maximum).
        last_error: the last connection problem, for operators.
    """

    connected: bool = False
    connects: int = 0
    received: int = 0
    committed: int = 0
    duplicates: int = 0
    refused: int = 0
    busy: int = 0
    failed: int = 0
    tags_messages: int = 0
    status_reports: int = 0
    ignored: int = 0
    answers_lost: int = 0
    overflows: int = 0
    in_flight: int = 0
    waiting: int = 0
    last_error: str | None = None


class _TagDoc(BaseModel):
    """One tag of an edge's tag message (the body of ``PUT /api/v1/tags``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=512)
    unit: str = Field("", max_length=64)
    description: str = Field("", max_length=2000)
    data_type: DataType = DataType.FLOAT
    eng_low: float | None = None
    eng_high: float | None = None
    states: dict[str, str] = Field(default_factory=dict)


class _TagsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[_TagDoc] = Field(max_length=100_000)


class _LinkLost(Exception):  # noqa: N818 - a condition, like ConnectionLost
    """The connection must be dropped (lost, or a rule of the protocol could not be kept)."""


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue; overflow of a QoS 1/2 message asks for a reconnect (see module doc)."""

    def __init__(self, maxsize: int, on_overflow: Callable[[aiomqtt.Message], None]) -> None:
        super().__init__(maxsize)
        self._on_overflow = on_overflow

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.full():
            self._on_overflow(item)
            return
        super().put_nowait(item)


@dataclass(slots=True)
class _Entry:
    message: aiomqtt.Message
    done: bool = False


@dataclass(slots=True)
class _Session:
    """One connection: the client and its messages awaiting PUBACK, in arrival order."""

    client: aiomqtt.Client
    pending: deque[_Entry] = field(default_factory=deque)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def finish(self, entry: _Entry) -> None:
        """Mark ``entry`` processed; PUBACK every processed message at the head, in order."""
        entry.done = True
        paho_client: paho.Client = self.client._client  # aiomqtt has no ack(): paho's
        while self.pending and self.pending[0].done:
            message = self.pending.popleft().message
            if message.qos > 0:
                paho_client.ack(message.mid, message.qos)

    def drop(self, reason: str) -> None:
        """Ask for the connection to be dropped (the broker re-sends what is unacknowledged)."""
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


class MqttIngest:
    """The platform's MQTT consumer: ``await start()``, ``await stop()``.

    Args:
        ingestor: validates, stores (acknowledged, once per ``(edge, seq)``) and publishes.
        settings: the broker and the flow control (``[ingest.mqtt]``).
        register_tags: stores tag metadata (``Historian.register_tags``).
        max_body_bytes: largest batch, before and after decompression (as over HTTP).
        status_model: validates status reports like ``PUT /api/v1/edges/{id}/status``
            (the API's ``EdgeStatusIn``); None accepts any object with ``edge_time_ns``.
        clock: the wall clock in UTC ns (receive times, skew).
    """

    def __init__(
        self,
        ingestor: Ingestor,
        settings: MqttIngestSection,
        *,
        register_tags: Callable[[Sequence[TagMeta]], Awaitable[None]],
        max_body_bytes: int = DEFAULT_MAX_BYTES,
        status_model: type[BaseModel] | None = None,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self._ingestor = ingestor
        self.settings = settings
        self._register_tags = register_tags
        self._max_body = max_body_bytes
        self._status_model = status_model
        self._clock = clock
        self._stats = MqttIngestStats()
        self._supervisor = Supervisor("mqtt-ingest", stop_timeout_s=5.0)
        self._slots = asyncio.Semaphore(settings.max_inflight)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._connected = asyncio.Event()
        self._session: _Session | None = None
        self._started = False
        self._outage_logged = False
        self._warned: set[str] = set()

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect (in the background, retrying) and take batches. Idempotent."""
        if self._started:
            return
        self._started = True
        quiet_socket_teardown()
        self._supervisor.start("link", self._link)

    async def stop(self) -> None:
        """Stop taking messages; let the batches being committed finish and be answered
        (up to ``drain_timeout``), then disconnect. The session stays on the broker, so
        batches published meanwhile wait there. Idempotent; call it before closing the
        historian."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        session = self._session
        if session is not None:
            session.drop("stopping")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self.settings.drain_timeout_s)
        await self._supervisor.stop()
        self._connected.clear()

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait until subscribed to the broker (for tests and start-up logs)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._connected.is_set()

    def stats(self) -> MqttIngestStats:
        """The counters; cheap."""
        self._stats.connected = self._connected.is_set()
        session = self._session
        self._stats.waiting = len(session.client.messages) if session is not None else 0
        return self._stats

    def status(self) -> dict[str, Any]:
        """The counters as a dict, for ``/healthz``."""
        return {"broker": self.settings.where, **asdict(self.stats())}

    # -------------------------------------------------------------- the link
    async def _link(self) -> None:
        """Connect, subscribe, consume; reconnect with backoff when the link is lost."""
        backoff = Backoff(initial=0.2, maximum=self.settings.reconnect_max_s)
        self._stopped.clear()  # the supervisor may restart this loop after a crash
        try:
            while not self._stopping.is_set():
                session: _Session | None = None
                try:
                    session = self._session = _Session(await self._connect())
                    if self._stopping.is_set():  # stop() came while connecting
                        session.drop("stopping")
                    await self._subscribe(session.client)
                    self._up()
                    backoff.reset()
                    await self._consume(session)
                except (aiomqtt.MqttError, ConfigError, _LinkLost) as err:
                    if not self._stopping.is_set():
                        self._down(f"{type(err).__name__}: {err}")
                finally:
                    self._session = None
                    self._connected.clear()
                    if session is not None:
                        await _disconnect(session.client)
                if not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
        finally:
            self._stopped.set()

    async def _connect(self) -> aiomqtt.Client:
        settings = self.settings
        password = settings.password()
        tls = await asyncio.to_thread(settings.ssl_context) if settings.tls is not None else None
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = settings.session_expiry_s
        properties.ReceiveMaximum = settings.max_inflight

        def inbox(maxsize: int = 0) -> _Inbox:
            return _Inbox(maxsize, self._overflow)

        client = aiomqtt.Client(
            settings.host,
            settings.broker_port,
            username=settings.username,
            password=password,
            identifier=settings.mqtt_client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=settings.keepalive_s,
            tls_context=tls,
            tls_insecure=True if settings.tls is not None and settings.tls.insecure else None,
            queue_type=inbox,  # type: ignore[arg-type]  # a factory, called with maxsize
            max_queued_incoming_messages=settings.max_inflight + settings.max_queued,
        )
        # aiomqtt warns above 10 unfinished publishes; the local queue bounds ours
        client.pending_calls_threshold = settings.max_inflight + settings.max_queued
        # PUBACK after the commit, not on receipt (module doc); set before any message.
        client._client.manual_ack_set(True)  # aiomqtt has no public switch
        await client.__aenter__()
        return client

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        filters = [
            self.settings.subscription(kind) for kind in (TOPIC_TAGS, TOPIC_BATCHES, TOPIC_STATUS)
        ]
        granted = await client.subscribe([(f, 1) for f in filters])
        for topic, code in zip(filters, granted, strict=False):
            value = code if isinstance(code, int) else int(getattr(code, "value", 0x80))
            if value >= 0x80:
                raise _LinkLost(f"the broker refused the subscription to {topic!r} ({code})")

    async def _consume(self, session: _Session) -> None:
        """Take messages until the link is lost or a stop is asked; let handlers finish."""
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(self._read(session, group), name="mqtt-ingest/read")
            await session.lost.wait()
            reader.cancel()
            if not self._stopping.is_set() and session.handlers:
                # Their answers cannot go out any more; a commit that still finishes is
                # answered "duplicate" when the broker delivers the batch again.
                _done, stuck = await asyncio.wait(session.handlers, timeout=_LOST_GRACE_S)
                for task in stuck:
                    task.cancel()
        if not self._stopping.is_set():
            raise _LinkLost(session.reason)

    async def _read(self, session: _Session, group: asyncio.TaskGroup) -> None:
        messages = session.client.messages
        while True:
            await self._slots.acquire()
            try:
                message = await anext(messages)
            except aiomqtt.MqttError as err:
                self._slots.release()
                session.drop(f"lost: {err}")
                return
            except BaseException:
                self._slots.release()
                raise
            entry = _Entry(message)
            session.pending.append(entry)
            self._stats.received += 1
            task = group.create_task(self._handle(session, entry), name="mqtt-ingest/message")
            session.handlers.add(task)
            task.add_done_callback(session.handlers.discard)

    def _overflow(self, message: aiomqtt.Message) -> None:
        if message.qos == 0:
            self._stats.ignored += 1  # not flow-controlled, and the broker does not keep it
            return
        self._stats.overflows += 1
        if self._stats.overflows == 1:
            logger.warning(
                "MQTT ingest: the broker sent more than max_inflight + max_queued (%d) "
                "unacknowledged messages; reconnecting so that it sends them again (further "
                "cases counted)",
                self.settings.max_inflight + self.settings.max_queued,
            )
        if self._session is not None:
            self._session.drop("more unacknowledged messages than max_inflight + max_queued")

    def _up(self) -> None:
        self._connected.set()
        self._stats.connects += 1
        if self._outage_logged:
            self._outage_logged = False
            logger.info("MQTT ingest: connected to %s again", self.settings.where)
        elif self._stats.connects == 1:
            logger.info(
                "MQTT ingest: taking batches from %s as %s",
                self.settings.where,
                self.settings.mqtt_client_id,
            )

    def _down(self, reason: str) -> None:
        self._stats.last_error = reason
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(
                "MQTT ingest: no connection to %s (%s); batches wait in the broker; retrying",
                self.settings.where,
                reason,
            )

    # ------------------------------------------------------------ messages
    async def _handle(self, session: _Session, entry: _Entry) -> None:
        """Process one message; PUBACK it only if everything it needed was done."""
        self._stats.in_flight += 1
        try:
            if await self._process(session.client, entry.message):
                session.finish(entry)
            else:
                session.drop("an answer could not be published")
        finally:
            self._stats.in_flight -= 1
            self._slots.release()

    async def _process(self, client: aiomqtt.Client, message: aiomqtt.Message) -> bool:
        """Return True when the message may be acknowledged to the broker."""
        where = self.settings.parse_topic(message.topic.value)
        if where is None or not _EDGE_ID.match(where[0]):
            self._stats.ignored += 1
            self._warn_once("topic", "MQTT ingest: ignoring a message on %s", message.topic.value)
            return True
        edge, kind = where
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if kind == TOPIC_BATCHES:
            return await self._answer(client, edge, await self._batch(edge, message, payload))
        if kind == TOPIC_TAGS:
            await self._tags(edge, payload)
            return True
        if kind == TOPIC_STATUS:
            return await self._answer(client, edge, self._status(edge, payload))
        self._stats.ignored += 1
        return True

    async def _batch(self, edge: str, message: aiomqtt.Message, payload: bytes) -> dict[str, Any]:
        """Decode, check and commit one batch; return the answer for the edge."""
        received = self._clock()
        props = _user_properties(message.properties)
        ident: dict[str, Any] = _identity_from(props)
        try:
            self._ingestor.admit()
            if len(payload) > self._max_body:
                raise PayloadTooLarge(self._max_body)
            encoding = normalise_encoding(props.get(PROP_CONTENT_ENCODING))
            content_type = _content_type(message.properties)
            limit = _INLINE_DECODE_BYTES if encoding is None else _INLINE_COMPRESSED_BYTES
            if len(payload) <= limit:
                decoded = decode(
                    payload, content_type, max_bytes=self._max_body, content_encoding=encoding
                )
            else:
                decoded = await asyncio.to_thread(
                    decode,
                    payload,
                    content_type,
                    max_bytes=self._max_body,
                    content_encoding=encoding,
                )
            if decoded.edge is not None and decoded.edge != edge:
                raise PayloadError(
                    "edge", f"the batch names edge {decoded.edge!r:.80} but came on {edge}'s topic"
                )
            seq = decoded.seq if decoded.seq is not None else ident.get("seq")
            if seq is None:
                raise PayloadError("seq", "a batch sent over MQTT needs its seq")
            ident = {"seq": seq}
            if decoded.parts:
                ident["seqs"] = [s for s, _ in decoded.parts]
            result = await self._ingestor.ingest(
                decoded.batch,
                source=edge,
                edge=edge,
                seq=seq,
                historical=decoded.historical,
                edge_time_ns=_int(props.get(PROP_EDGE_TIME)),
                received_ns=received,
                parts=decoded.parts,
                outbox=decoded.outbox,
            )
        except IngestBusy as err:
            self._stats.busy += 1
            return _error(
                ident,
                429,
                code="too_many_requests",
                where=None,
                message=err.reason,
                retry_after=err.retry_after_s,
            )
        except PayloadTooLarge as err:
            self._stats.refused += 1
            return _error(
                ident, 413, code="payload_too_large", where=err.field, message=err.message
            )
        except (UnsupportedMediaType, UnsupportedEncoding) as err:
            self._stats.refused += 1
            return _error(
                ident, 415, code="unsupported_media_type", where=err.field, message=err.message
            )
        except PayloadError as err:
            self._stats.refused += 1
            if err.field == "body":
                return _error(
                    ident, 400, code="malformed_body", where=err.field, message=err.message
                )
            return _error(ident, 422, code="invalid_payload", where=err.field, message=err.message)
        except (HistorianError, ShutdownError) as err:
            self._stats.failed += 1
            return _error(
                ident,
                503,
                code="unavailable",
                where=None,
                message=f"the batch could not be committed, nothing of it was stored: {err}",
                retry_after=_COMMIT_RETRY_S,
            )
        self._stats.committed += 1
        if result.duplicate:
            self._stats.duplicates += 1
        return {
            "kind": "batch",
            "status": 200,
            **ident,
            "edge": edge,
            "accepted": result.accepted,
            "duplicate": result.duplicate,
        }

    async def _tags(self, edge: str, payload: bytes) -> None:
        """Register an edge's tag metadata; a bad message is logged (once) and dropped."""
        try:
            if len(payload) > self._max_body:
                raise ValueError(f"larger than {self._max_body} bytes")
            doc = _TagsDoc.model_validate_json(payload)
            metas = [
                TagMeta(
                    path=validate_path(t.path),
                    unit=t.unit,
                    description=t.description,
                    data_type=t.data_type,
                    eng_low=t.eng_low,
                    eng_high=t.eng_high,
                    states=tuple(sorted((int(k), v) for k, v in t.states.items())),
                )
                for t in doc.tags
            ]
        except (ValidationError, ValueError, RecursionError) as err:
            self._stats.refused += 1
            self._warn_once(f"tags/{edge}", "MQTT ingest: refused tags from %s: %s", edge, err)
            return
        try:
            await self._register_tags(metas)
        except (HistorianError, ShutdownError) as err:
            # the edge publishes its tags again after every reconnect
            logger.warning("MQTT ingest: could not register the tags of %s: %s", edge, err)
            return
        self._stats.tags_messages += 1

    def _status(self, edge: str, payload: bytes) -> dict[str, Any]:
        """Store an edge's status report; the answer carries the skew estimate."""
        received = self._clock()
        try:
            if len(payload) > self._max_body:
                raise ValueError(f"larger than {self._max_body} bytes")
            doc = json.loads(payload)
            if self._status_model is not None:
                doc = self._status_model.model_validate(doc).model_dump(mode="json")
            edge_time = doc.get("edge_time_ns") if isinstance(doc, dict) else None
            if not isinstance(edge_time, int) or isinstance(edge_time, bool) or edge_time < 0:
                raise ValueError("edge_time_ns must be a non-negative integer")
        except RecursionError:  # JSON nested deeper than Python's recursion limit
            return self._refused_status(edge, "the JSON is nested too deeply")
        except (ValidationError, ValueError) as err:
            return self._refused_status(edge, str(err))
        skew = self._ingestor.edges.put_status(
            edge, doc, edge_time_ns=edge_time, received_ns=received
        )
        self._stats.status_reports += 1
        return {"kind": "status", "status": 200, "skew_s": skew}

    def _refused_status(self, edge: str, reason: str) -> dict[str, Any]:
        self._stats.refused += 1
        self._warn_once(f"status/{edge}", "MQTT ingest: refused a status of %s: %s", edge, reason)
        return {
            "kind": "status",
            "status": 422,
            "error": {"code": "invalid_payload", "field": None, "message": reason[:2000]},
        }

    async def _answer(self, client: aiomqtt.Client, edge: str, doc: Mapping[str, Any]) -> bool:
        """Publish an answer to ``edge`` (QoS 1) and wait for the broker to have it."""
        try:
            await client.publish(
                self.settings.topic(edge, TOPIC_ACKS),
                json.dumps(doc, separators=(",", ":")).encode(),
                qos=1,
            )
        except aiomqtt.MqttError as err:
            self._stats.answers_lost += 1
            logger.debug("MQTT ingest: could not answer %s: %s", edge, err)
            return False
        return True

    def _warn_once(self, key: str, text: str, *args: object) -> None:
        if key in self._warned or len(self._warned) > 10_000:
            logger.debug(text, *args)
            return
        self._warned.add(key)
        logger.warning(text, *args)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


def _user_properties(properties: Properties | None) -> dict[str, str]:
    pairs = getattr(properties, "UserProperty", None) or []
    return {str(k): str(v) for k, v in pairs}


def _content_type(properties: Properties | None) -> str:
    value = getattr(properties, "ContentType", None)
    return value if isinstance(value, str) and value else ARROW_MEDIA_TYPE


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _identity_from(props: Mapping[str, str]) -> dict[str, Any]:
    """``seq``/``seqs`` from the user properties, to address an answer to a bad body."""
    ident: dict[str, Any] = {}
    seq = _int(props.get(PROP_SEQ))
    if seq is not None:
        ident["seq"] = seq
    raw = props.get(PROP_SEQS)
    if raw:
        with contextlib.suppress(ValueError):
            ident["seqs"] = [int(s) for s in raw.split(",")]
    return ident


def _error(
    ident: Mapping[str, Any],
    status: int,
    *,
    code: str,
    where: str | None,
    message: str,
    retry_after: float | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "batch",
        "status": status,
        **ident,
        "error": {"code": code, "field": where, "message": message[:2000]},
    }
    if retry_after is not None:
        doc["retry_after"] = retry_after
    return doc


async def _disconnect(client: aiomqtt.Client) -> None:
    """Leave gracefully if the connection still stands (the session stays on the broker)."""
    try:
        async with asyncio.timeout(_DISCONNECT_S):
            await client.__aexit__(None, None, None)
    except (aiomqtt.MqttError, TimeoutError, OSError) as err:
        logger.debug("MQTT ingest: disconnect: %s", err)
