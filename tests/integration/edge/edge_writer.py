"""An edge process for the SIGKILL test: append numbered batches, log each once durable.

Usage: ``python edge_writer.py OUTBOX URL LOG RUN [--drain]``. Batch ``k`` of run ``RUN``
holds 50 points of one tag with timestamps ``T0 + (RUN * 1_000_000 + k) * 1000 + i``:
unique across runs, so the test can tell lost points from duplicated ones. ``LOG`` gets
a line with the batch number once ``send`` returned (the batch is durable). With
``--drain`` nothing new is appended: the process exits once the outbox is empty.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np

from shopfloor.edge.buffer import DurableOutbox, SegmentLog
from shopfloor.edge.buffer.quarantine import Quarantine
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.http import HttpTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.model import PointBatch

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/killed"
POINTS = 50


def batch(run: int, k: int) -> PointBatch:
    base = T0 + (run * 1_000_000 + k) * 1000
    return PointBatch.from_columns(
        [TAG], np.zeros(POINTS), base + np.arange(POINTS), np.full(POINTS, float(k)), None
    )


async def main(outbox_dir: Path, url: str, log_path: Path, run: int, drain: bool) -> None:
    uplink = OutboxUplink(
        DurableOutbox(SegmentLog(outbox_dir, segment_bytes=256 * 1024), max_bytes=1 << 30),
        HttpTransport(url, edge_id="edge-kill", timeout_s=5, token=os.environ.get("EDGE_TOKEN")),
        edge_id="edge-kill",
        quarantine=Quarantine(outbox_dir / "quarantine"),
        options=SenderOptions(window=4, retry=(0.05, 0.5)),
    )
    await uplink.start()
    await uplink.wait_ready()
    if drain:
        while uplink.outbox.stats().batches:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await uplink.close()
        return
    with log_path.open("a") as log:
        k = 0
        while True:
            await uplink.send(batch(run, k))
            log.write(f"{run} {k}\n")
            log.flush()
            k += 1
            await asyncio.sleep(0.002)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(Path(args[0]), args[1], Path(args[2]), int(args[3]), "--drain" in args))
