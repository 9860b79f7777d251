"""Sparkplug B host application: births, data, deaths, aliases, sequence gaps, STATE.

Edge nodes announce every metric in a birth certificate (NBIRTH for the node, DBIRTH per
device) with its name, type, an optional numeric alias and properties (units, ranges);
later DATA messages may name a metric by alias only. The host keeps that state per node:

* births register metrics, announce them as tags (units and engineering range from the
  ``engUnit``/``engLow``/``engHigh`` properties) and deliver their values;
* every message of a node but NDEATH carries a sequence number 0–255 that wraps; a gap
  (or data from a node whose birth the host never saw) means the host's picture is stale:
  it publishes a Rebirth NCMD (``Node Control/Rebirth`` = true) to that node and ignores
  its data until the new NBIRTH, asking again after ``rebirth_timeout``;
* NDEATH (whose ``bdSeq`` matches the node's current birth; a stale will is ignored) turns
  every metric of the node and its devices Bad (Bad_NotConnected) once; DDEATH does the
  same for one device;
* a metric under an unknown alias is ignored with a reason logged once, and a rebirth is
  requested, so nothing a node sends can stop the host;
* as a Sparkplug 3.0 primary host application it publishes the retained
  ``spBv1.0/STATE/<host_id>`` JSON ``{"online": true, "timestamp": …}`` and registers
  ``online: false`` with the same timestamp as its MQTT will.

:class:`SparkplugHost` is the pure state machine (messages in, points and commands out);
:class:`SparkplugConnector` connects it to a broker.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import aiomqtt

from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig, SparkplugTagConfig
from shopfloor.edge.connectors.mqtt import BAD_NO_DATA, BAD_TYPE_MISMATCH, BrokerLink, Points
from shopfloor.edge.mapping import TagSpec, tag_meta, tag_spec
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.model.tags import validate_path
from shopfloor.sparkplug import (
    BD_SEQ,
    NAMESPACE,
    REBIRTH,
    SCALAR_TYPES,
    MessageType,
    SparkplugDecodeError,
    SparkplugTopic,
    add_metric,
    as_point_value,
    decode_payload,
    metric_value,
    new_payload,
    parse_state,
    parse_topic,
    property_values,
    state_payload,
    state_topic,
    topic_for,
)
from shopfloor.sparkplug import DataType as SpType

logger = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
_MAX_MS = (2**63 - 1) // _NS_PER_MS
_CONTROL_PREFIXES = ("Node Control/", "Device Control/")
_UNSAFE = re.compile(r"[^\w.\-]+")
_TEXT_TYPES = {SpType.STRING, SpType.TEXT, SpType.UUID}
_FLOAT_TYPES = {SpType.FLOAT, SpType.DOUBLE}
_IGNITION_QUALITY = {192: Quality.GOOD, 500: Quality.UNCERTAIN_LAST_USABLE_VALUE}
"""The ``Quality`` metric property many nodes send (Ignition's codes): 192 good, 500 stale."""


@dataclass(frozen=True, slots=True)
class Rebirth:
    """A command for the connector: ask an edge node for new births."""

    group: str
    node: str


@dataclass(frozen=True, slots=True)
class RepublishState:
    """A command for the connector: our STATE was overwritten with offline; say online."""


Command = Rebirth | RepublishState


@dataclass(slots=True)
class _Msg:
    """One message being handled, and what it produces."""

    node: _Node
    parsed: SparkplugTopic
    message: Any
    received_ns: int
    out: Points
    commands: list[Command]


@dataclass(slots=True)
class _Metric:
    name: str
    datatype: int
    path: str | None  # None: not a tag (control metric, unsupported type, no valid path)


@dataclass(slots=True)
class _Device:
    metrics: dict[str, _Metric] = field(default_factory=dict)
    alive: bool = True


@dataclass(slots=True)
class _Node:
    group: str
    node: str
    born: bool = False
    dead: bool = False
    bd_seq: int | None = None
    seq: int = 0
    metrics: dict[str, _Metric] = field(default_factory=dict)
    aliases: dict[int, _Metric] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    rebirth_at: float | None = None
    logged: set[str] = field(default_factory=set)

    def paths(self, device: str | None = None) -> list[str]:
        """Tag paths of the node's own metrics and every device's, or of one device."""
        if device is not None:
            dev = self.devices.get(device)
            scopes = [dev.metrics] if dev is not None and dev.alive else []
        else:
            scopes = [self.metrics] + [d.metrics for d in self.devices.values() if d.alive]
        return [m.path for scope in scopes for m in scope.values() if m.path is not None]


def sanitize(text: str) -> str:
    """A name as path levels: lower case, ``/`` kept as level separator, runs of
    characters other than letters, digits, ``_``, ``.`` and ``-`` replaced by ``_``
    (letters of any script are kept), empty levels dropped."""
    levels = (_UNSAFE.sub("_", part.lower()).strip("_") for part in text.split("/"))
    return "/".join(level for level in levels if level)


class SparkplugHost:
    """The host application's state machine, without I/O.

    Args:
        config: the connector's configuration.
        monotonic: clock for rebirth throttling (injected by tests).
    """

    def __init__(
        self,
        config: SparkplugConnectorConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._monotonic = monotonic
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._explicit: dict[tuple[str, str, str | None, str], SparkplugTagConfig] = {
            (t.group, t.node, t.device, t.metric): t for t in config.tags
        }
        self._metas: dict[str, TagMeta] = {}
        self._specs: dict[str, TagSpec] = {}
        for tag in config.tags:
            meta = tag_meta(tag, asset=config.asset)
            self._metas[meta.path] = meta
            self._specs[meta.path] = tag_spec(tag, config)
        self._static = len(self._metas)
        self._problems: dict[str, str] = {}
        self._logged: set[str] = set()
        self.session_ms = 0
        self.new_tags: list[TagMeta] = []
        self.decode_errors = 0

    # ------------------------------------------------------------------ public
    def tags(self) -> list[TagMeta]:
        """Configured metrics and every metric born so far."""
        return list(self._metas.values())

    def specs(self) -> list[TagSpec]:
        """Scaling and deadband of every known metric (births add unscaled ones)."""
        return list(self._specs.values())

    def reset(self, *, session_ms: int) -> None:
        """Forget every node: a new broker session starts (births will be requested)."""
        self._nodes.clear()
        self.session_ms = session_ms

    def handle(self, topic: str, payload: bytes, received_ns: int, out: Points) -> list[Command]:
        """Process one message; add its points to ``out`` and return what to publish."""
        parsed = parse_topic(topic)
        if parsed is None:
            return []
        kind = parsed.message_type
        if kind is MessageType.STATE:
            return self._state(parsed, payload)
        if kind in (MessageType.NCMD, MessageType.DCMD):
            return []
        node = self._node(parsed)
        if node is None:
            return []
        try:
            message = decode_payload(payload)
        except SparkplugDecodeError as err:
            self.decode_errors += 1
            self._once(node, f"decode:{kind}", "undecodable message ignored: %s", err)
            return []
        msg = _Msg(node, parsed, message, received_ns, out, [])
        handler = {
            MessageType.NBIRTH: self._nbirth,
            MessageType.DBIRTH: self._dbirth,
            MessageType.NDATA: self._data,
            MessageType.DDATA: self._data,
            MessageType.DDEATH: self._ddeath,
            MessageType.NDEATH: self._ndeath,
        }[kind]
        handler(msg)
        return msg.commands

    # -------------------------------------------------------------- messages
    def _state(self, parsed: SparkplugTopic, payload: bytes) -> list[Command]:
        if parsed.node != self.config.state_host_id or not self.config.publish_state:
            return []
        state = parse_state(payload)
        if state is not None and not state[0] and state[1] >= self.session_ms:
            logger.warning("%s: our STATE was set offline while connected; republishing",
                           self.config.name)  # fmt: skip
            return [RepublishState()]
        return []

    def _nbirth(self, m: _Msg) -> None:
        node, message = m.node, m.message
        was_requested = node.rebirth_at is not None
        node.born = True
        node.dead = False
        node.seq = int(message.seq) % 256 if message.HasField("seq") else 0
        node.bd_seq = None
        node.metrics.clear()
        node.aliases.clear()
        node.devices.clear()
        node.rebirth_at = None
        node.logged.clear()
        for metric in message.metrics:
            if metric.name == BD_SEQ:
                try:
                    value = metric_value(metric, metric.datatype or SpType.INT64)
                    node.bd_seq = int(value) if isinstance(value, int) else None
                except SparkplugDecodeError:
                    node.bd_seq = None
                continue
            self._register(m, None, metric)
        logger.info(
            "%s: %s/%s born (bdSeq %s)%s",
            self.config.name,
            node.group,
            node.node,
            node.bd_seq,
            " after a rebirth request" if was_requested else "",
        )

    def _dbirth(self, m: _Msg) -> None:
        node, parsed, message = m.node, m.parsed, m.message
        if not self._in_sequence(m):
            return
        assert parsed.device is not None
        device = _Device()
        node.devices[parsed.device] = device
        for metric in message.metrics:
            self._register(m, parsed.device, metric)

    def _data(self, m: _Msg) -> None:
        node, parsed, message = m.node, m.parsed, m.message
        if not self._in_sequence(m):
            return
        scope = node.metrics
        if parsed.device is not None:
            device = node.devices.get(parsed.device)
            if device is None or not device.alive:
                self._rebirth(m, f"data from device {parsed.device} without DBIRTH")
                return
            scope = device.metrics
        for metric in message.metrics:
            known: _Metric | None
            if metric.HasField("alias"):
                known = node.aliases.get(int(metric.alias))
                what = f"alias {metric.alias}"
            else:
                known = scope.get(metric.name)
                what = f"metric {metric.name!r}"
            if known is None:
                self._once(node, f"unknown:{what}", "metric ignored: unknown %s", what)
                self._rebirth(m, f"unknown {what}", log=False)
                continue
            if known.path is not None:
                self._value(m, known, metric)

    def _ddeath(self, m: _Msg) -> None:
        node, parsed = m.node, m.parsed
        if not self._in_sequence(m):
            return
        assert parsed.device is not None
        device = node.devices.get(parsed.device)
        if device is None or not device.alive:
            return
        self._dead(m, node.paths(parsed.device))
        device.alive = False
        logger.info("%s: device %s/%s/%s died", self.config.name, *_ids(node), parsed.device)

    def _ndeath(self, m: _Msg) -> None:
        node, message = m.node, m.message
        bd_seq = None
        for metric in message.metrics:
            if metric.name == BD_SEQ:
                try:
                    value = metric_value(metric, metric.datatype or SpType.INT64)
                    bd_seq = int(value) if isinstance(value, int) else None
                except SparkplugDecodeError:
                    bd_seq = None
        if node.dead or not (node.born or node.metrics):
            return
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            logger.debug(
                "%s: stale NDEATH of %s/%s (bdSeq %s, born with %s) ignored",
                self.config.name,
                *_ids(node),
                bd_seq,
                node.bd_seq,
            )
            return
        self._dead(m, node.paths())
        node.born = False
        node.dead = True
        node.rebirth_at = None
        for device in node.devices.values():
            device.alive = False
        logger.warning("%s: edge node %s/%s died", self.config.name, *_ids(node))

    # --------------------------------------------------------------- helpers
    def _node(self, parsed: SparkplugTopic) -> _Node | None:
        key = (parsed.group, parsed.node)
        node = self._nodes.get(key)
        if node is None:
            if self.config.groups and parsed.group not in self.config.groups:
                return None
            if len(self._nodes) >= self.config.max_nodes:
                if "max_nodes" not in self._logged:
                    self._logged.add("max_nodes")
                    logger.warning(
                        "%s: max_nodes (%d) reached; ignoring %s/%s and further new nodes",
                        self.config.name,
                        self.config.max_nodes,
                        parsed.group,
                        parsed.node,
                    )
                return None
            node = self._nodes[key] = _Node(parsed.group, parsed.node)
        return node

    def _in_sequence(self, m: _Msg) -> bool:
        node, message = m.node, m.message
        if not node.born:
            self._rebirth(m, f"{m.parsed.message_type} before NBIRTH", level=logging.INFO)
            return False
        expected = (node.seq + 1) % 256
        got = int(message.seq) if message.HasField("seq") else None
        if got != expected:
            node.born = False
            self._rebirth(m, f"sequence gap: expected {expected}, got {got}")
            return False
        node.seq = expected
        return True

    def _rebirth(
        self, m: _Msg, reason: str, *, log: bool = True, level: int = logging.WARNING
    ) -> None:
        node = m.node
        now = self._monotonic()
        if node.rebirth_at is not None and now - node.rebirth_at < self.config.rebirth_timeout_s:
            return
        again = node.rebirth_at is not None
        node.rebirth_at = now
        if log:
            logger.log(
                level,
                "%s: %s/%s: %s; %s",
                self.config.name,
                *_ids(node),
                reason,
                "asking again for a rebirth" if again else "requesting a rebirth",
            )
        m.commands.append(Rebirth(node.group, node.node))

    def _register(self, m: _Msg, device: str | None, metric: Any) -> None:
        node = m.node
        name = str(metric.name)
        if not metric.HasField("name") or not name:
            self._once(node, "nameless", "birth metric without a name ignored%s", "")
            return
        scope = node.metrics if device is None else node.devices[device].metrics
        path = self._metric_path(node, device, metric)
        known = _Metric(name=name, datatype=int(metric.datatype), path=path)
        scope[name] = known
        if metric.HasField("alias"):
            node.aliases[int(metric.alias)] = known
        if path is not None:
            self._value(m, known, metric)

    def _metric_path(self, node: _Node, device: str | None, metric: Any) -> str | None:
        name = str(metric.name)
        if name.startswith(_CONTROL_PREFIXES) or metric.is_transient:
            return None
        try:
            datatype = SpType(metric.datatype)
        except ValueError:
            datatype = SpType.UNKNOWN
        if datatype not in SCALAR_TYPES or datatype in (SpType.BYTES, SpType.FILE):
            self._once_global(
                f"type:{node.group}/{node.node}/{device}/{name}",
                "%s: metric %r of %s is %s; not collected",
                name,
                "/".join(_ids(node) + ((device,) if device else ())),
                datatype.name,
            )
            return None
        explicit = self._explicit.get((node.group, node.node, device, name))
        if explicit is not None:
            return explicit.full_path(self.config.asset)
        path = self._derived_path(node, device, name)
        if path is None:
            return None
        if path not in self._metas and len(self._metas) - self._static >= self.config.max_tags:
            self._once_global(
                "max_tags", "%s: max_tags (%d) reached; ignoring %s", self.config.max_tags, path
            )
            return None
        self._announce(path, metric, datatype)
        return path

    def _derived_path(self, node: _Node, device: str | None, name: str) -> str | None:
        cfg = self.config
        clean = sanitize if cfg.sanitize else (lambda s: s)
        key = f"{node.group}/{node.node}" + (f"/{device}" if device is not None else "")
        if not clean(name):
            self._once_global(f"path:{key}/{name}", "%s: metric %r of %s has no usable name",
                              name, key)  # fmt: skip
            return None
        if key in cfg.devices:
            path = f"{cfg.devices[key]}/{clean(name)}"
        elif cfg.only_configured:
            return None
        else:
            path = cfg.path_template.format(
                asset=cfg.asset,
                group=clean(node.group),
                node=clean(node.node),
                device=clean(device) if device is not None else "",
                metric=clean(name),
            )
            path = "/".join(level for level in path.split("/") if level)
        try:
            return validate_path(path)
        except ValueError as err:
            self._once_global(f"path:{key}/{name}", "%s: metric %r of %s: %s", name, key, err)
            return None

    def _announce(self, path: str, metric: Any, datatype: SpType) -> None:
        props = (
            _lower_keys(property_values(metric.properties)) if metric.HasField("properties") else {}
        )
        if datatype is SpType.BOOLEAN:
            data_type = DataType.BOOL
        elif datatype in _TEXT_TYPES:
            data_type = DataType.STRING
        elif datatype in _FLOAT_TYPES:
            data_type = DataType.FLOAT
        else:
            data_type = DataType.INT
        meta = TagMeta(
            path=path,
            unit=_text(props, "engunit", "engunits", "unit", "units"),
            description=_text(props, "documentation", "description", "tooltip"),
            data_type=data_type,
            eng_low=_number(props, "englow", "eng_low"),
            eng_high=_number(props, "enghigh", "eng_high"),
        )
        if self._metas.get(path) != meta:
            self._metas[path] = meta
            self._specs[path] = TagSpec(
                path=path, max_silence_ns=round(self.config.max_silence_s * 1e9)
            )
            self.new_tags.append(meta)

    def _value(self, m: _Msg, known: _Metric, metric: Any) -> None:
        assert known.path is not None
        message, received_ns, out = m.message, m.received_ns, m.out
        if metric.is_transient:
            return
        ts = received_ns
        stamp = metric.timestamp if metric.HasField("timestamp") else message.timestamp
        if (metric.HasField("timestamp") or message.HasField("timestamp")) and stamp <= _MAX_MS:
            ts = int(stamp) * _NS_PER_MS
        try:
            raw = metric_value(metric, known.datatype)
        except SparkplugDecodeError as err:
            self._transition(known.path, str(err))
            out.add(known.path, ts, None, BAD_TYPE_MISMATCH)
            return
        quality: int = Quality.GOOD
        if metric.HasField("properties"):
            props = _lower_keys(property_values(metric.properties))
            code = props.get("quality")
            if isinstance(code, int) and not isinstance(code, bool):
                quality = _IGNITION_QUALITY.get(code, Quality.BAD)
        if raw is None:
            out.add(known.path, ts, None, BAD_NO_DATA if quality == Quality.GOOD else quality)
            self._transition(known.path, None)
            return
        self._transition(known.path, None)
        out.add(known.path, ts, as_point_value(raw), quality)

    def _dead(self, m: _Msg, paths: list[str]) -> None:
        for path in paths:
            m.out.add(path, m.received_ns, None, Quality.BAD_NOT_CONNECTED)

    def _transition(self, path: str, reason: str | None) -> None:
        if self._problems.get(path) == reason:
            return
        if reason is None:
            del self._problems[path]
            logger.info("%s: %s recovered", self.config.name, path)
        else:
            self._problems[path] = reason
            logger.warning("%s: %s is Bad: %s", self.config.name, path, reason)

    def _once(self, node: _Node, key: str, message: str, detail: object) -> None:
        """Log ``message`` once per node and birth (a rebirth starts afresh)."""
        if key in node.logged or len(node.logged) > 1000:
            return
        node.logged.add(key)
        logger.warning("%s: %s/%s: %s", self.config.name, node.group, node.node, message % detail)

    def _once_global(self, key: str, message: str, *args: object) -> None:
        if key in self._logged or len(self._logged) > 10_000:
            return
        self._logged.add(key)
        logger.warning(message, self.config.name, *args)


def _ids(node: _Node) -> tuple[str, str]:
    return node.group, node.node


def _lower_keys(props: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in props.items()}


def _text(props: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = props.get(key)
        if isinstance(value, str):
            return value
    return ""


def _number(props: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = props.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


class SparkplugConnector:
    """A Sparkplug B host application as a subscribable connector.

    Args:
        config: broker connection, host id and path mapping.
    """

    kind = "sparkplug"

    def __init__(self, config: SparkplugConnectorConfig) -> None:
        self.name = config.name
        self.config = config
        self.host = SparkplugHost(config)
        self._link = BrokerLink(config)
        self._session_ms = 0
        self.rebirths_sent = 0

    @classmethod
    def from_config(cls, config: SparkplugConnectorConfig) -> Self:
        """Build the connector; reads the password once so a missing secret fails early.

        Raises:
            ConfigError: the password's environment variable or file is missing.
        """
        config.password()
        return cls(config)

    def tags(self) -> Sequence[TagMeta]:
        """Configured metrics, plus every metric born so far."""
        return self.host.tags()

    def specs(self) -> Sequence[TagSpec]:
        """Scaling and deadband of every known metric."""
        return self.host.specs()

    async def connect(self) -> None:
        """Connect with the STATE will, say online, and subscribe to the groups.

        Raises:
            ConnectorUnavailable: the broker cannot be reached or refused us.
        """
        cfg = self.config
        self._session_ms = time.time_ns() // _NS_PER_MS
        will = None
        if cfg.publish_state:
            will = aiomqtt.Will(
                state_topic(cfg.state_host_id),
                state_payload(online=False, timestamp_ms=self._session_ms),
                qos=1,
                retain=True,
            )
        await self._link.connect(will=will)
        try:
            self.host.reset(session_ms=self._session_ms)
            if cfg.publish_state:
                await self._link.subscribe([state_topic(cfg.state_host_id)], qos=1)
                await self._publish_state(online=True)
            filters = [f"{NAMESPACE}/{g}/#" for g in cfg.groups] or [f"{NAMESPACE}/#"]
            await self._link.subscribe(filters, qos=cfg.qos)
        except ConnectorUnavailable:
            await self._link.close()
            raise
        logger.info(
            "%s: Sparkplug host %s online at %s", self.name, cfg.state_host_id, self._link.where
        )

    async def subscribe(self) -> AsyncIterator[PointBatch | Sequence[TagMeta]]:
        """Yield new tags and batches of points until the connection is lost.

        Raises:
            ConnectorUnavailable: the broker connection was lost.
        """
        async for messages in self._link.batches():
            out = Points()
            commands: list[Command] = []
            for message, received_ns in messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                commands += self.host.handle(message.topic.value, bytes(payload), received_ns, out)
            for command in dict.fromkeys(commands):
                await self._execute(command)
            if self.host.new_tags:
                new, self.host.new_tags = self.host.new_tags, []
                yield new
            if len(out):
                yield out.batch()

    async def close(self) -> None:
        """Say offline (retained STATE) and disconnect. Idempotent."""
        if self._link.client is not None and self.config.publish_state:
            try:
                await self._publish_state(online=False)
            except ConnectorUnavailable as err:
                logger.debug("%s: could not publish offline STATE: %s", self.name, err)
        await self._link.close()

    async def _execute(self, command: Command) -> None:
        if isinstance(command, RepublishState):
            await self._publish_state(online=True)
            return
        payload = new_payload(timestamp_ms=time.time_ns() // _NS_PER_MS)
        add_metric(payload, name=REBIRTH, datatype=SpType.BOOLEAN, value=True)
        topic = topic_for(command.group, MessageType.NCMD, command.node)
        await self._link.publish(topic, payload.SerializeToString(), qos=0)
        self.rebirths_sent += 1

    async def _publish_state(self, *, online: bool) -> None:
        await self._link.publish(
            state_topic(self.config.state_host_id),
            state_payload(online=online, timestamp_ms=self._session_ms),
            qos=1,
            retain=True,
        )


__all__ = [
    "Command",
    "Rebirth",
    "RepublishState",
    "SparkplugConnector",
    "SparkplugHost",
    "sanitize",
]
