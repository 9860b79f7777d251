"""A real API over a real in-memory DuckDB historian, for the REST and websocket tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.api import create_app
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.testing.auth import grant


@dataclass
class Stack:
    historian: DuckDBHistorian
    live: Channel[LiveBatch]
    ingestor: Ingestor
    app: FastAPI
    client: httpx.AsyncClient

    async def ingest(self, batch: PointBatch) -> None:
        """Store a batch through the ingestor and wait until it is committed."""
        await self.ingestor.ingest(batch, source="test")
        await self.historian.flush()


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack() -> AsyncIterator[MakeStack]:
    """Build stacks with custom settings; all are closed at the end of the test."""
    opened: list[Stack] = []

    async def make(
        *, live_maxsize: int = 64, flush_interval_s: float = 0.05, **app_kwargs: Any
    ) -> Stack:
        historian = DuckDBHistorian(None, flush_interval_s=flush_interval_s)
        await historian.start()
        live: Channel[LiveBatch] = Channel("live", maxsize=live_maxsize)
        ingestor = Ingestor(historian, live)
        app = create_app(
            historian=historian, ingestor=ingestor, live=live, version="9.9.9", **app_kwargs
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=grant(app)
        )
        stack = Stack(historian, live, ingestor, app, client)
        opened.append(stack)
        return stack

    yield make
    for stack in opened:
        await stack.client.aclose()
        await stack.historian.close()


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    return await make_stack()


@dataclass
class RunningServer:
    stack: Stack
    port: int

    @property
    def headers(self) -> dict[str, str]:
        """The stack's API token, for clients of the running server."""
        return {"Authorization": self.stack.client.headers["Authorization"]}

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"


@pytest.fixture
async def make_server(
    make_stack: MakeStack,
) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Serve a stack with a real uvicorn on 127.0.0.1 and a free port."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def make(**stack_kwargs: Any) -> RunningServer:
        stack = await make_stack(**stack_kwargs)
        config = uvicorn.Config(
            stack.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(), name="uvicorn-test")
        servers.append((server, task))
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        return RunningServer(stack, port)

    yield make
    for server, task in servers:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
