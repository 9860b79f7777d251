"""A burst of batches through the broker: the consumer takes what Mosquitto sends beyond
Receive Maximum (``max_queued``) instead of reconnecting over and over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.wire import encode_arrow

EDGE = "edge-burst"
BATCHES = 300


def _batch(seq: int) -> PointBatch:
    return PointBatch.from_points([("plant/burst/t", 1_700_000_000_000_000_000 + seq, seq, 0)])


async def test_a_burst_is_committed_without_a_reconnect(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    historian = DuckDBHistorian(tmp_path / "history.duckdb", flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=8)
    settings = MqttIngestSection(enabled=True, port=mosquitto.port, max_inflight=2)
    consumer = MqttIngest(
        Ingestor(historian, live), settings, register_tags=historian.register_tags
    )
    try:
        await consumer.start()
        assert await consumer.wait_connected(10)
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as publisher:
            publisher.pending_calls_threshold = BATCHES
            for seq in range(1, BATCHES + 1):
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = [("seq", str(seq)), ("edge", EDGE)]
                await publisher.publish(
                    settings.topic(EDGE, "batches"),
                    encode_arrow(_batch(seq), edge=EDGE, seq=seq),
                    qos=1,
                    properties=properties,
                )
        async with asyncio.timeout(60):
            while consumer.stats().committed < BATCHES:  # noqa: ASYNC110 - observable state
                await asyncio.sleep(0.05)
        stats = consumer.stats()
        # with 64 places beyond Receive Maximum this reconnected several times
        assert (stats.overflows, stats.connects, stats.duplicates) == (0, 1, 0)
    finally:
        await consumer.stop()
        await historian.close()
