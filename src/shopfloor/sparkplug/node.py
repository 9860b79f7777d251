"""A Sparkplug B edge node: births, report-by-exception data, death, rebirth on request.

One edge node (``spBv1.0/<group>/…/<node>``) with devices, each with metrics. On every
connection the node registers an NDEATH will with a new ``bdSeq``, then publishes NBIRTH
(``bdSeq``, ``Node Control/Rebirth``) and a DBIRTH per device announcing each metric with
a numeric alias, its type and the properties ``engUnit``, ``engLow``, ``engHigh`` and
``Documentation``. :meth:`EdgeNode.publish_changes` sends, per device, a DDATA with only
the metrics whose value or quality changed since they were last sent, by alias, each with
its own timestamp. Sequence numbers run 0–255 across all messages of the node and wrap.
A Rebirth NCMD makes it publish every birth again; stopping publishes NDEATH. Given a
primary host application (Sparkplug 3.0), the node publishes its births only once that
host's retained STATE says online, and again each time the host comes online anew.

A Bad value is sent as a null value with the ``Quality`` property 0 (bad).

What feeds the values is the subclass's business: the simulated plant
(:mod:`shopfloor.simulator.serve.sparkplug`) or the platform's live values
(:mod:`shopfloor.server.sparkplug_node`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import numpy as np
import numpy.typing as npt

from shopfloor.model import DataType, Quality, TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.supervisor import Supervisor
from shopfloor.sparkplug.codec import (
    BD_SEQ,
    NAMESPACE,
    REBIRTH,
    MessageType,
    ScalarValue,
    SparkplugDecodeError,
    add_metric,
    decode_payload,
    metric_value,
    new_payload,
    parse_state,
    state_topic,
    topic_for,
)
from shopfloor.sparkplug.schema import DataType as SpType

__all__ = ["SP_TYPES", "EdgeNode", "MetricEntry", "wire_value"]

logger = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
SP_TYPES = {
    DataType.FLOAT: SpType.DOUBLE,
    DataType.INT: SpType.INT64,
    DataType.BOOL: SpType.BOOLEAN,
    DataType.STRING: SpType.STRING,
}
"""The Sparkplug type each tag data type is sent as."""


@dataclass(frozen=True, slots=True)
class MetricEntry:
    """One tag as a Sparkplug metric.

    Attributes:
        meta: the tag's metadata (its path is the platform's path).
        device: the device id.
        name: the metric name (the tag's own name).
        alias: the metric's alias, unique within the node.
        datatype: the Sparkplug type it is sent as.
        position: the metric's index in the node's value arrays.
    """

    meta: TagMeta
    device: str
    name: str
    alias: int
    datatype: SpType
    position: int


def wire_value(entry: MetricEntry, value: float) -> ScalarValue:
    """A value as its metric's type carries it (None for a missing one)."""
    if math.isnan(value):
        return None
    if entry.datatype is SpType.INT64:
        return round(value)
    if entry.datatype is SpType.BOOLEAN:
        return bool(value)
    return float(value)


class EdgeNode:
    """A Sparkplug B edge node publishing ``entries``' values to an MQTT broker.

    Args:
        entries: the metrics, by device; ``position`` indexes the value arrays.
        host: the broker's host.
        port: the broker's port.
        group_id: Sparkplug group id.
        node_id: edge node id.
        username: broker user, if it requires one.
        password: broker password.
        tls_context: TLS towards the broker, if wanted.
        primary_host_id: Sparkplug 3.0 primary host application to wait for: the node
            publishes its births only once ``spBv1.0/STATE/<id>`` says online, and again
            whenever that host comes online anew; None publishes at once.
        clock: wall clock for message timestamps (injected by tests).
        keepalive_s: MQTT keep-alive; the broker publishes the NDEATH will after 1.5×.
    """

    def __init__(
        self,
        entries: Sequence[MetricEntry],
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        group_id: str = "shopfloor",
        node_id: str = "plant-sim",
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        primary_host_id: str | None = None,
        clock: Clock | None = None,
        keepalive_s: int = 10,
    ) -> None:
        self.host = host
        self._keepalive_s = keepalive_s
        self.port = port
        self.group_id = group_id
        self.node_id = node_id
        self._username = username
        self._password = password
        self._tls = tls_context
        self.primary_host_id = primary_host_id
        self._host_online_ms: int | None = None
        self._born = False
        self._clock = clock or SystemClock()
        self._seq = 0
        self._bd_seq = 0
        self._session_bd_seq = 0
        self._lock = asyncio.Lock()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._tick: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.births = 0
        self.rebirth_requests = 0
        self.set_entries(entries)

    def set_entries(self, entries: Sequence[MetricEntry]) -> None:
        """Replace the metrics (their values start unknown); call :meth:`rebirth` after,
        as Sparkplug requires a birth to name every metric."""
        self.entries = list(entries)
        self.devices = list(dict.fromkeys(e.device for e in self.entries))
        n = max((e.position for e in self.entries), default=-1) + 1
        self._value = np.full(n, np.nan)
        self._quality = np.zeros(n, dtype=np.uint32)
        self._ts = np.zeros(n, dtype=np.int64)
        self._sent_value = np.full(n, np.nan)
        self._sent_quality = np.full(n, 0xFFFFFFFF, dtype=np.uint32)

    def set_values(
        self,
        positions: npt.NDArray[np.intp],
        values: npt.NDArray[np.float64],
        qualities: npt.NDArray[np.uint32],
        ts_ns: npt.NDArray[np.int64],
    ) -> None:
        """Take new values (of a position given twice, the later wins); they go out with
        :meth:`publish_changes`."""
        self._value[positions] = values
        self._quality[positions] = qualities
        self._ts[positions] = ts_ns

    # ------------------------------------------------------------- lifecycle
    async def start_session(
        self, tick: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Connect, publish the births, and run ``tick`` (if any) while connected."""
        self._tick = tick
        self._supervisor = Supervisor(f"sparkplug-node-{self.node_id}")
        self._supervisor.start("session", self._sessions)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until the node is connected and has published its births (for a primary
        host: once that host is online)."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def stop(self) -> None:
        """Publish NDEATH (a clean disconnect sends no will), disconnect, stop."""
        client = self._client
        if client is not None:
            try:
                async with self._lock:
                    await client.publish(
                        self._topic(MessageType.NDEATH), self._ndeath(self._session_bd_seq), qos=1
                    )
            except aiomqtt.MqttError as err:
                logger.debug("node %s: NDEATH not sent: %s", self.node_id, err)
        if self._supervisor is not None:
            await self._supervisor.stop()
            self._supervisor = None

    async def _sessions(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                err = group.exceptions[0]
                if backoff.attempts == 0:
                    logger.warning(
                        "node %s lost broker %s:%s: %s", self.node_id, self.host, self.port, err
                    )
            await asyncio.sleep(backoff.next_delay())

    async def _session(self) -> None:
        bd_seq = self._bd_seq
        self._bd_seq = (self._bd_seq + 1) % 256
        will = aiomqtt.Will(self._topic(MessageType.NDEATH), self._ndeath(bd_seq), qos=1)
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"sparkplug-{self.group_id}-{self.node_id}",
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            will=will,
            keepalive=self._keepalive_s,
        )
        async with client:
            try:
                await client.subscribe(self._topic(MessageType.NCMD), qos=0)
                self._session_bd_seq = bd_seq
                self._client = client
                self._born = False
                if self.primary_host_id is None:
                    await self.rebirth()
                else:  # the retained STATE arrives at once if the host is online
                    self._host_online_ms = None
                    await client.subscribe(state_topic(self.primary_host_id), qos=1)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._listen(client))
                    if self._tick is not None:
                        tasks.create_task(self._tick())
            finally:
                self._client = None
                self._born = False
                self._connected.clear()

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            if message.topic.value.startswith(f"{NAMESPACE}/STATE/"):
                await self._host_state(payload)
                continue
            try:
                command = decode_payload(payload)
            except SparkplugDecodeError:
                logger.warning("node %s: undecodable NCMD ignored", self.node_id)
                continue
            for metric in command.metrics:
                try:
                    wanted = metric_value(metric, metric.datatype or SpType.BOOLEAN)
                except SparkplugDecodeError:
                    continue
                if metric.name == REBIRTH and wanted is True:
                    self.rebirth_requests += 1
                    logger.info("node %s: rebirth requested", self.node_id)
                    await self.rebirth()

    async def _host_state(self, payload: bytes) -> None:
        state = parse_state(payload)
        if state is None:
            return
        online, ts = state
        if online and ts != self._host_online_ms:
            self._host_online_ms = ts
            logger.info("node %s: primary host %s online", self.node_id, self.primary_host_id)
            await self.rebirth()
        elif not online and self._born:
            logger.info("node %s: primary host %s offline", self.node_id, self.primary_host_id)

    # --------------------------------------------------------------- messages
    async def rebirth(self) -> None:
        """Publish NBIRTH and every DBIRTH with the present values (seq restarts at 0)."""
        client = self._client
        if client is None:
            return
        async with self._lock:
            ts_ms = self._clock.now_ns() // _NS_PER_MS
            self._seq = 0
            birth = new_payload(timestamp_ms=ts_ms, seq=self._seq)
            add_metric(birth, name=BD_SEQ, datatype=SpType.INT64, value=self._session_bd_seq)
            add_metric(birth, name=REBIRTH, datatype=SpType.BOOLEAN, value=False)
            await client.publish(self._topic(MessageType.NBIRTH), birth.SerializeToString(), qos=0)
            for device in self.devices:
                payload = new_payload(timestamp_ms=ts_ms, seq=self._next_seq())
                for entry in self.entries:
                    if entry.device == device:
                        self._add(payload, entry, birth=True)
                await client.publish(
                    self._topic(MessageType.DBIRTH, device), payload.SerializeToString(), qos=0
                )
            self._sent_value[:] = self._value
            self._sent_quality[:] = self._quality
            self.births += 1
            self._born = True
            self._connected.set()

    async def publish_changes(self) -> None:
        """Send, per device, a DDATA of the metrics changed since they were last sent."""
        client = self._client
        if client is None or not self._born:
            return
        async with self._lock:
            ts_ms = self._clock.now_ns() // _NS_PER_MS
            changed = (self._quality != self._sent_quality) | ~(
                (self._value == self._sent_value)
                | (np.isnan(self._value) & np.isnan(self._sent_value))
            )
            for device in self.devices:
                entries = [e for e in self.entries if e.device == device and changed[e.position]]
                if not entries:
                    continue
                payload = new_payload(timestamp_ms=ts_ms, seq=self._next_seq())
                for entry in entries:
                    self._add(payload, entry, birth=False)
                await client.publish(
                    self._topic(MessageType.DDATA, device), payload.SerializeToString(), qos=0
                )
            self._sent_value[:] = self._value
            self._sent_quality[:] = self._quality

    async def publish_device_death(self, device: str) -> None:
        """Publish DDEATH for ``device`` (a machine going offline), for tests and demos."""
        client = self._client
        if client is None:
            return
        async with self._lock:
            payload = new_payload(
                timestamp_ms=self._clock.now_ns() // _NS_PER_MS, seq=self._next_seq()
            )
            await client.publish(
                self._topic(MessageType.DDEATH, device), payload.SerializeToString()
            )

    def skip_seq(self, count: int = 1) -> None:
        """Make the next message's sequence number jump by ``count`` (a lost message)."""
        self._seq = (self._seq + count) % 256

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _add(self, payload: object, entry: MetricEntry, *, birth: bool) -> None:
        quality = int(self._quality[entry.position])
        value = wire_value(entry, float(self._value[entry.position]))
        properties: dict[str, ScalarValue] = {}
        if quality != Quality.GOOD or value is None:
            properties["Quality"] = 0
        if birth:
            meta = entry.meta
            if meta.unit:
                properties["engUnit"] = meta.unit
            if meta.eng_low is not None:
                properties["engLow"] = float(meta.eng_low)
            if meta.eng_high is not None:
                properties["engHigh"] = float(meta.eng_high)
            if meta.description:
                properties["Documentation"] = meta.description
        add_metric(
            payload,
            name=entry.name if birth else None,
            alias=entry.alias,
            datatype=entry.datatype if birth else None,
            value=value,
            timestamp_ms=int(self._ts[entry.position]) // _NS_PER_MS,
            properties=properties,
        )

    def _ndeath(self, bd_seq: int) -> bytes:
        payload = new_payload(timestamp_ms=self._clock.now_ns() // _NS_PER_MS)
        add_metric(payload, name=BD_SEQ, datatype=SpType.INT64, value=bd_seq)
        data: bytes = payload.SerializeToString()
        return data

    def _topic(self, kind: MessageType, device: str | None = None) -> str:
        return topic_for(self.group_id, kind, self.node_id, device)
