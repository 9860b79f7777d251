"""The platform's API over a real uvicorn on 127.0.0.1, with a DuckDB file historian."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from shopfloor.model import LiveBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.api import create_app
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.testing.auth import grant
from shopfloor.testing.certs import make_ca, make_tls_certificate
from shopfloor.testing.postgres import PostgresServer, server_for_tests
from shopfloor.testing.processes import free_port


@dataclass
class Platform:
    historian: DuckDBHistorian
    ingestor: Ingestor
    live: Channel[LiveBatch]
    client: httpx.AsyncClient
    db: Path


MakePlatform = Callable[..., Awaitable[Platform]]


@pytest.fixture
async def make_platform(tmp_path: Path) -> AsyncIterator[MakePlatform]:
    """Start platforms (historian options and ingestor options as keywords); all stopped after."""
    running: list[tuple[Platform, uvicorn.Server, asyncio.Task[None]]] = []

    async def make(
        *,
        historian: dict[str, Any] | None = None,
        ingestor: dict[str, Any] | None = None,
        **app_kwargs: Any,
    ) -> Platform:
        db = tmp_path / f"platform-{len(running)}" / "history.duckdb"
        h = DuckDBHistorian(db, **{"flush_interval_s": 60.0, **(historian or {})})
        await h.start()
        live: Channel[LiveBatch] = Channel("live", maxsize=64)
        ing = Ingestor(h, live, **(ingestor or {}))
        app = create_app(historian=h, ingestor=ing, live=live, version="0.0.0", **app_kwargs)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        task = asyncio.create_task(server.serve(), name="uvicorn-test")
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=grant(app)
        )
        platform = Platform(h, ing, live, client, db)
        running.append((platform, server, task))
        return platform

    yield make
    for platform, server, task in running:
        await platform.client.aclose()
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        await platform.historian.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on 127.0.0.1 for the session (skipped without it, unless CI).

    Session-scoped and a static dependency of the tests that use it, so pytest starts it
    before the thread and process guard of the first such test takes its snapshot.
    """
    server = server_for_tests()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database of the session's PostgreSQL for one test, dropped after it."""
    dsn = postgres_server.create_database()
    try:
        yield dsn
    finally:
        postgres_server.drop_database(dsn.rsplit("dbname=", 1)[1])


@dataclass
class Receiver:
    """What the robots' servers received, and how they should answer."""

    url: str
    got: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = FastAPI()
    port = free_port()
    box = Receiver(f"http://127.0.0.1:{port}")

    @app.post("/{robot}")
    async def take(robot: str, request: Request) -> JSONResponse:
        body = await request.json()
        box.got.setdefault(robot, []).append({"body": body, "query": dict(request.query_params)})
        if box.fail_first.get(robot, 0) > 0:
            box.fail_first[robot] -= 1
            if robot == "dingtalk":  # a robot answers 200 with its own error code
                return JSONResponse({"errcode": 130101, "errmsg": "send too fast"})
            return JSONResponse({"error": "busy"}, status_code=503)
        if robot == "feishu":
            return JSONResponse({"code": 0, "msg": "success", "data": {}})
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag only
        await asyncio.sleep(0.01)
    yield box
    server.should_exit = True
    await task


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 Message accepted"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    ca = make_ca(tmp_path)
    cert = make_tls_certificate(tmp_path, "smtp", issuer=ca, server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.certificate, cert.private_key)
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
    )
    controller.start()
    try:
        yield box, port, ca.certificate
    finally:
        controller.stop()
