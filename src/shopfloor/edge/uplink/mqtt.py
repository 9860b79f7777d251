"""Store and forward through an MQTT broker: same contract, same answers as HTTP.

:class:`MqttTransport` has :class:`~.http.HttpTransport`'s three calls, so the
:class:`~.sender.Sender` does not care which one it drives:

* ``post_batch(body)`` publishes the request body (the same Arrow IPC stream, compressed
  the same way) with QoS 1 to ``{root}/edges/{edge}/batches``; the edge id, seq(s),
  historical flag, compression and the edge's clock travel as MQTT 5 user properties
  (docs/wire.md). It returns when the platform's **answer for those seqs arrives on
  ``{root}/edges/{edge}/acks``** — the platform publishes it only after the commit. The
  broker's PUBACK only means the broker has the message; it acknowledges nothing here.
  No answer within ``timeout_s`` is "unavailable": the sender sends the batch again
  later and the platform's ledger makes that harmless.
* ``put_tags`` publishes the tag metadata, retained, to ``.../tags`` (and again after
  every reconnect, in case the broker lost its retained messages).
* ``put_status`` publishes the status report to ``.../status`` and waits for the
  platform's answer (its clock-skew estimate) on the acks topic.
* with :meth:`MqttTransport.serve_commands`, the platform's commands to this edge
  (``{root}/cmd/{edge}/{verb}``, writes to equipment: docs/writes.md) are carried out one
  at a time and answered on ``.../results``.

The edge keeps a persistent MQTT 5 session (fixed client id, ``clean_start`` false, a
session expiry), so answers the platform published while the edge was away are delivered
when it comes back. Such a late answer finds no waiting request; a committed one is kept
(bounded) and settles the batch at once when the sender sends it again, without another
publish. Answers are matched by the exact list of seqs in the message, so a late answer
for a coalesced message never settles a different grouping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pyarrow as pa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.config.edge import UplinkMqttSection
from shopfloor.config.mqtt_link import (
    PROP_CONTENT_ENCODING,
    PROP_EDGE,
    PROP_EDGE_TIME,
    PROP_HISTORICAL,
    PROP_SEQ,
    PROP_SEQS,
    PROP_WIRE,
    TOPIC_ACKS,
    TOPIC_BATCHES,
    TOPIC_RESULTS,
    TOPIC_STATUS,
    TOPIC_TAGS,
    TOPIC_WRITABLES,
)
from shopfloor.errors import ConfigError
from shopfloor.model import TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.loopnoise import quiet_socket_teardown
from shopfloor.runtime.supervisor import Supervisor
from shopfloor.wire import ARROW_MEDIA_TYPE, WIRE_VERSION

from .framing import COMPRESSIONS, compress
from .http import Answer, Verdict, classify, tags_body

__all__ = ["MqttTransport", "MqttUplinkStats"]

logger = logging.getLogger(__name__)

_INLINE_COMPRESS_BYTES = 256 * 1024
_MAX_ANSWER_BYTES = 64 * 1024
"""Larger messages on the acks topic are not answers of the platform: ignored."""
_ANSWER_CACHE = 4096
"""Committed answers kept for batches nobody waits for (late, or from before a restart)."""
_INBOX = 10_000
"""Answers received and not yet dispatched; beyond it the oldest are dropped (counted)."""
_STATUS_EXPIRY_S = 60
"""A status report not delivered within this is stale: the broker discards it."""
_DISCONNECT_S = 2.0
_PENDING_CALLS = 1024
"""aiomqtt warns above this many unfinished publishes; the sender's window bounds them."""
_COMMANDS = 32
"""Commands received and not yet carried out; beyond it new ones are dropped (counted)."""

CommandHandler = Callable[[str, bytes], Awaitable[bytes | None]]
"""Carries out one command (its verb and JSON body); the result to publish, if any."""

Key = tuple[int, ...]


@dataclass(slots=True)
class MqttUplinkStats:
    """What the MQTT link did since start.

    Attributes:
        connected: whether the link to the broker stands now.
        connects: successful connections (the first one included).
        published: batch messages published (PUBACKed by the broker).
        answers: answers from the platform that settled a waiting batch.
        late_answers: committed answers that arrived with nobody waiting (kept).
        early_settled: batches settled from a kept answer without publishing again.
        timeouts: batches the platform did not answer within the timeout.
        dropped_answers: answers dropped because too many waited to be dispatched.
        refused: publishes the broker refused (PUBACK with a failure reason, e.g. the ACL).
        last_error: the last connection problem, for operators.
        last_refusal: the broker's reason for the last refused publish.
    """

    connected: bool = False
    connects: int = 0
    published: int = 0
    answers: int = 0
    late_answers: int = 0
    early_settled: int = 0
    timeouts: int = 0
    dropped_answers: int = 0
    refused: int = 0
    last_error: str | None = None
    last_refusal: str | None = None


class _Refused(Exception):  # noqa: N818 - a condition, like PermissionDenied
    """The broker refused something the link needs (the acks subscription)."""


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's message queue, bounded with drop-oldest: stale answers go first."""

    def __init__(self, maxsize: int, stats: MqttUplinkStats) -> None:
        super().__init__(maxsize)
        self._stats = stats

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.full():
            self.get_nowait()
            self._stats.dropped_answers += 1
            if self._stats.dropped_answers == 1:
                logger.warning(
                    "MQTT uplink: more than %d answers wait to be read; dropping the oldest "
                    "(their batches are sent again)",
                    self.maxsize,
                )
        super().put_nowait(item)


class MqttTransport:
    """Batches, tags and status through a broker; acknowledged by the platform's answers.

    Args:
        settings: the broker (``[uplink.mqtt]``).
        edge_id: this edge's identity (topics and client id name it).
        timeout_s: how long a published batch waits for the platform's answer.
        compression: ``zstd`` (default), ``gzip`` or ``none``.
        clock: for the ``edge-time`` property.
    """

    def __init__(
        self,
        settings: UplinkMqttSection,
        *,
        edge_id: str,
        timeout_s: float = 10.0,
        compression: str = "zstd",
        clock: Clock | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.settings = settings
        self.edge_id = edge_id
        self.timeout_s = timeout_s
        self.compression = compression
        self.client_id = settings.mqtt_client_id(edge_id)
        self._clock = clock or SystemClock()
        self._topics = {
            kind: settings.topic(edge_id, kind)
            for kind in (TOPIC_BATCHES, TOPIC_ACKS, TOPIC_TAGS, TOPIC_STATUS)
        }
        self._topics[TOPIC_RESULTS] = settings.topic(edge_id, TOPIC_RESULTS)
        self._topics[TOPIC_WRITABLES] = settings.topic(edge_id, TOPIC_WRITABLES)
        self._writables: bytes = b""
        self._command_prefix = settings.command_topic(edge_id, "")
        self._on_command: CommandHandler | None = None
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(_COMMANDS)
        self.dropped_commands = 0
        self._stats = MqttUplinkStats()
        self._supervisor = Supervisor("mqtt-uplink", stop_timeout_s=5.0)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._waiters: dict[Key, asyncio.Future[Answer]] = {}
        self._kept: OrderedDict[Key, Answer] = OrderedDict()
        self._status_waiters: list[asyncio.Future[Answer]] = []
        self._tags_payload: bytes | None = None
        self._started = False
        self._closed = False
        self._outage_logged = False

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start connecting to the broker in the background. Idempotent."""
        if self._started or self._closed:
            return
        self._started = True
        quiet_socket_teardown()
        if self.settings.tls is not None and self.settings.tls.insecure:
            # allowed for trials, but never silently: anyone on the path can read and forge
            logger.warning(
                "uplink.mqtt.tls.insecure: the broker %s is not verified (any certificate "
                "and host name is accepted)",
                self.settings.where,
            )
        self._supervisor.start("link", self._link)
        if self._on_command is not None:
            self._supervisor.start("commands", self._carry_out)

    def serve_commands(self, handler: CommandHandler, *, writables: bytes) -> None:
        """Subscribe to the platform's commands to this edge and carry them out with
        ``handler`` (call before :meth:`start`); ``writables`` (JSON: the connectors that
        allow writes, their writable tags) is published, retained, on each connect."""
        self._on_command = handler
        self._writables = writables

    async def close(self) -> None:
        """Disconnect and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._supervisor.stop()
        self._fail_waiters("the uplink is closing")

    def stats(self) -> MqttUplinkStats:
        """The figures for health and logs; cheap."""
        self._stats.connected = self._connected.is_set()
        return self._stats

    # -------------------------------------------------------------- transport
    async def post_batch(self, body: bytes) -> Answer:
        """Publish one request body (from :func:`~.framing.frame`) and wait for its answer."""
        try:
            seqs, historical = _identity(body)
        except ValueError as err:  # a framing bug: refuse it like the platform would
            return Answer(Verdict.REFUSED, 400, None, f"not a wire batch: {err}")
        kept = self._kept.pop(seqs, None)
        if kept is not None:
            self._stats.early_settled += 1
            return kept
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        client = await self._wait_client(self.timeout_s)
        if client is None:
            return self._no_link()
        if len(body) > _INLINE_COMPRESS_BYTES and self.compression != "none":
            data, encoding = await asyncio.to_thread(compress, body, self.compression)
        else:
            data, encoding = compress(body, self.compression)
        if len(data) > self.settings.max_message_bytes:
            return Answer(
                Verdict.REFUSED,
                413,
                None,
                f"batch {seqs[0]} is {len(data)} bytes compressed, more than "
                f"uplink.mqtt.max_message ({self.settings.max_message_bytes} bytes)",
            )
        properties = self._batch_properties(seqs, historical=historical, encoding=encoding)
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiters[seqs] = future
        refused_before = self._stats.refused
        try:
            async with asyncio.timeout_at(deadline):
                # PUBACK: the broker has it. Nothing more; the answer below is the ack.
                await client.publish(
                    self._topics[TOPIC_BATCHES], data, qos=1, properties=properties, timeout=1e9
                )
                if self._stats.refused != refused_before:  # (or a publish beside it was)
                    return self._refused(f"batch {seqs[0]}")
                self._stats.published += 1
                return await future
        except TimeoutError:
            self._stats.timeouts += 1
            return Answer(
                Verdict.UNAVAILABLE,
                None,
                None,
                f"no answer from the platform within {self.timeout_s:g} s for batch {seqs[0]} "
                "(is its MQTT ingest running?)",
            )
        except aiomqtt.MqttError as err:
            return Answer(Verdict.UNAVAILABLE, None, None, f"MQTT publish failed: {err}")
        finally:
            if self._waiters.get(seqs) is future:
                del self._waiters[seqs]

    async def put_tags(self, tags: Sequence[TagMeta]) -> Answer:
        """Publish tag metadata, retained (the platform registers it when it reads it)."""
        payload = json.dumps(tags_body(tags), separators=(",", ":")).encode()
        self._tags_payload = payload
        client = await self._wait_client(self.timeout_s)
        if client is None:
            return self._no_link()
        refused_before = self._stats.refused
        try:
            await client.publish(
                self._topics[TOPIC_TAGS], payload, qos=1, retain=True, timeout=self.timeout_s
            )
        except aiomqtt.MqttError as err:
            return Answer(Verdict.UNAVAILABLE, None, None, f"MQTT publish failed: {err}")
        if self._stats.refused != refused_before:
            return self._refused("the tags")
        return Answer(Verdict.ACKED, 200, body={"registered": len(tags)})

    async def put_status(self, status: Mapping[str, Any]) -> Answer:
        """Publish the status report; the answer carries the platform's skew estimate."""
        client = await self._wait_client(self.timeout_s)
        if client is None:
            return self._no_link()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._status_waiters.append(future)
        properties = _properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = _STATUS_EXPIRY_S
        properties.ContentType = "application/json"
        refused_before = self._stats.refused
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.publish(
                    self._topics[TOPIC_STATUS],
                    json.dumps(dict(status), separators=(",", ":")).encode(),
                    qos=1,
                    properties=properties,
                    timeout=1e9,
                )
                if self._stats.refused != refused_before:
                    return self._refused("the status report")
                return await future
        except TimeoutError:
            return Answer(Verdict.UNAVAILABLE, None, None, "no answer to the status report")
        except aiomqtt.MqttError as err:
            return Answer(Verdict.UNAVAILABLE, None, None, f"MQTT publish failed: {err}")
        finally:
            with contextlib.suppress(ValueError):
                self._status_waiters.remove(future)

    # ---------------------------------------------------------------- helpers
    def _batch_properties(self, seqs: Key, *, historical: bool, encoding: str | None) -> Properties:
        properties = _properties(PacketTypes.PUBLISH)
        properties.ContentType = ARROW_MEDIA_TYPE
        user = [
            (PROP_WIRE, str(WIRE_VERSION)),
            (PROP_EDGE, self.edge_id),
            (PROP_SEQ, str(seqs[0])),
            (PROP_HISTORICAL, "1" if historical else "0"),
            (PROP_EDGE_TIME, str(self._clock.now_ns())),
        ]
        if len(seqs) > 1:
            user.append((PROP_SEQS, ",".join(map(str, seqs))))
        if encoding:
            user.append((PROP_CONTENT_ENCODING, encoding))
        properties.UserProperty = user
        return properties

    async def _wait_client(self, timeout_s: float) -> aiomqtt.Client | None:
        await self.start()
        if not self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._client if self._connected.is_set() else None

    def _refused(self, what: str) -> Answer:
        """The answer to a publish the broker refused (see :meth:`_watch_refusals`)."""
        return Answer(
            Verdict.UNAVAILABLE,
            None,
            None,
            f"the broker refused {what} ({self._stats.last_refusal}): check the broker user "
            f"of edge {self.edge_id} and the broker's ACL",
        )

    def _no_link(self) -> Answer:
        reason = self._stats.last_error or "not connected"
        return Answer(
            Verdict.UNAVAILABLE, None, None, f"MQTT broker {self.settings.where}: {reason}"
        )

    def _fail_waiters(self, reason: str) -> None:
        answer = Answer(Verdict.UNAVAILABLE, None, None, reason)
        for future in [*self._waiters.values(), *self._status_waiters]:
            if not future.done():
                future.set_result(answer)

    # -------------------------------------------------------------- the link
    async def _link(self) -> None:
        """Connect, subscribe to the acks topic, dispatch answers; reconnect when lost."""
        backoff = Backoff(initial=0.2, maximum=self.settings.reconnect_max_s)
        while True:
            client: aiomqtt.Client | None = None
            try:
                client = await self._connect()
                granted = await client.subscribe(self._topics[TOPIC_ACKS], qos=1)
                code = granted[0] if granted else 0x80
                if (code if isinstance(code, int) else int(getattr(code, "value", 0x80))) >= 0x80:
                    raise _Refused(
                        f"the broker refused the subscription to {self._topics[TOPIC_ACKS]} "
                        f"({code}): no answer could arrive (check the broker's ACL)"
                    )
                if self._on_command is not None:
                    await self._subscribe_commands(client)
                    await client.publish(
                        self._topics[TOPIC_WRITABLES], self._writables, qos=1, retain=True
                    )
                if self._tags_payload is not None:  # the broker may have lost it
                    await client.publish(
                        self._topics[TOPIC_TAGS], self._tags_payload, qos=1, retain=True
                    )
                self._up(client)
                backoff.reset()
                async for message in client.messages:
                    self._dispatch(message)
            except (aiomqtt.MqttError, ConfigError, _Refused) as err:
                self._down(f"{type(err).__name__}: {err}")
            finally:
                self._client = None
                self._connected.clear()
                self._fail_waiters("the connection to the MQTT broker was lost")
                if client is not None:
                    await _disconnect(client)
            await asyncio.sleep(backoff.next_delay())

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        topic = self._command_prefix + "+"
        granted = await client.subscribe(topic, qos=1)
        code = granted[0] if granted else 0x80
        if (code if isinstance(code, int) else int(getattr(code, "value", 0x80))) >= 0x80:
            logger.warning(
                "MQTT uplink: the broker refused the subscription to %s (%s): the platform's "
                "commands cannot arrive (check the broker's ACL)",
                topic,
                code,
            )

    async def _carry_out(self) -> None:
        """Carry out the commands one at a time and publish each result."""
        handler = self._on_command
        assert handler is not None
        while True:
            verb, body = await self._commands.get()
            result = await handler(verb, body)
            if result is None:
                continue
            client = await self._wait_client(self.timeout_s)
            if client is None:  # the platform gives up waiting; nothing to keep it for
                logger.warning("MQTT uplink: the result of a %s command could not be sent", verb)
                continue
            try:
                await client.publish(self._topics[TOPIC_RESULTS], result, qos=1)
            except aiomqtt.MqttError as err:
                logger.warning("MQTT uplink: the result of a %s command was lost: %s", verb, err)

    async def _connect(self) -> aiomqtt.Client:
        settings = self.settings
        password = settings.password()
        tls = await asyncio.to_thread(settings.ssl_context) if settings.tls is not None else None
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = settings.session_expiry_s
        stats = self._stats

        def inbox(maxsize: int = 0) -> _Inbox:
            return _Inbox(maxsize, stats)

        client = aiomqtt.Client(
            settings.host,
            settings.broker_port,
            username=settings.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=settings.keepalive_s,
            timeout=max(1.0, self.timeout_s),
            tls_context=tls,
            tls_insecure=True if settings.tls is not None and settings.tls.insecure else None,
            queue_type=inbox,  # type: ignore[arg-type]  # a factory, called with maxsize
            max_queued_incoming_messages=_INBOX,
        )
        client.pending_calls_threshold = _PENDING_CALLS  # the window is ours to bound
        self._watch_refusals(client)
        await client.__aenter__()
        return client

    def _watch_refusals(self, client: aiomqtt.Client) -> None:
        """Count PUBACKs with a failure reason (MQTT 5: 0x87 "not authorized" when the
        broker's ACL does not let this edge publish there). aiomqtt completes such a
        publish as if it had succeeded; without this the edge would only see the
        platform's answer never come."""
        paho = client._client  # aiomqtt has no hook for the PUBACK's reason code
        inner: Any = paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                self._stats.refused += 1
                self._stats.last_refusal = str(reason)
                if self._stats.refused == 1:
                    logger.error(
                        "MQTT uplink: the broker refused a publish of %s (%s): check this "
                        "edge's broker user and the broker's ACL (docs/broker.md)",
                        self.edge_id,
                        reason,
                    )
            inner(c, userdata, mid, reason, properties)

        paho.on_publish = on_publish

    def _up(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._connected.set()
        self._stats.connects += 1
        if self._outage_logged:
            self._outage_logged = False
            logger.info("MQTT uplink: connected to %s again", self.settings.where)
        elif self._stats.connects == 1:
            logger.info("MQTT uplink: connected to %s as %s", self.settings.where, self.client_id)

    def _down(self, reason: str) -> None:
        self._stats.last_error = reason
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(
                "MQTT uplink: no connection to %s (%s); retrying", self.settings.where, reason
            )

    def _dispatch(self, message: aiomqtt.Message) -> None:
        """Hand an answer to the request waiting for it (or keep a committed one); queue
        a command."""
        payload = message.payload
        topic = str(message.topic)
        if topic.startswith(self._command_prefix):
            if isinstance(payload, bytes | bytearray):
                self._queue_command(topic[len(self._command_prefix) :], bytes(payload))
            return
        if not isinstance(payload, bytes | bytearray) or len(payload) > _MAX_ANSWER_BYTES:
            return
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
            logger.debug("MQTT uplink: an answer that is not JSON: %.200r", payload)
            return
        if not isinstance(doc, dict):
            return
        status = doc.get("status", 200)
        if not isinstance(status, int):
            return
        retry_after = doc.get("retry_after")
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        answer = classify(status, headers, bytes(payload))
        if answer.verdict is not Verdict.ACKED and answer.verdict is not Verdict.DUPLICATE:
            text = bytes(payload[:2000]).decode(errors="replace")
            answer = dataclasses.replace(answer, detail=f"answer {status} over MQTT: {text}")
        if doc.get("kind") == "status":
            for status_waiter in self._status_waiters:
                if not status_waiter.done():
                    status_waiter.set_result(answer)
            return
        key = _answer_key(doc)
        if key is None:
            return
        future = self._waiters.pop(key, None)
        if future is not None and not future.done():
            self._stats.answers += 1
            future.set_result(answer)
        elif answer.committed:
            self._stats.late_answers += 1
            self._kept[key] = answer
            while len(self._kept) > _ANSWER_CACHE:
                self._kept.popitem(last=False)

    def _queue_command(self, verb: str, body: bytes) -> None:
        try:
            self._commands.put_nowait((verb, body))
        except asyncio.QueueFull:
            self.dropped_commands += 1
            if self.dropped_commands == 1:
                logger.warning(
                    "MQTT uplink: more than %d commands wait; dropping new ones (the platform "
                    "answers them as timed out)",
                    _COMMANDS,
                )


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


def _identity(body: bytes) -> tuple[Key, bool]:
    """The seqs and the historical flag of a request body, from its schema metadata."""
    try:
        schema = pa.ipc.open_stream(pa.py_buffer(body)).schema
    except (pa.ArrowException, OSError) as err:
        raise ValueError(str(err)) from err
    meta = schema.metadata or {}
    try:
        if b"seqs" in meta:
            seqs = tuple(int(s) for s in meta[b"seqs"].split(b","))
        else:
            seqs = (int(meta[b"seq"]),)
    except (KeyError, ValueError) as err:
        raise ValueError("the schema metadata has no valid seq") from err
    return seqs, meta.get(b"historical") == b"1"


def _answer_key(doc: Mapping[str, Any]) -> Key | None:
    seqs = doc.get("seqs")
    if seqs is None:
        seqs = [doc.get("seq")]
    if not isinstance(seqs, list) or not seqs:
        return None
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
        return None
    return tuple(seqs)


async def _disconnect(client: aiomqtt.Client) -> None:
    """Leave gracefully when the connection still stands (the session stays on the broker)."""
    try:
        async with asyncio.timeout(_DISCONNECT_S):
            await client.__aexit__(None, None, None)
    except (aiomqtt.MqttError, TimeoutError, OSError) as err:
        logger.debug("MQTT uplink: disconnect: %s", err)
