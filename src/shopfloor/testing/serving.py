"""A real platform for a test: started, answering on its port, then stopped and closed.

Tests of the HTTP path (edges over HTTPS, the OEE API, asset edits …) all need the same
thing: a :class:`~shopfloor.server.app.Server` that is started, serves until the block
ends, and is closed even when the block fails::

    async with serving(Server(config)) as server, api_client(server, user="ana") as client:
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from shopfloor.server.app import Server
from shopfloor.testing.auth import grant

__all__ = ["api_client", "serving"]


@asynccontextmanager
async def serving(server: Server, *, ready_within_s: float = 10) -> AsyncIterator[Server]:
    """``server`` started and answering for the block; stopped and closed after it.

    Raises:
        TimeoutError: the server did not answer within ``ready_within_s``.
        Whatever ``serve`` raised, if it failed before it was ready (a port in use, a bad
        certificate), instead of waiting for the timeout.
    """
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(server.serve(stop, ready=ready), name="testing/serve")
    try:
        await _until_ready(task, ready, ready_within_s)
        yield server
    finally:
        stop.set()
        try:
            await task
        finally:
            await server.close()


async def _until_ready(task: asyncio.Task[None], ready: asyncio.Event, within_s: float) -> None:
    waiting = asyncio.create_task(ready.wait(), name="testing/ready")
    try:
        done, _ = await asyncio.wait(
            {task, waiting}, timeout=within_s, return_when="FIRST_COMPLETED"
        )
    finally:
        waiting.cancel()
    if task in done:
        task.result()  # raises what serve raised
        raise RuntimeError("the server stopped before it was ready")
    if not done:
        raise TimeoutError(f"the server did not answer within {within_s} s")


def api_client(server: Server, *, timeout_s: float = 30, **credential: Any) -> httpx.AsyncClient:
    """An HTTP client of ``server`` sending a new API token (:func:`grant`'s arguments:
    ``role``, ``user``, ``name``)."""
    return httpx.AsyncClient(
        base_url=server.url, timeout=timeout_s, headers=grant(server.app, **credential)
    )
