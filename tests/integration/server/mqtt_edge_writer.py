"""An edge process sending over MQTT: append numbered batches, log each once durable.

Usage: ``python mqtt_edge_writer.py EDGE_TOML LOG RUN COUNT PACE_S``. The uplink is built from the
edge configuration file (``transport = "mqtt"``) exactly as ``shopfloor edge`` builds it.
Batch ``k`` of run ``RUN`` holds 50 points of one tag with timestamps
``T0 + (RUN * 1_000_000 + k) * 1000 + i`` and the value ``RUN * 1_000_000 + k`` (so the
test can tell lost points from duplicated ones, and see half-applied batches). ``LOG``
gets ``RUN k`` once ``send`` returned (the batch is durable); batches follow each other
``PACE_S`` seconds apart at most. After ``COUNT`` batches it
waits until the outbox is empty, prints the uplink's figures as one JSON line, exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import numpy as np

from shopfloor.config import load_edge_config
from shopfloor.edge.uplink.forwarder import build_outbox_uplink
from shopfloor.model import PointBatch

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/mqtt"
POINTS = 50


def batch(run: int, k: int) -> PointBatch:
    ident = run * 1_000_000 + k
    base = T0 + ident * 1000
    return PointBatch.from_columns(
        [TAG], np.zeros(POINTS), base + np.arange(POINTS), np.full(POINTS, float(ident)), None
    )


async def main(config: Path, log_path: Path, run: int, count: int, pace_s: float) -> None:
    uplink = build_outbox_uplink(load_edge_config(config))
    await uplink.start()
    await uplink.wait_ready()
    with log_path.open("a") as log:
        for k in range(count):
            await uplink.send(batch(run, k))
            log.write(f"{run} {k}\n")
            log.flush()
            await asyncio.sleep(pace_s)
    while uplink.outbox.stats().batches:  # noqa: ASYNC110 - acks have no event
        await asyncio.sleep(0.05)
    status = uplink.status()
    await uplink.close()
    print(json.dumps(status["uplink"]), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    a = sys.argv[1:]
    asyncio.run(main(Path(a[0]), Path(a[1]), int(a[2]), int(a[3]), float(a[4])))
