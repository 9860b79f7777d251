"""The platform's MQTT ingest as a process, for the fault tests (until the CLI wires it).

Usage: ``python mqtt_platform.py DB BROKER_PORT``. Opens the DuckDB historian at ``DB``,
runs :class:`~shopfloor.server.ingest.mqtt.MqttIngest` against the broker on
127.0.0.1:``BROKER_PORT``, prints ``ready`` once subscribed, and on SIGTERM/SIGINT stops
the consumer, closes the historian, prints its counters as one JSON line and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.model import LiveBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.api.schemas import EdgeStatusIn
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.ingest.mqtt import MqttIngest


async def main(db: Path, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    historian = DuckDBHistorian(db, flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=64)
    ingestor = Ingestor(historian, live)
    settings = MqttIngestSection(
        enabled=True, port=port, max_inflight=16, reconnect_max="500ms", keepalive="5s"
    )
    consumer = MqttIngest(
        ingestor, settings, register_tags=historian.register_tags, status_model=EdgeStatusIn
    )
    await consumer.start()
    if await consumer.wait_connected(20):
        print("ready", flush=True)
    await stop.wait()
    await consumer.stop()
    await historian.close()
    stats = dataclasses.asdict(consumer.stats())
    stats["edges"] = {v.edge: v.status is not None for v in ingestor.edges.views()}
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
