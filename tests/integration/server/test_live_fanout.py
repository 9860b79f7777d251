"""Live values through the broker (issue 9): a worker's live batches reach every API server's
live channel through a real Mosquitto, whatever process ingested them."""

from __future__ import annotations

import asyncio

import numpy as np

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.model import LiveBatch, PointBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.live_fanout import LiveFanIn, LiveFanOut, stop_link
from shopfloor.testing.mosquitto import Mosquitto


def _batch(n: int, value: float) -> PointBatch:
    return PointBatch.from_columns(
        ["plant/line/m1/temp", "plant/line/m1/speed"],
        np.arange(n) % 2,
        now_ns() + np.arange(n),
        np.full(n, value),
        np.full(n, 0x40000000),  # Uncertain: the quality travels too
    )


async def test_every_api_server_gets_every_workers_batches(mosquitto: Mosquitto) -> None:
    settings = MqttIngestSection(port=mosquitto.port, live_fanout=True)
    workers = [Channel[LiveBatch]("worker-live", maxsize=16) for _ in range(2)]
    apis = [Channel[LiveBatch]("api-live", maxsize=64) for _ in range(2)]
    outs = [LiveFanOut(settings, w, client_id=f"w{i}-live") for i, w in enumerate(workers)]
    ins = [LiveFanIn(settings, a, client_id="api-live") for a in apis]
    for i, fan_in in enumerate(ins):  # two in one process: ids made unique per process
        fan_in.client_id += f"-{i}"
    tasks = [asyncio.create_task(x.run(), name=f"live-{i}") for i, x in enumerate([*outs, *ins])]
    try:
        async with (
            apis[0].subscribe("test") as got_0,
            apis[1].subscribe("test") as got_1,
        ):
            while not all(x.stats.connected for x in [*outs, *ins]):  # noqa: ASYNC110 - flags
                await asyncio.sleep(0.05)
            # a subscription may still be on its way: publish until the first arrives
            first = None
            while first is None:
                workers[0].publish(LiveBatch(_batch(4, -1.0), edge="edge-a"))
                try:
                    async with asyncio.timeout(0.5):
                        first = await got_0.get()
                        await got_1.get()
                except TimeoutError:
                    continue
            got_0.drain()
            got_1.drain()
            sent = [
                LiveBatch(_batch(10, 1.0), edge="edge-a"),
                LiveBatch(_batch(6, 2.0), historical=True, edge="edge-b"),
            ]
            workers[0].publish(sent[0])
            workers[1].publish(sent[1])
            for got in (got_0, got_1):
                async with asyncio.timeout(10):
                    received = [await got.get(), await got.get()]
                received.sort(key=lambda b: b.edge or "")
                for want, have in zip(sent, received, strict=True):
                    assert have.edge == want.edge
                    assert have.historical == want.historical
                    assert have.batch.tags == want.batch.tags
                    for column in ("tag_index", "ts", "value", "quality"):
                        assert np.array_equal(
                            getattr(have.batch, column), getattr(want.batch, column)
                        )
    finally:
        for task in tasks:
            await stop_link(task)
    assert outs[0].stats.batches >= 2
    assert ins[0].stats.dropped == 0
