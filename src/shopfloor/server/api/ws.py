"""Live values over a websocket: ``/api/v1/ws``.

On connect the server sends ``{"type": "snapshot", "values": [...]}`` with the latest value
of every tag, then ``{"type": "values", "values": [...]}`` at most every 250 ms with the
newest point of each tag that changed since the last push. A client narrows what it gets
with ``{"type": "subscribe", "prefix": "acme/plant-1/machining"}`` (answered by a fresh
snapshot of that prefix); ``{"type": "ping"}`` is answered by ``{"type": "pong"}``.
Anything else is answered by ``{"type": "error", "error": {...}}`` and the connection
stays open.

Each client reads the live channel through its own bounded subscription. While a client
is slow (or gone without saying so) its subscription drops the oldest batches and counts
them; ingest never waits for a websocket. Batches from an edge's backlog (``historical``)
are treated like any other: only their points newer than what the client shows go out,
so a backlog never moves a dashboard backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from shopfloor.errors import PayloadError
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel, Subscription
from shopfloor.server.api.auth import READ, principal_of
from shopfloor.server.api.context import get_context
from shopfloor.server.api.convert import json_bytes, latest_rows, normalise_prefix, path_under
from shopfloor.server.api.timeparse import iso_strings
from shopfloor.server.historian.base import Historian
from shopfloor.server.security.scoping import Scoped, allowed, is_scoped

logger = logging.getLogger(__name__)

__all__ = ["LiveHub", "coalesce_latest", "router"]

router = APIRouter(tags=["live"])

_MAX_MESSAGE_CHARS = 64 * 1024
_CLOSED = (WebSocketDisconnect, OSError, RuntimeError)
"""What sending on a connection that went away raises (Starlette, the server, or both)."""


def coalesce_latest(
    batches: list[PointBatch],
    *,
    prefix: str | None,
    sent: dict[str, int],
    principal: Scoped | None = None,
) -> list[dict[str, Any]]:
    """Return the newest point of each tag in ``batches``, as rows for a values frame.

    Newest means the largest timestamp, the later arrival winning a tie; points older than
    what the client already has for a tag (``sent``, updated here) are left out, so a
    backlog that an edge uploads after an outage never moves a dashboard backwards.
    The choice per tag is one numpy sort, not a loop over points. Only tags within the
    ``principal``'s sites are kept (site scoping).
    """
    batch = PointBatch.concat(batches)
    if (prefix is not None or is_scoped(principal)) and len(batch):
        keep_tag = np.fromiter(
            (path_under(t, prefix) and allowed(principal, t) for t in batch.tags),
            dtype=np.bool_,
            count=len(batch.tags),
        )
        batch = batch.select(keep_tag[batch.tag_index])
    n = len(batch)
    if not n:
        return []
    order = np.lexsort((np.arange(n), batch.ts, batch.tag_index))
    grouped = batch.tag_index[order]
    last_of_tag = np.ones(n, dtype=np.bool_)
    last_of_tag[:-1] = grouped[1:] != grouped[:-1]
    pick = order[last_of_tag]
    ts = batch.ts[pick]
    text = batch.text.take(pick).to_pylist() if batch.text is not None else [None] * len(pick)
    rows = []
    for tag_i, t, iso, v, q, x in zip(
        batch.tag_index[pick].tolist(),
        ts.tolist(),
        iso_strings(ts),
        batch.value[pick].tolist(),
        batch.quality[pick].tolist(),
        text,
        strict=True,
    ):
        path = batch.tags[tag_i]
        if t < sent.get(path, -math.inf):
            continue
        sent[path] = t
        rows.append({"path": path, "ts": iso, "value": v, "quality": q, "text": x})
    return rows


class LiveHub:
    """The websocket fan-out: one bounded subscription per client, counters for health.

    Args:
        live: the channel of ingested batches (its ``maxsize`` bounds each client's queue).
        historian: where snapshots come from.
        interval_s: the shortest time between two pushes to one client.
    """

    def __init__(
        self, live: Channel[LiveBatch], historian: Historian, *, interval_s: float = 0.25
    ) -> None:
        self.historian = historian
        self.interval_s = interval_s
        self.frames_sent = 0
        self._live = live
        self._subscriptions: set[Subscription[LiveBatch]] = set()
        self._dropped_closed = 0
        self._connections = 0

    def stats(self) -> dict[str, int]:
        """Counters: clients now, connections so far, frames sent, batches dropped."""
        return {
            "clients": len(self._subscriptions),
            "connections": self._connections,
            "frames_sent": self.frames_sent,
            "dropped_batches": self._dropped_closed + sum(s.dropped for s in self._subscriptions),
        }

    async def serve(self, websocket: WebSocket, principal: Scoped | None = None) -> None:
        """Run one client's connection until it closes; it receives only the tags within
        ``principal``'s sites."""
        await websocket.accept()
        self._connections += 1
        name = f"ws-{self._connections}"
        # Subscribe before the snapshot so nothing ingested in between is missed.
        async with self._live.subscribe(name) as sub:
            self._subscriptions.add(sub)
            try:
                await _Client(self, websocket, sub, name, principal).run()
            finally:
                self._subscriptions.discard(sub)
                self._dropped_closed += sub.dropped


class _Client:
    """One websocket connection: its filter, what it has been sent, one send lock.

    The lock is held from computing a frame to having sent it, so snapshots and pushes
    go out in the order their contents were read and never interleave.
    """

    def __init__(
        self,
        hub: LiveHub,
        websocket: WebSocket,
        sub: Subscription[LiveBatch],
        name: str,
        principal: Scoped | None = None,
    ) -> None:
        self._hub = hub
        self._principal = principal
        self._ws = websocket
        self._sub = sub
        self._name = name
        self._prefix: str | None = None
        self._sent: dict[str, int] = {}  # per tag, the newest ts the client has (ns)
        self._rows: dict[str, dict[str, Any]] = {}  # per tag, the row it was last sent
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Send the snapshot, then push and listen until the client leaves."""
        try:
            if not await self._snapshot():
                return
            async with asyncio.TaskGroup() as tasks:
                pusher = tasks.create_task(self._push_loop(), name=f"{self._name}-push")
                try:
                    await self._receive_loop()
                finally:
                    pusher.cancel()
        except* Exception:
            logger.exception("websocket %s failed", self._name)
            async with self._lock:
                with contextlib.suppress(*_CLOSED):
                    await self._ws.close(code=1011)

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send a frame; False when the connection is gone."""
        async with self._lock:
            return await self._send_locked(frame)

    async def _send_locked(self, frame: dict[str, Any]) -> bool:
        try:
            await self._ws.send_text(json_bytes(frame).decode())
        except _CLOSED:
            return False
        self._hub.frames_sent += 1
        return True

    async def _snapshot(self) -> bool:
        """Send the latest value of every tag under the prefix.

        The historian holds committed points only; a point this client was already pushed
        may be newer than the committed one, and then the pushed one is repeated instead.
        """
        async with self._lock:
            table = await self._hub.historian.latest()
            newest: dict[str, tuple[int, dict[str, Any]]] = {
                path: (t, row)
                for path, t, row in zip(
                    table.column("path").to_pylist(),
                    table.column("ts").cast(pa.int64()).to_pylist(),
                    latest_rows(table, None, sort=False),
                    strict=True,
                )
                if path_under(path, self._prefix) and allowed(self._principal, path)
            }
            for path, row in self._rows.items():
                if not path_under(path, self._prefix):
                    continue
                t = self._sent[path]
                if path not in newest or t > newest[path][0]:
                    newest[path] = (t, row)
            for path, (t, row) in newest.items():
                self._sent[path] = t
                self._rows[path] = row
            values = [newest[path][1] for path in sorted(newest)]
            return await self._send_locked({"type": "snapshot", "values": values})

    async def _push_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_push = -math.inf
        while True:
            pending = [await self._sub.get()]
            wait = last_push + self._hub.interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            pending.extend(self._sub.drain())
            last_push = loop.time()
            batches = [item.batch for item in pending]
            async with self._lock:
                values = coalesce_latest(
                    batches, prefix=self._prefix, sent=self._sent, principal=self._principal
                )
                if not values:
                    continue
                for row in values:
                    self._rows[row["path"]] = row
                if not await self._send_locked({"type": "values", "values": values}):
                    return

    async def _receive_loop(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._error("body", "send JSON text frames, not binary")
                continue
            if len(text) > _MAX_MESSAGE_CHARS:
                await self._error("body", f"messages are limited to {_MAX_MESSAGE_CHARS} chars")
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as err:
            await self._error("body", f"not valid JSON: {err}")
            return
        if not isinstance(message, dict):
            await self._error("body", "a message must be a JSON object with a type")
            return
        kind = message.get("type")
        if kind == "ping":
            await self._send({"type": "pong"})
        elif kind == "subscribe":
            prefix = message.get("prefix")
            if prefix is not None and not isinstance(prefix, str):
                await self._error("prefix", "prefix must be a string or null")
                return
            try:
                self._prefix = normalise_prefix(prefix)
            except PayloadError as err:
                await self._error(err.field, err.message)
                return
            await self._snapshot()
        else:
            await self._error("type", f"unknown message type {kind!r:.40}; use subscribe or ping")

    async def _error(self, field: str, message: str) -> None:
        await self._send(
            {
                "type": "error",
                "error": {"code": "invalid_message", "field": field, "message": message},
            }
        )


@router.websocket("/api/v1/ws", name="live_values", dependencies=[READ])
async def live_values(websocket: WebSocket) -> None:
    """Stream live values (see the module docstring for the protocol), only of the tags
    within the user's sites."""
    principal = await principal_of(websocket)
    await get_context(websocket).hub.serve(websocket, principal)
