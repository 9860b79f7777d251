"""MQTT with JSON payloads: topic filters and JSON pointers mapped to tags.

Each configured tag names a topic filter (``+`` and ``#`` allowed), an RFC 6901 pointer
to its value inside the JSON payload and, optionally, a pointer to a source timestamp.
``{1}``, ``{2}`` … in the tag's name or path are filled with the levels the wildcards
matched, so ``topic = "plant/+/telemetry"`` with ``path = "acme/{1}/temp"`` covers every
machine; each new path is announced as a tag when its first message arrives.

Messages are handed on in batches (whatever arrived within ``batch_window`` of the first,
at most ``batch_max``), never one batch per message. A payload that is not JSON, a missing
pointer or a value of the wrong type gives that tag a Bad point, and the reason is logged
once per transition; nothing a publisher sends can stop the connector. A lost broker
connection ends :meth:`MqttConnector.subscribe` with ConnectorUnavailable.

:class:`BrokerLink` (connection, TLS, credentials, bounded inbox, batching) is shared
with the Sparkplug B host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn, Self

import aiomqtt

from shopfloor.config.connectors.mqtt import (
    PLACEHOLDER,
    MqttBrokerConfig,
    MqttConnectorConfig,
    MqttTagConfig,
)
from shopfloor.config.durations import parse_duration_s
from shopfloor.edge.mapping import TagSpec, tag_meta, tag_spec
from shopfloor.errors import ConfigError, ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.model.tags import validate_path

logger = logging.getLogger(__name__)

BAD_TYPE_MISMATCH = 0x80740000
"""OPC UA BadTypeMismatch: the value is not of the tag's type."""
BAD_OUT_OF_RANGE = 0x803C0000
"""OPC UA BadOutOfRange: the value does not fit the tag's type."""
BAD_NO_DATA = 0x809B0000
"""OPC UA BadNoData: the payload has no value where the pointer points (or it is null)."""

_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")
_ROUTE_CACHE_SIZE = 4096
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- broker link
class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """The client's bounded message queue: drop-oldest, and it stamps arrival times.

    Stamping at arrival keeps a message's receive time exact even though it waits up to a
    batch window before it is processed.
    """

    def __init__(self, maxsize: int = 0, *, owner: str = "mqtt") -> None:
        super().__init__(maxsize)
        self.owner = owner
        self.dropped = 0
        self.arrived = asyncio.Event()
        self._stamps: weakref.WeakKeyDictionary[aiomqtt.Message, int] = weakref.WeakKeyDictionary()

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.full():
            self.get_nowait()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "%s: messages arrive faster than they are processed; dropping the oldest",
                    self.owner,
                )
        self._stamps[item] = time.time_ns()
        super().put_nowait(item)
        self.arrived.set()

    def received_ns(self, item: aiomqtt.Message) -> int:
        """When ``item`` arrived (UTC ns); now if unknown."""
        return self._stamps.pop(item, None) or time.time_ns()

    def take(self, limit: int) -> list[aiomqtt.Message]:
        """Up to ``limit`` waiting messages, without waiting."""
        out: list[aiomqtt.Message] = []
        while len(out) < limit and not self.empty():
            out.append(self.get_nowait())
        return out


class BrokerLink:
    """One connection to an MQTT broker as the connectors use it.

    Args:
        config: broker, TLS, credentials, QoS and batching settings.
    """

    def __init__(self, config: MqttBrokerConfig) -> None:
        self.config = config
        self.client: aiomqtt.Client | None = None
        self.inbox: _Inbox | None = None
        self.dropped = 0
        self._dropped_before = 0
        self._window_s = parse_duration_s(config.batch_window)
        self._where = f"{config.host}:{config.broker_port}"

    @property
    def where(self) -> str:
        """``host:port`` of the broker, for messages."""
        return self._where

    async def connect(self, *, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        """Connect (TLS and credentials as configured).

        Raises:
            ConnectorUnavailable: the broker cannot be reached or refused us (the message
                says why, e.g. ``Bad username or password``).
        """
        await self.close()
        cfg = self.config
        try:
            password = cfg.password()
        except ConfigError as err:
            raise ConnectorUnavailable(str(err)) from err
        tls_context = None
        if cfg.tls is not None:
            tls_context = await asyncio.to_thread(_tls_context, cfg)  # reads files
        owner = cfg.name

        self._dropped_before = self.dropped

        def inbox_type(maxsize: int = 0) -> _Inbox:
            self.inbox = _Inbox(maxsize, owner=owner)
            return self.inbox

        client = aiomqtt.Client(
            cfg.host,
            cfg.broker_port,
            username=cfg.username,
            password=password,
            identifier=cfg.mqtt_client_id,
            clean_session=cfg.clean_session,
            keepalive=max(1, round(parse_duration_s(cfg.keepalive))),
            timeout=cfg.timeout_s,
            will=will,
            tls_context=tls_context,
            tls_insecure=True if cfg.tls is not None and cfg.tls.insecure else None,
            queue_type=inbox_type,  # type: ignore[arg-type]  # a factory, called with maxsize
            max_queued_incoming_messages=cfg.queue_size,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as err:
            raise ConnectorUnavailable(
                f"cannot connect to MQTT broker {self._where}: {err}"
            ) from err
        self.client = client
        return client

    async def subscribe(self, filters: Sequence[str], *, qos: int) -> None:
        """Subscribe to ``filters``.

        Raises:
            ConnectorUnavailable: the connection broke or the broker refused a filter.
        """
        client = self._connected()
        try:
            granted = await client.subscribe([(f, qos) for f in filters])
        except aiomqtt.MqttError as err:
            raise ConnectorUnavailable(f"cannot subscribe at {self._where}: {err}") from err
        codes = [c if isinstance(c, int) else int(c.value) for c in granted]
        for topic, code in zip(filters, codes, strict=False):
            if code >= 0x80:
                raise ConnectorUnavailable(
                    f"MQTT broker {self._where} refused the subscription to {topic!r}"
                )

    async def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False
    ) -> None:
        """Publish one message.

        Raises:
            ConnectorUnavailable: the connection broke.
        """
        client = self._connected()
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as err:
            raise ConnectorUnavailable(f"cannot publish to {self._where}: {err}") from err

    async def batches(self) -> AsyncIterator[list[tuple[aiomqtt.Message, int]]]:
        """Yield ``(message, received_ns)`` lists as messages arrive, batched.

        Raises:
            ConnectorUnavailable: the connection was lost.
        """
        client = self._connected()
        inbox = self.inbox
        assert inbox is not None
        cfg = self.config
        loop = asyncio.get_running_loop()
        messages = client.messages
        while True:
            try:
                first = await anext(messages)
            except aiomqtt.MqttError as err:
                raise ConnectorUnavailable(f"lost MQTT broker {self._where}: {err}") from err
            batch = [first]
            deadline = loop.time() + self._window_s
            while True:
                inbox.arrived.clear()
                batch += inbox.take(cfg.batch_max - len(batch))
                remaining = deadline - loop.time()
                if len(batch) >= cfg.batch_max or remaining <= 0:
                    break
                # wait for the queue, not for a message: a cancelled get could lose one
                try:
                    async with asyncio.timeout(remaining):
                        await inbox.arrived.wait()
                except TimeoutError:
                    break
            self.dropped = self._dropped_before + inbox.dropped
            yield [(m, inbox.received_ns(m)) for m in batch]

    async def close(self) -> None:
        """Disconnect (gracefully if the connection still stands). Idempotent."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError) as err:
            logger.debug("%s: disconnect from %s: %s", self.config.name, self._where, err)

    def _connected(self) -> aiomqtt.Client:
        if self.client is None:
            raise ConnectorUnavailable(f"not connected to MQTT broker {self._where}")
        return self.client


def _tls_context(cfg: MqttBrokerConfig) -> ssl.SSLContext:
    try:
        context = cfg.ssl_context()
    except ConfigError as err:
        raise ConnectorUnavailable(str(err)) from err
    assert context is not None
    return context


# --------------------------------------------------------------------------- JSON mapping
class BadValue(Exception):  # noqa: N818 - a verdict, not a failure of the connector
    """Why one tag's value could not be taken from a message (becomes a Bad point)."""

    def __init__(self, quality: int, reason: str) -> None:
        super().__init__(reason)
        self.quality = quality
        self.reason = reason


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 pointer into its unescaped reference tokens."""
    if not pointer:
        return ()
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:])


def resolve_pointer(document: object, tokens: tuple[str, ...]) -> object:
    """The value ``tokens`` point to in ``document``.

    Raises:
        BadValue: nothing is there (BadNoData).
    """
    value = document
    for depth, token in enumerate(tokens):
        if isinstance(value, dict):
            if token not in value:
                raise BadValue(BAD_NO_DATA, f"no member {_where(tokens, depth)}")
            value = value[token]
        elif isinstance(value, list):
            if not _INDEX.match(token) or int(token) >= len(value):
                raise BadValue(BAD_NO_DATA, f"no element {_where(tokens, depth)}")
            value = value[int(token)]
        else:
            raise BadValue(BAD_NO_DATA, f"{_where(tokens, depth - 1)} is not an object or array")
    return value


def _where(tokens: tuple[str, ...], depth: int) -> str:
    return "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[: depth + 1])


def coerce_value(raw: object, data_type: str, *, bit: int | None = None) -> float | str:
    """A JSON value as a point value of ``data_type`` (raw, unscaled).

    Numbers, and booleans as 0/1, fit numeric types; integer types need whole numbers in
    their range; ``string`` takes strings, and numbers or booleans as their JSON text.

    Raises:
        BadValue: null (BadNoData), wrong type (BadTypeMismatch) or out of range.
    """
    if raw is None:
        raise BadValue(BAD_NO_DATA, "the value is null")
    if data_type == "string":
        if isinstance(raw, str):
            return raw
        if isinstance(raw, bool | int | float):
            return json.dumps(raw)
        raise BadValue(BAD_TYPE_MISMATCH, f"expected a string, got {_kind(raw)}")
    if data_type == "bool":
        if isinstance(raw, bool):
            return 1.0 if raw else 0.0
        if isinstance(raw, int | float) and raw in (0, 1):
            return float(raw)
        raise BadValue(BAD_TYPE_MISMATCH, f"expected a boolean, got {_kind(raw)}")
    if not isinstance(raw, bool | int | float):
        raise BadValue(BAD_TYPE_MISMATCH, f"expected a number, got {_kind(raw)}")
    if data_type in _INT_RANGES or bit is not None:
        if isinstance(raw, float) and not raw.is_integer():
            raise BadValue(BAD_TYPE_MISMATCH, f"expected a whole number, got {raw!r}")
        number = int(raw)
        low, high = _INT_RANGES.get(data_type, _INT_RANGES["int64"])
        if not low <= number <= high:
            raise BadValue(BAD_OUT_OF_RANGE, f"{number} does not fit {data_type}")
        if bit is not None:
            return float((number >> bit) & 1)
        return float(number)
    try:
        value = float(raw)
    except OverflowError as err:
        raise BadValue(BAD_OUT_OF_RANGE, "the number is too large") from err
    if not math.isfinite(value) or (data_type == "float32" and abs(value) > _FLOAT32_MAX):
        raise BadValue(BAD_OUT_OF_RANGE, f"{value!r} does not fit {data_type}")
    return value


def _kind(raw: object) -> str:
    if isinstance(raw, dict):
        return "an object"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, bool):
        return "a boolean"
    return type(raw).__name__


def parse_timestamp(raw: object, fmt: str) -> int:
    """A JSON timestamp as UTC nanoseconds (see ``MqttTagConfig.timestamp_format``).

    Raises:
        BadValue: not a timestamp in that format, or outside 1678–2262.
    """
    if isinstance(raw, str) and fmt in {"auto", "iso8601"}:
        try:
            stamp = dt.datetime.fromisoformat(raw)
        except ValueError as err:
            raise BadValue(BAD_TYPE_MISMATCH, f"timestamp {raw[:40]!r} is not ISO 8601") from err
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        ns = (stamp - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    elif isinstance(raw, int | float) and not isinstance(raw, bool) and fmt != "iso8601":
        if isinstance(raw, float) and not math.isfinite(raw):
            raise BadValue(BAD_OUT_OF_RANGE, "the timestamp is not finite")
        unit = fmt if fmt != "auto" else _epoch_unit(abs(raw))
        scaled = raw * {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
        if isinstance(scaled, float) and not abs(scaled) < 2**63:
            raise BadValue(BAD_OUT_OF_RANGE, "the timestamp is outside 1678–2262")
        ns = round(scaled)
    else:
        raise BadValue(BAD_TYPE_MISMATCH, f"timestamp is {_kind(raw)}, not {fmt}")
    if not -(2**63) <= ns < 2**63:
        raise BadValue(BAD_OUT_OF_RANGE, "the timestamp is outside 1678–2262")
    return int(ns)


def _epoch_unit(magnitude: float) -> str:
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


def topic_match(levels: tuple[str, ...], topic: list[str]) -> list[str] | None:
    """The levels the wildcards of a filter matched in ``topic``, or None if it does not match."""
    if topic and topic[0].startswith("$") and levels and levels[0] in {"+", "#"}:
        return None  # MQTT 4.7.2: wildcards at the first level do not match $-topics
    captures: list[str] = []
    for i, level in enumerate(levels):
        if level == "#":
            captures.append("/".join(topic[i:]))
            return captures
        if i >= len(topic):
            return None
        if level == "+":
            captures.append(topic[i])
        elif level != topic[i]:
            return None
    return captures if len(levels) == len(topic) else None


class Points:
    """Points gathered one at a time, turned into one columnar batch."""

    __slots__ = ("_idx", "_index", "_quality", "_texts", "_ts", "_values")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._idx: list[int] = []
        self._ts: list[int] = []
        self._values: list[float] = []
        self._quality: list[int] = []
        self._texts: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self._ts)

    def add(self, path: str, ts_ns: int, value: float | str | None, quality: int) -> None:
        """Add one point; a ``str`` value goes to the text column."""
        self._idx.append(self._index.setdefault(path, len(self._index)))
        self._ts.append(ts_ns)
        self._quality.append(quality)
        if isinstance(value, str):
            if self._texts is None:
                self._texts = [None] * (len(self._ts) - 1)
            self._texts.append(value)
            self._values.append(math.nan)
        else:
            self._values.append(math.nan if value is None else value)
            if self._texts is not None:
                self._texts.append(None)

    def batch(self) -> PointBatch:
        """The points so far as one batch."""
        return PointBatch.from_columns(
            list(self._index), self._idx, self._ts, self._values, self._quality, text=self._texts
        )


@dataclasses.dataclass(slots=True)
class _Route:
    """A configured tag, compiled."""

    tag: MqttTagConfig
    levels: tuple[str, ...]
    template: str
    templated: bool
    value_tokens: tuple[str, ...]
    ts_tokens: tuple[str, ...] | None


class JsonMapping:
    """From MQTT messages to points, per the configured tags (pure: no I/O).

    Args:
        config: the connector's configuration.
    """

    def __init__(self, config: MqttConnectorConfig) -> None:
        self._config = config
        self._routes: list[_Route] = []
        self._metas: dict[str, TagMeta] = {}
        self._specs: dict[str, TagSpec] = {}
        for tag in config.tags:
            template = tag.full_path(config.asset)
            route = _Route(
                tag=tag,
                levels=tuple(tag.topic.split("/")),
                template=template,
                templated=bool(PLACEHOLDER.search(template)),
                value_tokens=parse_pointer(tag.pointer),
                ts_tokens=None if tag.timestamp is None else parse_pointer(tag.timestamp),
            )
            self._routes.append(route)
            if not route.templated:
                self._metas[template] = tag_meta(tag, asset=config.asset)
                self._specs[template] = tag_spec(tag, config)
        self._static = len(self._metas)
        self._cache: dict[str, list[tuple[_Route, str]]] = {}
        self._problems: dict[str, str] = {}
        self._unroutable: set[tuple[int, str]] = set()
        self._full_logged = False
        self.new_tags: list[TagMeta] = []

    @property
    def filters(self) -> list[str]:
        """The distinct topic filters to subscribe to."""
        return list(dict.fromkeys(r.tag.topic for r in self._routes))

    def tags(self) -> list[TagMeta]:
        """Every tag known now: configured ones, and those wildcards created so far."""
        return list(self._metas.values())

    def specs(self) -> list[TagSpec]:
        """Scaling and deadband of every tag known now."""
        return list(self._specs.values())

    def decode(self, topic: str, payload: bytes, received_ns: int, out: Points) -> None:
        """Add the points of one message to ``out`` (new tags go to :attr:`new_tags`)."""
        routes = self._route(topic)
        if not routes:
            return
        document: object = None
        failure: BadValue | None = None
        if len(payload) > self._config.max_payload:
            failure = BadValue(
                Quality.BAD_DECODING_ERROR,
                f"payload of {len(payload)} bytes exceeds max_payload",
            )
        else:
            try:
                document = json.loads(payload, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as err:
                failure = BadValue(Quality.BAD_DECODING_ERROR, f"payload is not JSON: {err}")
        for route, path in routes:
            ts = received_ns
            try:
                if failure is not None:
                    raise failure
                raw = resolve_pointer(document, route.value_tokens)
                value = coerce_value(raw, route.tag.data_type, bit=route.tag.bit)
            except BadValue as bad:
                self._transition(path, bad.reason, topic)
                out.add(path, ts, None, bad.quality)
                continue
            quality: int = Quality.GOOD
            if route.ts_tokens is not None:
                try:
                    ts = parse_timestamp(
                        resolve_pointer(document, route.ts_tokens), route.tag.timestamp_format
                    )
                except BadValue as bad:
                    quality = Quality.UNCERTAIN
                    self._transition(path, f"{bad.reason}; using the receive time", topic)
                else:
                    self._transition(path, None, topic)
            else:
                self._transition(path, None, topic)
            out.add(path, ts, value, quality)

    # --------------------------------------------------------------- internals
    def _route(self, topic: str) -> list[tuple[_Route, str]]:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        levels = topic.split("/")
        found: list[tuple[_Route, str]] = []
        for i, route in enumerate(self._routes):
            captures = topic_match(route.levels, levels)
            if captures is None:
                continue
            path = route.template
            if route.templated:
                path = _fill(path, captures)
                if not self._discover(i, route, path, topic):
                    continue
            found.append((route, path))
        if len(self._cache) >= _ROUTE_CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def _discover(self, i: int, route: _Route, path: str, topic: str) -> bool:
        if path in self._metas:
            return True
        try:
            validate_path(path)
        except ValueError as err:
            if (i, topic) not in self._unroutable and len(self._unroutable) < 1000:
                self._unroutable.add((i, topic))
                logger.warning(
                    "%s: topic %r gives no valid path for tag %s: %s",
                    self._config.name,
                    topic,
                    route.tag.name,
                    err,
                )
            return False
        if len(self._metas) - self._static >= self._config.max_tags:
            if not self._full_logged:
                self._full_logged = True
                logger.warning(
                    "%s: max_tags (%d) reached; ignoring new topics such as %r",
                    self._config.name,
                    self._config.max_tags,
                    topic,
                )
            return False
        meta = dataclasses.replace(tag_meta(route.tag, asset=self._config.asset), path=path)
        self._metas[path] = meta
        self._specs[path] = dataclasses.replace(tag_spec(route.tag, self._config), path=path)
        self.new_tags.append(meta)
        return True

    def _transition(self, path: str, reason: str | None, topic: str) -> None:
        before = self._problems.get(path)
        if reason == before:
            return
        if reason is None:
            del self._problems[path]
            logger.info("%s: %s recovered (topic %s)", self._config.name, path, topic)
        else:
            self._problems[path] = reason
            logger.warning("%s: %s is Bad: %s (topic %s)", self._config.name, path, reason, topic)


def _fill(template: str, captures: list[str]) -> str:
    def level(match: re.Match[str]) -> str:
        return captures[int(match.group(1)) - 1]

    return PLACEHOLDER.sub(level, template)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------- connector
class MqttConnector:
    """Subscribes to plain MQTT topics and maps their JSON payloads to tags.

    Messages without a timestamp field are stamped when they arrive, before they wait
    for their batch.

    Args:
        config: broker connection and tag mapping.
    """

    kind = "mqtt"

    def __init__(self, config: MqttConnectorConfig) -> None:
        self.name = config.name
        self.config = config
        self._mapping = JsonMapping(config)
        self._link = BrokerLink(config)

    @classmethod
    def from_config(cls, config: MqttConnectorConfig) -> Self:
        """Build the connector; reads the password once so a missing secret fails early.

        Raises:
            ConfigError: the password's environment variable or file is missing.
        """
        config.password()
        return cls(config)

    @property
    def dropped(self) -> int:
        """Messages dropped because the inbox was full."""
        return self._link.dropped

    def tags(self) -> Sequence[TagMeta]:
        """Configured tags, plus those wildcards created so far."""
        return self._mapping.tags()

    def specs(self) -> Sequence[TagSpec]:
        """Scaling and deadband of every tag known now (grows as wildcards match)."""
        return self._mapping.specs()

    async def connect(self) -> None:
        """Connect and subscribe to every configured topic filter.

        Raises:
            ConnectorUnavailable: the broker cannot be reached, refused the credentials or
                a subscription.
        """
        await self._link.connect()
        try:
            if self._mapping.filters:
                await self._link.subscribe(self._mapping.filters, qos=self.config.qos)
        except ConnectorUnavailable:
            await self._link.close()
            raise
        logger.info(
            "%s: subscribed to %d topic filter(s) at %s",
            self.name,
            len(self._mapping.filters),
            self._link.where,
        )

    async def subscribe(self) -> AsyncIterator[PointBatch | Sequence[TagMeta]]:
        """Yield new tags and batches of points until the connection is lost.

        Raises:
            ConnectorUnavailable: the broker connection was lost.
        """
        async for messages in self._link.batches():
            out = Points()
            for message, received_ns in messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                self._mapping.decode(message.topic.value, bytes(payload), received_ns, out)
            if self._mapping.new_tags:
                new, self._mapping.new_tags = self._mapping.new_tags, []
                yield new
            if len(out):
                yield out.batch()

    async def close(self) -> None:
        """Disconnect. Idempotent."""
        await self._link.close()
