"""Fixtures for the store-and-forward tests: the real platform in-process, fake platforms,
and a probe of what the platform under test already supports (zstd, ledger)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette

from shopfloor.config import ShopfloorConfig
from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.uplink.framing import compress, frame
from shopfloor.model import PointBatch
from shopfloor.server.app import Server
from shopfloor.testing.auth import new_secret, provision
from shopfloor.testing.serving import serving

PlatformFactory = Callable[..., AbstractAsyncContextManager[Server]]

EDGE_TOKEN = new_secret()
"""The ``ingest`` API token every platform of these tests accepts (stored in its data folder
before it starts, so an edge can be configured with it before the platform is up)."""


@asynccontextmanager
async def run_platform(data_dir: Path, port: int = 0) -> AsyncIterator[Server]:
    """The real platform (historian, ingest, API) on 127.0.0.1:``port``."""
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": port, "data_dir": str(data_dir)},
            "historian": {"flush_interval_s": 0.05},
        }
    ).resolve_paths(data_dir)
    provision(data_dir, role="engineer", user="edge", token_role="ingest", secret=EDGE_TOKEN)
    async with serving(Server(config)) as server:
        yield server


@pytest.fixture
def platform(tmp_path: Path) -> PlatformFactory:
    """``async with platform(port) as server``: the real platform; data kept across restarts."""

    def make(port: int = 0) -> AbstractAsyncContextManager[Server]:
        return run_platform(tmp_path / "platform", port)

    return make


@asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[str]:
    """Serve a (fake platform) app on a free port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def stored_ts(server: Server, tag: str) -> np.ndarray:
    """Every stored timestamp of ``tag`` (after committing what is pending)."""
    await server.historian.flush()
    table = await server.historian.read_raw(tag, 0, 2**62)
    return np.asarray(table.column("ts").cast("int64").to_numpy(), dtype=np.int64)


@dataclass(frozen=True)
class Features:
    """What the platform under test already does (the other half of issue 4 may lag)."""

    zstd: bool
    ledger: bool


async def probe(base_url: str) -> Features:
    """Send two tiny probe batches to learn whether the platform reads zstd and dedupes."""
    batch = PointBatch.from_points([("probe/edge/outbox/x", 1_764_000_000_000_000_000, 1.0, 0)])
    stored = StoredBatch(seq=1, points=1, appended_ns=0, payload=encode_payload(batch))
    body = frame([stored], edge="probe-edge", historical=False)
    headers = {"authorization": f"Bearer {EDGE_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=headers) as client:
        data, encoding = compress(body, "zstd")
        zstd = (
            await client.post(
                "/api/v1/ingest",
                content=data,
                headers={
                    "content-type": "application/vnd.apache.arrow.stream",
                    "content-encoding": str(encoding),
                },
            )
        ).status_code == 200
        headers = {"content-type": "application/vnd.apache.arrow.stream"}
        await client.post("/api/v1/ingest", content=body, headers=headers)
        again = await client.post("/api/v1/ingest", content=body, headers=headers)
        ledger = again.status_code == 200 and again.json().get("duplicate") is True
    return Features(zstd=zstd, ledger=ledger)


@pytest.fixture
def features() -> Callable[[str], Awaitable[Features]]:
    return probe
