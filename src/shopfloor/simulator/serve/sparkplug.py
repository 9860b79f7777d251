"""The simulated plant as a Sparkplug B edge node publishing to an MQTT broker.

One edge node (``spBv1.0/<group>/…/<node>``) with one device per machine (the device
id is the machine id). On every connection the node registers an NDEATH will with a
new ``bdSeq``, then publishes NBIRTH (``bdSeq``, ``Node Control/Rebirth``) and a DBIRTH
per machine announcing each tag as a metric with a numeric alias, its type and the
properties ``engUnit``, ``engLow``, ``engHigh`` and ``Documentation``. Each period it
samples the plant and publishes per machine a DDATA with only the metrics that changed
(report by exception), by alias, with the sample time as metric timestamp. Sequence
numbers run 0–255 across all messages of the node and wrap. A Rebirth NCMD makes it
publish every birth again; stopping publishes NDEATH. Given a primary host application
(Sparkplug 3.0), the node publishes its births only once that host's retained STATE
says online, and again each time the host comes online anew.

A sensor dropout is sent as a null value with the ``Quality`` property 0 (bad).

:meth:`PlantSparkplugNode.connector_config` returns the host connector's configuration
that reads the plant back under the plant's own tag paths and metadata.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from dataclasses import dataclass

import aiomqtt
import numpy as np

from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig, SparkplugTagConfig
from shopfloor.model import DataType, PointBatch, Quality, TagMeta
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.supervisor import Supervisor
from shopfloor.simulator.plant import Plant
from shopfloor.sparkplug import (
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
from shopfloor.sparkplug import DataType as SpType

logger = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
_SP_TYPES = {
    DataType.FLOAT: SpType.DOUBLE,
    DataType.INT: SpType.INT64,
    DataType.BOOL: SpType.BOOLEAN,
    DataType.STRING: SpType.STRING,
}
_CONFIG_TYPES = {
    DataType.FLOAT: "float64",
    DataType.INT: "int64",
    DataType.BOOL: "bool",
    DataType.STRING: "string",
}


@dataclass(frozen=True, slots=True)
class MetricEntry:
    """One plant tag as a Sparkplug metric.

    Attributes:
        meta: the plant's tag metadata (its path is the plant's path).
        device: the device id (the machine id).
        name: the metric name (the tag's own name).
        alias: the metric's alias, unique within the node.
        datatype: the Sparkplug type it is sent as.
        position: the tag's index in the plant's tag order.
    """

    meta: TagMeta
    device: str
    name: str
    alias: int
    datatype: SpType
    position: int


def metric_map(plant: Plant) -> list[MetricEntry]:
    """Every tag of ``plant`` with its device, metric name, alias and Sparkplug type."""
    metas = plant.tags()
    entries: list[MetricEntry] = []
    for machine in plant.layout.machines:
        prefix = plant.layout.equipment_path(machine)
        for position, meta in enumerate(metas):
            if meta.asset == prefix:
                entries.append(
                    MetricEntry(
                        meta=meta,
                        device=machine.id,
                        name=meta.name,
                        alias=len(entries) + 1,
                        datatype=_SP_TYPES[meta.data_type],
                        position=position,
                    )
                )
    return entries


def _wire_value(entry: MetricEntry, value: float) -> ScalarValue:
    if math.isnan(value):
        return None
    if entry.datatype is SpType.INT64:
        return round(value)
    if entry.datatype is SpType.BOOLEAN:
        return bool(value)
    return float(value)


class PlantSparkplugNode:
    """Publishes a :class:`Plant` as a Sparkplug B edge node.

    Args:
        plant: the simulated factory; this node advances it in real time.
        host: the broker's host.
        port: the broker's port.
        group_id: Sparkplug group id.
        node_id: edge node id.
        period_s: how often the plant is sampled and changes are published.
        username: broker user, if it requires one.
        password: broker password.
        tls_context: TLS towards the broker, if wanted.
        primary_host_id: Sparkplug 3.0 primary host application to wait for: the node
            publishes its births only once ``spBv1.0/STATE/<id>`` says online, and again
            whenever that host comes online anew; None publishes at once.
        clock: wall clock for the samples (injected by tests).
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        group_id: str = "shopfloor",
        node_id: str = "plant-sim",
        period_s: float = 1.0,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        primary_host_id: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.plant = plant
        self.host = host
        self.port = port
        self.group_id = group_id
        self.node_id = node_id
        self.period_s = period_s
        self._period_ns = max(1, round(period_s * 1e9))
        self._username = username
        self._password = password
        self._tls = tls_context
        self.primary_host_id = primary_host_id
        self._host_online_ms: int | None = None
        self._born = False
        self._clock = clock or SystemClock()
        self.entries = metric_map(plant)
        self.devices = list(dict.fromkeys(e.device for e in self.entries))
        n = len(plant.tags())
        self._value = np.full(n, np.nan)
        self._quality = np.zeros(n, dtype=np.uint32)
        self._sent_value = np.full(n, np.nan)
        self._sent_quality = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
        self._sample_ns: int | None = None
        self._seq = 0
        self._bd_seq = 0
        self._session_bd_seq = 0
        self._lock = asyncio.Lock()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._refresh = True
        self.births = 0
        self.rebirth_requests = 0

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, refresh: bool = True) -> None:
        """Sample the plant now, connect, publish the births and keep publishing changes.

        Args:
            refresh: keep sampling every ``period_s``; tests that step time themselves
                through :meth:`refresh` pass False.
        """
        self._sample(self._clock.now_ns())
        self._refresh = refresh
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
            keepalive=10,
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
                    if self._refresh:
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

    async def _tick(self) -> None:
        while True:
            now = self._clock.now_ns()
            await self._clock.sleep((self._period_ns - now % self._period_ns) / 1e9)
            await self.refresh(self._clock.now_ns())

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

    async def refresh(self, now_ns: int) -> PointBatch:
        """Sample the plant at ``now_ns`` (rounded down to the period) and publish changes.

        Returns the plant's batch. A time not after the last sample changes nothing.
        """
        batch = self._sample(now_ns)
        client = self._client
        if client is None or not self._born or not len(batch):
            return batch
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
        return batch

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

    def _sample(self, now_ns: int) -> PointBatch:
        t = now_ns - now_ns % self._period_ns
        if self.plant.now_ns is not None and t < self.plant.now_ns:
            return PointBatch.empty()
        batch = self.plant.advance(start_ns=t, steps=1, period_ns=self._period_ns)
        # one step: the batch's tag dictionary is the plant's tag order
        self._value[batch.tag_index] = batch.value
        self._quality[batch.tag_index] = batch.quality
        self._sample_ns = t
        return batch

    def _add(self, payload: object, entry: MetricEntry, *, birth: bool) -> None:
        quality = int(self._quality[entry.position])
        value = _wire_value(entry, float(self._value[entry.position]))
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
            timestamp_ms=(self._sample_ns or 0) // _NS_PER_MS,
            properties=properties,
        )

    def _ndeath(self, bd_seq: int) -> bytes:
        payload = new_payload(timestamp_ms=self._clock.now_ns() // _NS_PER_MS)
        add_metric(payload, name=BD_SEQ, datatype=SpType.INT64, value=bd_seq)
        data: bytes = payload.SerializeToString()
        return data

    def _topic(self, kind: MessageType, device: str | None = None) -> str:
        return topic_for(self.group_id, kind, self.node_id, device)

    # ---------------------------------------------------------- configuration
    def connector_config(
        self, *, name: str = "sparkplug", host: str | None = None, host_id: str | None = None
    ) -> SparkplugConnectorConfig:
        """The host connector that reads this node back under the plant's paths."""
        tags = [
            SparkplugTagConfig(
                name=e.name,
                path=e.meta.path,
                group=self.group_id,
                node=self.node_id,
                device=e.device,
                metric=e.name,
                data_type=_CONFIG_TYPES[e.meta.data_type],
                unit=e.meta.unit,
                description=e.meta.description,
                eng_low=e.meta.eng_low,
                eng_high=e.meta.eng_high,
                states={str(k): v for k, v in e.meta.states} or None,
            )
            for e in self.entries
        ]
        devices = {
            f"{self.group_id}/{self.node_id}/{m.id}": self.plant.layout.equipment_path(m)
            for m in self.plant.layout.machines
        }
        return SparkplugConnectorConfig(
            name=name,
            host=host or self.host,
            port=self.port,
            host_id=host_id or self.primary_host_id or name,
            groups=[self.group_id],
            devices=devices,
            tags=tags,
        )


async def serve_plant(
    plant: Plant,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    period_s: float = 1.0,
    group_id: str = "shopfloor",
    node_id: str = "plant-sim",
    primary_host_id: str | None = "shopfloor",
) -> tuple[PlantSparkplugNode, SparkplugConnectorConfig]:
    """Start publishing ``plant`` to the broker at ``host:port``; return the node and the
    host connector configuration that reads it.

    With a ``primary_host_id`` (the returned configuration's ``host_id``) the node waits
    for that host's STATE before its births, so the two may start in any order.
    The caller owns the node: ``await node.stop()`` when done.
    """
    node = PlantSparkplugNode(
        plant,
        host=host,
        port=port,
        period_s=period_s,
        group_id=group_id,
        node_id=node_id,
        primary_host_id=primary_host_id,
    )
    await node.start()
    return node, node.connector_config(name=primary_host_id or "sparkplug")
