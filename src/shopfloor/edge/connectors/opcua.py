"""OPC UA client connector: subscriptions (default) or polling, over asyncua.

OPC UA status codes are shopfloor's quality codes, so a value keeps the server's status
and its source timestamp exactly. In subscription mode every publish response the
server sends becomes one columnar :class:`~shopfloor.model.PointBatch`, built straight
from the decoded notification message: no object per value and no task per value, as
asyncua's handler API would cost. In poll mode each poll group is one Read request.

A session that is lost (socket closed, watchdog probe unanswered, subscription silent
past its keep-alive) ends :meth:`OpcUaConnector.subscribe` with
:class:`~shopfloor.errors.ConnectorUnavailable`; the agent then marks the tags Bad,
reconnects with backoff and subscribes again. asyncua's own reconnect is left off so
there is one retry loop, the agent's.

Values: numbers and booleans go to the value column, strings (and localized text) to
the text column. Arrays, structures, byte strings and other types cannot be a point:
their tag gets quality ``BadTypeMismatch`` and the reason is logged once per change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from shopfloor.config.connectors.base import ConnectorConfigBase
from shopfloor.config.connectors.opcua import OpcUaConnectorConfig, OpcUaTagConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.connectors.opcua_security import (
    close_client,
    node_id,
    open_client,
    translate,
)
from shopfloor.edge.mapping import TagSpec, tag_meta, tag_spec
from shopfloor.errors import ConnectorError, ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta, now_ns

__all__ = ["OpcUaConnector", "OpcUaPollConnector", "ValueDecoder"]

logger = logging.getLogger(__name__)

BAD_TYPE_MISMATCH = int(StatusCodes.BadTypeMismatch)
"""Quality of a value that cannot be a point (array, structure, byte string …)."""
BAD_NODE_ID_UNKNOWN = int(StatusCodes.BadNodeIdUnknown)


class _QuietPublishLoss(logging.Filter):
    """Demote asyncua's traceback for a publish request that died with its connection.

    asyncua logs it at ERROR with a stack trace; the agent already reports the lost
    connection once, as a warning, so the traceback only repeats it. Kept at DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConnectionError) and str(record.msg).startswith("Publish iteration"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_QuietPublishLoss())

_EPOCH: Any = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # Any: asyncua types stamps as its DateTime
_MICROSECOND = dt.timedelta(microseconds=1)
_NAN = math.nan


class ValueDecoder:
    """Turns OPC UA DataValues into the columns of one batch.

    Keeps, per tag, why its values cannot be read, so the reason is logged once when
    it starts and once when it ends, not with every value.

    Args:
        connector: name used in log lines.
        paths: the ISA-95 path of each tag; a tag's index is its client handle.
        bits: per tag, the bit to extract from an integer value, or None.
    """

    def __init__(
        self, connector: str, paths: Sequence[str], *, bits: Sequence[int | None] = ()
    ) -> None:
        self._connector = connector
        self._paths = tuple(paths)
        self._bits = {i: b for i, b in enumerate(bits) if b is not None}
        self._bad: dict[int, str] = {}
        self._unknown_handles = False
        self._reset()

    def _reset(self) -> None:
        self._index: list[int] = []
        self._ts: list[int] = []
        self._value: list[float] = []
        self._quality: list[int] = []
        self._text: list[str | None] = []
        self._has_text = False

    def add(self, index: int, value: ua.DataValue | None, received_ns: int) -> None:
        """Append one value of tag ``index``; ``received_ns`` stands in for missing timestamps."""
        if not 0 <= index < len(self._paths):
            if not self._unknown_handles:
                logger.warning("%s: notification for unknown handle %s", self._connector, index)
                self._unknown_handles = True
            return
        if value is None:
            self._append(index, received_ns, _NAN, int(Quality.BAD), None)
            return
        stamp = value.SourceTimestamp or value.ServerTimestamp
        ts = received_ns if stamp is None else (stamp - _EPOCH) // _MICROSECOND * 1000
        status = value.StatusCode.value if value.StatusCode is not None else 0
        variant = value.Value
        raw: Any = None if variant is None else variant.Value
        kind = type(raw)
        text: str | None = None
        if (kind is float or kind is int) and index not in self._bits:
            number = float(raw)
        elif kind is bool:
            number = 1.0 if raw else 0.0
        elif kind is str:
            number, text = _NAN, raw
        else:
            number, text, problem = self._slow(index, raw, variant)
            if problem is not None:
                if status & 0x80000000 == 0:  # else the server's Bad status says it all
                    status = BAD_TYPE_MISMATCH if raw is not None else int(Quality.BAD)
                    self._mark_bad(index, problem)
                self._append(index, ts, number, status, None)
                return
        if self._bad and index in self._bad:
            self._mark_good(index)
        self._append(index, ts, number, status, text)

    def _slow(
        self, index: int, raw: Any, variant: ua.Variant | None
    ) -> tuple[float, str | None, str | None]:
        """Rare value types: (number, text, problem); a problem makes the point Bad."""
        if raw is None:
            return _NAN, None, "the server sent no value (null)"
        if isinstance(raw, list) or (variant is not None and variant.is_array):
            return _NAN, None, "arrays cannot be stored as a point"
        bit = self._bits.get(index)
        if isinstance(raw, int) and not isinstance(raw, bool):  # IntEnum values, bit tags
            return (float((raw >> bit) & 1) if bit is not None else float(raw)), None, None
        if bit is not None:
            return _NAN, None, f"bit {bit} of a {type(raw).__name__} value"
        if isinstance(raw, float):
            return float(raw), None, None
        if isinstance(raw, ua.LocalizedText):
            return _NAN, raw.Text or "", None
        name = variant.VariantType.name if variant is not None else type(raw).__name__
        return _NAN, None, f"values of type {name} cannot be stored as a point"

    def _mark_bad(self, index: int, reason: str) -> None:
        if self._bad.get(index) != reason:
            self._bad[index] = reason
            logger.warning(
                "%s: tag %s: %s; its quality is Bad", self._connector, self._paths[index], reason
            )

    def _mark_good(self, index: int) -> None:
        del self._bad[index]
        logger.info("%s: tag %s: values readable again", self._connector, self._paths[index])

    def _append(self, index: int, ts: int, number: float, status: int, text: str | None) -> None:
        self._index.append(index)
        self._ts.append(ts)
        self._value.append(number)
        self._quality.append(status)
        self._text.append(text)
        if text is not None:
            self._has_text = True

    def add_status(self, indices: Sequence[int], status: int, *, ts_ns: int) -> None:
        """Append a point of ``status`` and no value for each of ``indices``."""
        for i in indices:
            self._append(i, ts_ns, _NAN, status, None)

    def __len__(self) -> int:
        return len(self._index)

    def take(self) -> PointBatch:
        """The points added since the last call, as one batch of only the tags it speaks of."""
        if not self._index:
            return PointBatch.empty()
        unique, inverse = np.unique(np.asarray(self._index, dtype=np.int32), return_inverse=True)
        paths = self._paths
        batch = PointBatch(
            tags=tuple(paths[i] for i in unique.tolist()),
            tag_index=inverse.astype(np.int32, copy=False).reshape(-1),
            ts=np.asarray(self._ts, dtype=np.int64),
            value=np.asarray(self._value, dtype=np.float64),
            quality=np.asarray(self._quality, dtype=np.uint32),
            text=pa.array(self._text, type=pa.string()) if self._has_text else None,
        )
        self._reset()
        return batch


@dataclass(frozen=True, slots=True)
class _Lost:
    """Queued by callbacks when the session or subscription is gone."""

    reason: str


class _OpcUaBase:
    """Session handling and tag bookkeeping shared by both modes."""

    def __init__(self, config: OpcUaConnectorConfig) -> None:
        self.name = config.name
        self.kind = "opcua"
        self.config = config
        self._tags: tuple[OpcUaTagConfig, ...] = tuple(config.tags)
        self._paths = tuple(t.full_path(config.asset) for t in self._tags)
        self._addresses = tuple(t.address for t in self._tags)
        self._bits = tuple(t.bit for t in self._tags)
        self._client: Client | None = None
        self._nodes: list[ua.NodeId | None] = []
        self._unresolved_logged: set[str] = set()

    def tags(self) -> Sequence[TagMeta]:
        """Metadata of every configured tag."""
        return [tag_meta(t, asset=self.config.asset) for t in self._tags]

    def specs(self) -> Sequence[TagSpec]:
        """Scaling and deadband of every configured tag, for the sampler."""
        return [tag_spec(t, self.config) for t in self._tags]

    async def connect(self) -> None:
        """Open the session and resolve every tag's NodeId (``nsu=`` URIs to indexes).

        Raises:
            ConnectorUnavailable: the server does not answer.
            ConnectorError: the server is untrusted or refused the session.
        """
        await self.close()
        client = await open_client(self.config)
        try:
            self._nodes = await self._resolve(client)
        except (UaError, OSError, TimeoutError, ConnectionError) as err:
            await close_client(client)
            raise translate(err, self.config.endpoint) from err
        self._client = client

    async def _resolve(self, client: Client) -> list[ua.NodeId | None]:
        parsed = [ua.NodeId.from_string(a) for a in self._addresses]
        if not any(isinstance(p, ua.ExpandedNodeId) and p.NamespaceUri for p in parsed):
            return list(parsed)
        async with asyncio.timeout(self.config.timeout_s):
            namespaces = await client.get_namespace_array()
        nodes: list[ua.NodeId | None] = []
        for path, node in zip(self._paths, parsed, strict=True):
            uri = node.NamespaceUri if isinstance(node, ua.ExpandedNodeId) else None
            if not uri:
                nodes.append(node)
            elif uri in namespaces:
                nodes.append(node_id(node.Identifier, namespaces.index(uri), node.NodeIdType))
            else:
                if uri not in self._unresolved_logged:
                    self._unresolved_logged.add(uri)
                    logger.warning(
                        "%s: the server has no namespace %s (tag %s and others); "
                        "those tags are Bad",
                        self.name,
                        uri,
                        path,
                    )
                nodes.append(None)
        return nodes

    def _require_client(self) -> Client:
        if self._client is None:
            raise ConnectorUnavailable(f"{self.config.endpoint}: not connected")
        return self._client

    async def close(self) -> None:
        """End the session (deleting its subscriptions on the server). Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost_callback = None
            await close_client(client, timeout_s=self.config.timeout_s)


class OpcUaConnector(_OpcUaBase):
    """Subscribes to the configured variables; the server pushes changes.

    Build it with :meth:`from_config`, which returns an :class:`OpcUaPollConnector`
    instead when the section says ``mode = "poll"``.
    """

    def __init__(self, config: OpcUaConnectorConfig) -> None:
        super().__init__(config)
        self._queue: asyncio.Queue[PointBatch | _Lost] | None = None
        self._decoder = ValueDecoder(self.name, self._paths, bits=self._bits)
        self._last_publish = 0.0
        self.dropped_batches = 0
        """Batches dropped because the consumer fell behind (``max_pending_batches``)."""

    @classmethod
    def from_config(cls, config: ConnectorConfigBase) -> OpcUaConnector | OpcUaPollConnector:
        """Build the connector a ``kind = "opcua"`` section describes."""
        if not isinstance(config, OpcUaConnectorConfig):
            raise TypeError(f"expected an OpcUaConnectorConfig, got {type(config).__name__}")
        if config.mode == "poll":
            return OpcUaPollConnector(config)
        return cls(config)

    async def subscribe(self) -> AsyncIterator[PointBatch | Sequence[TagMeta]]:
        """Yield one batch per publish response (more when the consumer lags).

        Raises:
            ConnectorUnavailable: the session or the subscription is lost.
        """
        client = self._require_client()
        cfg = self.config
        queue: asyncio.Queue[PointBatch | _Lost] = asyncio.Queue(cfg.max_pending_batches)
        self._queue = queue
        client.connection_lost_callback = self._connection_lost
        try:
            revised = await self._create_subscription(client)
            stale_s = (
                revised.RevisedPublishingInterval / 1000 * revised.RevisedMaxKeepAliveCount * 1.5
                + cfg.timeout_s
            )
            self._last_publish = time.monotonic()
            rejected = await self._create_items(client, revised.SubscriptionId)
        except (UaError, OSError, TimeoutError, ConnectionError) as err:
            self._queue = None
            raise translate(err, cfg.endpoint) from err
        if len(rejected):
            yield rejected
        try:
            while True:
                remaining = self._last_publish + stale_s - time.monotonic()
                if remaining <= 0:
                    raise ConnectorUnavailable(
                        f"{cfg.endpoint}: no publish response for {stale_s:.1f} s"
                    )
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that races with the queue, and the agent could not stop us
                    async with asyncio.timeout(remaining):
                        item = await queue.get()
                except TimeoutError:
                    continue
                if isinstance(item, _Lost):
                    raise ConnectorUnavailable(f"{cfg.endpoint}: {item.reason}")
                batches = [item]
                lost: _Lost | None = None
                while not queue.empty() and len(batches) < 64:
                    more = queue.get_nowait()
                    if isinstance(more, _Lost):
                        lost = more
                        break
                    batches.append(more)
                yield batches[0] if len(batches) == 1 else PointBatch.concat(batches)
                if lost is not None:
                    raise ConnectorUnavailable(f"{cfg.endpoint}: {lost.reason}")
        finally:
            if self._queue is queue:
                self._queue = None

    async def _create_subscription(self, client: Client) -> ua.CreateSubscriptionResult:
        cfg = self.config
        publishing_ms = cfg.publishing_interval_s * 1000
        keepalive = max(1, round(cfg.keepalive_s / max(cfg.publishing_interval_s, 0.001)))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = publishing_ms
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = max(
            3 * keepalive, math.ceil(cfg.session_timeout_s * 1000 / max(publishing_ms, 1))
        )
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        async with asyncio.timeout(cfg.timeout_s):
            return await client.uaclient.create_subscription(params, self._on_publish)

    async def _create_items(self, client: Client, subscription_id: int) -> PointBatch:
        """Create one monitored item per resolved tag; a batch of Bad points for the rest."""
        cfg = self.config
        sampling_ms = cfg.sampling_interval_s * 1000
        requests: list[ua.MonitoredItemCreateRequest] = []
        handles: list[int] = []
        decoder = ValueDecoder(self.name, self._paths)
        stamp = now_ns()
        decoder.add_status(
            [i for i, n in enumerate(self._nodes) if n is None], BAD_NODE_ID_UNKNOWN, ts_ns=stamp
        )
        for i, (tag, node) in enumerate(zip(self._tags, self._nodes, strict=True)):
            if node is None:
                continue
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = i
            parameters.SamplingInterval = sampling_ms
            parameters.QueueSize = cfg.queue_size
            parameters.DiscardOldest = True
            deadband = tag.deadband_abs() / abs(tag.scale) if tag.scale else 0.0
            if cfg.server_deadband and deadband > 0:
                parameters.Filter = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValue,
                    DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=deadband,
                )
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.Value)
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = parameters
            requests.append(request)
            handles.append(i)
        step = cfg.max_nodes_per_request
        refused: dict[str, list[int]] = {}
        for start in range(0, len(requests), step):
            params = ua.CreateMonitoredItemsParameters()
            params.SubscriptionId = subscription_id
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.ItemsToCreate = requests[start : start + step]
            async with asyncio.timeout(cfg.timeout_s * 2):
                results = await client.uaclient.create_monitored_items(params)
            for handle, result in zip(handles[start : start + step], results, strict=True):
                if not result.StatusCode.is_good():
                    decoder.add_status([handle], result.StatusCode.value, ts_ns=stamp)
                    refused.setdefault(result.StatusCode.name, []).append(handle)
        for status, indices in refused.items():
            logger.warning(
                "%s: the server refused %d monitored item(s) with %s, e.g. %s (%s)",
                self.name,
                len(indices),
                status,
                self._paths[indices[0]],
                self._addresses[indices[0]],
            )
        return decoder.take()

    # ------------------------------------------------------------ callbacks
    def _on_publish(self, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for every publish response, keep-alives too."""
        self._last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return
        decoder = self._decoder
        received = now_ns()
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                add = decoder.add
                for item in notification.MonitoredItems:
                    add(item.ClientHandle, item.Value, received)
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and status.is_bad():
                    self._put(_Lost(f"subscription ended with {status.name}"))
        if len(decoder):
            self._put(decoder.take())

    async def _connection_lost(self, err: Exception) -> None:
        self._put(_Lost(f"connection lost ({err or type(err).__name__})"))

    def _put(self, item: PointBatch | _Lost) -> None:
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        dropped = queue.get_nowait()  # drop-oldest: the newest values matter most
        if isinstance(dropped, _Lost):
            item = dropped
        elif self.dropped_batches == 0:
            logger.warning(
                "%s: processing falls behind the server; dropping the oldest batches "
                "(max_pending_batches = %d)",
                self.name,
                self.config.max_pending_batches,
            )
        if isinstance(dropped, PointBatch):
            self.dropped_batches += 1
        queue.put_nowait(item)


class OpcUaPollConnector(_OpcUaBase):
    """Reads the configured variables on a schedule, one Read request per poll group."""

    def __init__(self, config: OpcUaConnectorConfig) -> None:
        super().__init__(config)
        by_period: dict[float, list[int]] = {}
        for i, tag in enumerate(self._tags):
            period = parse_duration_s(tag.period) if tag.period else config.period_s
            by_period.setdefault(period, []).append(i)
        self._groups: dict[str, tuple[PollGroup, tuple[int, ...]]] = {}
        for period, indices in sorted(by_period.items()):
            group = PollGroup(
                name=f"{period:g}s",
                period_s=period,
                paths=tuple(self._paths[i] for i in indices),
            )
            self._groups[group.name] = (group, tuple(indices))
        self._decoder = ValueDecoder(self.name, self._paths, bits=self._bits)

    @classmethod
    def from_config(cls, config: ConnectorConfigBase) -> OpcUaConnector | OpcUaPollConnector:
        """Same as :meth:`OpcUaConnector.from_config`."""
        return OpcUaConnector.from_config(config)

    def groups(self) -> Sequence[PollGroup]:
        """One group per distinct poll period."""
        return [group for group, _ in self._groups.values()]

    async def read(self, group: PollGroup) -> PointBatch:
        """Read every tag of ``group`` (split into requests of ``max_nodes_per_request``).

        Raises:
            ConnectorUnavailable: the session is lost or the server does not answer.
        """
        client = self._require_client()
        try:
            _, indices = self._groups[group.name]
        except KeyError:
            raise ConnectorError(f"{self.name}: unknown poll group {group.name!r}") from None
        cfg = self.config
        nodes = self._nodes
        wanted = [i for i in indices if nodes[i] is not None]
        step = cfg.max_nodes_per_request
        chunks = [wanted[s : s + step] for s in range(0, len(wanted), step)]
        try:
            async with asyncio.timeout(cfg.timeout_s):
                answers = await asyncio.gather(*(self._read(client, chunk) for chunk in chunks))
        except (UaError, OSError, TimeoutError, ConnectionError) as err:
            raise ConnectorUnavailable(str(translate(err, cfg.endpoint))) from err
        received = now_ns()
        decoder = self._decoder
        for chunk, values in zip(chunks, answers, strict=True):
            if len(values) != len(chunk):
                raise ConnectorUnavailable(
                    f"{cfg.endpoint}: asked for {len(chunk)} values, got {len(values)}"
                )
            for i, value in zip(chunk, values, strict=True):
                decoder.add(i, value, received)
        decoder.add_status(
            [i for i in indices if nodes[i] is None], BAD_NODE_ID_UNKNOWN, ts_ns=received
        )
        return decoder.take()

    async def _read(self, client: Client, chunk: list[int]) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        params.MaxAge = 0
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        nodes = self._nodes
        params.NodesToRead = [
            ua.ReadValueId(NodeId=nodes[i], AttributeId=AttributeIds.Value) for i in chunk
        ]
        return await client.uaclient.read(params)
