"""The HTTP uplink against the real platform server: delivery, outages, refusals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopfloor.config import ShopfloorConfig
from shopfloor.edge.uplink.http import HttpUplink
from shopfloor.model import PointBatch, TagMeta
from shopfloor.server.app import Server
from shopfloor.testing.processes import free_port


@asynccontextmanager
async def platform(tmp_path: Path, port: int) -> AsyncIterator[Server]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": port, "data_dir": str(tmp_path)},
            "historian": {"flush_interval_s": 0.05},
        }
    ).resolve_paths(tmp_path)
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield server
    finally:
        stop.set()
        await serving
        await server.close()


def _batch(t0: int, n: int = 5) -> PointBatch:
    return PointBatch.from_points([("acme/p/a/l/c/m/temp", t0 + i, 20.0 + i, 0) for i in range(n)])


async def test_delivers_metadata_and_batches(tmp_path: Path) -> None:
    port = free_port()
    async with platform(tmp_path, port) as server:
        uplink = HttpUplink(f"http://127.0.0.1:{port}", edge_id="edge-a")
        await uplink.announce([TagMeta("acme/p/a/l/c/m/temp", unit="degC")])
        base = 1_764_000_000_000_000_000
        for k in range(3):
            await uplink.send(_batch(base + k * 10))
        await uplink.close()
        await server.historian.flush()
        raw = await server.historian.read_raw("acme/p/a/l/c/m/temp", 0, 2**62)
        assert raw.num_rows == 15
        (meta,) = await server.historian.tags()
        assert meta.unit == "degC"
        assert uplink.points_sent == 15


async def test_waits_out_a_platform_outage_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.uplink.http")
    port = free_port()
    uplink = HttpUplink(f"http://127.0.0.1:{port}", edge_id="edge-b", retry=(0.02, 0.05))
    sending = asyncio.create_task(uplink.send(_batch(1_764_000_000_000_000_000)))
    await asyncio.sleep(0.5)
    assert not sending.done(), "nothing listens yet: the batch must wait, not vanish"
    async with platform(tmp_path, port) as server:
        await asyncio.wait_for(sending, 10)
        await server.historian.flush()
        assert server.historian.stats().points_written == 5
    await uplink.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


async def test_a_refused_batch_is_dropped_and_counted_and_the_next_one_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    async with platform(tmp_path, port) as server:
        uplink = HttpUplink(f"http://127.0.0.1:{port}", edge_id="edge-c")
        bad = PointBatch.from_points([("acme//temp", 1_764_000_000_000_000_000, 1.0, 0)])
        await uplink.send(bad)
        assert uplink.batches_refused == 1
        assert "empty segment" in caplog.text, "the platform's reason is logged"
        await uplink.send(_batch(1_764_000_000_000_000_000))
        await uplink.close()
        await server.historian.flush()
        assert server.historian.stats().points_written == 5


async def test_honours_retry_after_from_an_overloaded_platform() -> None:
    attempts: list[float] = []

    async def ingest(request: Request) -> Response:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) == 1:
            return Response(status_code=503, headers={"retry-after": "0.3"})
        return JSONResponse({"accepted": 5})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    uplink = HttpUplink(f"http://127.0.0.1:{port}", edge_id="edge-d", retry=(0.001, 0.001))
    await uplink.send(_batch(1))
    await uplink.close()
    server.should_exit = True
    await serving
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.29, "Retry-After wins over the shorter backoff"
