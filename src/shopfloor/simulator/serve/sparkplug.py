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

import ssl

import numpy as np

from shopfloor.config.connectors.sparkplug import SparkplugConnectorConfig, SparkplugTagConfig
from shopfloor.model import DataType, PointBatch
from shopfloor.runtime.clock import Clock
from shopfloor.simulator.plant import Plant
from shopfloor.sparkplug.node import SP_TYPES, EdgeNode, MetricEntry

_CONFIG_TYPES = {
    DataType.FLOAT: "float64",
    DataType.INT: "int64",
    DataType.BOOL: "bool",
    DataType.STRING: "string",
}


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
                        datatype=SP_TYPES[meta.data_type],
                        position=position,
                    )
                )
    return entries


class PlantSparkplugNode(EdgeNode):
    """Publishes a :class:`Plant` as a Sparkplug B edge node, one device per machine.

    Args:
        plant: the simulated factory; this node advances it in real time.
        period_s: how often the plant is sampled and changes are published.
        Others: as :class:`~shopfloor.sparkplug.node.EdgeNode`.
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
        super().__init__(
            metric_map(plant),
            host=host,
            port=port,
            group_id=group_id,
            node_id=node_id,
            username=username,
            password=password,
            tls_context=tls_context,
            primary_host_id=primary_host_id,
            clock=clock,
        )
        self.plant = plant
        self.period_s = period_s
        self._period_ns = max(1, round(period_s * 1e9))

    async def start(self, *, refresh: bool = True) -> None:
        """Sample the plant now, connect, publish the births and keep publishing changes.

        Args:
            refresh: keep sampling every ``period_s``; tests that step time themselves
                through :meth:`refresh` pass False.
        """
        self._sample(self._clock.now_ns())
        await self.start_session(self._ticks if refresh else None)

    async def _ticks(self) -> None:
        while True:
            now = self._clock.now_ns()
            await self._clock.sleep((self._period_ns - now % self._period_ns) / 1e9)
            await self.refresh(self._clock.now_ns())

    async def refresh(self, now_ns: int) -> PointBatch:
        """Sample the plant at ``now_ns`` (rounded down to the period) and publish changes.

        Returns the plant's batch. A time not after the last sample changes nothing.
        """
        batch = self._sample(now_ns)
        if len(batch):
            await self.publish_changes()
        return batch

    def _sample(self, now_ns: int) -> PointBatch:
        t = now_ns - now_ns % self._period_ns
        if self.plant.now_ns is not None and t < self.plant.now_ns:
            return PointBatch.empty()
        batch = self.plant.advance(start_ns=t, steps=1, period_ns=self._period_ns)
        # one step: the batch's tag dictionary is the plant's tag order
        positions = np.asarray(batch.tag_index, np.intp)
        self.set_values(positions, batch.value, batch.quality, np.full(len(batch), t, np.int64))
        return batch

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
