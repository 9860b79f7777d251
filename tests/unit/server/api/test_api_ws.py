"""The live-values websocket (and a streamed upload), against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from shopfloor.model import PointBatch
from shopfloor.server.api.ws import coalesce_latest

if TYPE_CHECKING:
    from conftest import RunningServer

MakeServer = Callable[..., Awaitable["RunningServer"]]

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SEC = 1_000_000_000


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):  # a guard against hanging, not a timing assertion
        frame: dict[str, Any] = json.loads(await ws.recv())
        return frame


async def values_until(ws: ClientConnection, path: str, value: float) -> list[dict[str, Any]]:
    """Collect values frames until one carries ``value`` for ``path``."""
    frames = []
    while True:
        frame = await recv(ws)
        assert frame["type"] == "values", frame
        frames.append(frame)
        if any(v["path"] == path and v["value"] == value for v in frame["values"]):
            return frames


def open_ws(server: RunningServer, **kwargs: Any) -> Any:
    return connect(
        server.ws_url, proxy=None, open_timeout=10, additional_headers=server.headers, **kwargs
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - polling state owned by others
            await asyncio.sleep(0.02)


async def test_snapshot_then_pushed_values(make_server: MakeServer) -> None:
    server = await make_server()
    await server.stack.ingest(PointBatch.from_points([("acme/p1/a", ns(T0), 1.0, 0)]))
    async with open_ws(server) as ws:
        snapshot = await recv(ws)
        assert snapshot == {
            "type": "snapshot",
            "values": [
                {"path": "acme/p1/a", "ts": iso(T0), "value": 1.0, "quality": 0, "text": None}
            ],
        }
        later = T0 + timedelta(seconds=1)
        await server.stack.ingestor.ingest(
            PointBatch.from_points(
                [("acme/p1/a", ns(later), 2.0, 0), ("acme/p1/b", ns(later), "ON", 0)]
            ),
            source="test",
        )
        frames = await values_until(ws, "acme/p1/a", 2.0)
        pushed = {v["path"]: v for f in frames for v in f["values"]}
        assert pushed["acme/p1/a"] == {
            "path": "acme/p1/a",
            "ts": iso(later),
            "value": 2.0,
            "quality": 0,
            "text": None,
        }
        assert pushed["acme/p1/b"]["text"] == "ON"
        assert pushed["acme/p1/b"]["value"] is None


async def test_subscribe_filters_by_prefix(make_server: MakeServer) -> None:
    server = await make_server()
    t = ns(T0)
    await server.stack.ingest(
        PointBatch.from_points([("acme/p1/a", t, 1.0, 0), ("acme/p2/b", t, 1.0, 0)])
    )
    async with open_ws(server) as ws:
        assert len((await recv(ws))["values"]) == 2
        await ws.send(json.dumps({"type": "subscribe", "prefix": "acme/p1"}))
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot"
        assert [v["path"] for v in snapshot["values"]] == ["acme/p1/a"]
        for i in range(1, 4):
            await server.stack.ingestor.ingest(
                PointBatch.from_points(
                    [
                        ("acme/p2/b", t + i * SEC, float(i), 0),
                        ("acme/p1/a", t + i * SEC, float(i), 0),
                    ]
                ),
                source="test",
            )
        frames = await values_until(ws, "acme/p1/a", 3.0)
        assert {v["path"] for f in frames for v in f["values"]} == {"acme/p1/a"}
        for frame in frames:  # coalesced: one entry per tag per frame
            paths = [v["path"] for v in frame["values"]]
            assert len(paths) == len(set(paths))


async def test_resubscribe_snapshot_never_goes_back_to_older_committed_values(
    make_server: MakeServer,
) -> None:
    # The historian commits only when closed: pushed values are newer than committed ones.
    server = await make_server(flush_interval_s=3600)
    t = ns(T0)
    await server.stack.ingest(PointBatch.from_points([("acme/p1/a", t, 1.0, 0)]))
    async with open_ws(server) as ws:
        assert [v["value"] for v in (await recv(ws))["values"]] == [1.0]
        await server.stack.ingestor.ingest(
            PointBatch.from_points([("acme/p1/a", t + SEC, 2.0, 0)]), source="test"
        )
        await values_until(ws, "acme/p1/a", 2.0)
        assert (await server.stack.historian.latest()).column("value").to_pylist() == [1.0]
        await ws.send(json.dumps({"type": "subscribe", "prefix": "acme/p1"}))
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot"
        assert [(v["path"], v["value"]) for v in snapshot["values"]] == [("acme/p1/a", 2.0)]


async def test_bad_messages_get_error_frames_and_the_connection_lives(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    async with open_ws(server) as ws:
        await recv(ws)
        for message, field in [
            ("not json", "body"),
            ("[1, 2]", "body"),
            (json.dumps({"type": "unsubscribe"}), "type"),
            (json.dumps({"type": "subscribe", "prefix": 5}), "prefix"),
            (json.dumps({"type": "subscribe", "prefix": "a//b"}), "prefix"),
            (b"\x00\x01", "body"),
        ]:
            await ws.send(message)
            frame = await recv(ws)
            assert frame["type"] == "error", frame
            assert frame["error"]["field"] == field
            assert frame["error"]["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    assert health.status_code == 200


async def test_client_that_never_reads_does_not_block_ingest(make_server: MakeServer) -> None:
    # A long push interval holds the pusher asleep, so the client's queue of 4 must overflow.
    server = await make_server(live_maxsize=4, ws_interval_s=60)
    stack = server.stack
    async with open_ws(server, max_queue=1) as ws:
        await recv(ws)  # the snapshot; from now on this client reads nothing
        await wait_for(lambda: stack.live.subscriber_count == 1)
        tags = [f"acme/p1/t{i}" for i in range(50)]
        n = 300
        for i in range(n):
            await stack.ingestor.ingest(
                PointBatch.from_columns(
                    tags, np.arange(50), np.full(50, ns(T0) + i * SEC), np.full(50, float(i))
                ),
                source="test",
            )
        assert stack.ingestor.stats().batches == n
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{server.port}/healthz")).json()
        # The pusher can hold at most two batches and the queue four; the rest are dropped.
        assert n - 4 - 2 <= health["websocket"]["dropped_batches"] <= n
        assert health["websocket"]["clients"] == 1
    await wait_for(lambda: stack.live.subscriber_count == 0)
    assert stack.app.state.shopfloor.hub.stats()["clients"] == 0
    assert stack.app.state.shopfloor.hub.stats()["dropped_batches"] >= n - 6


async def test_vanished_client_is_cleaned_up(make_server: MakeServer) -> None:
    server = await make_server()
    ws = await open_ws(server)
    await recv(ws)
    await wait_for(lambda: server.stack.live.subscriber_count == 1)
    ws.transport.abort()  # gone without a close handshake
    await wait_for(lambda: server.stack.live.subscriber_count == 0)
    await server.stack.ingestor.ingest(
        PointBatch.from_points([("acme/p1/a", ns(T0), 1.0, 0)]), source="test"
    )
    assert server.stack.app.state.shopfloor.hub.stats()["clients"] == 0


# ----------------------------------------------------------------------------- coalescing
def _expected_latest(batches: list[PointBatch]) -> dict[str, tuple[int, float]]:
    """Independent computation: a plain loop keeping the largest ts per tag, later wins ties."""
    best: dict[str, tuple[int, float]] = {}
    for batch in batches:
        for path, t, v in zip(batch.paths(), batch.ts.tolist(), batch.value.tolist(), strict=True):
            if path not in best or t >= best[path][0]:
                best[path] = (t, v)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_coalesce_picks_newest_point_per_tag(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tags = [f"acme/p{i % 3}/t{i}" for i in range(12)]
    batches = [
        PointBatch.from_columns(
            tags,
            rng.integers(0, len(tags), 40),
            ns(T0) + rng.integers(0, 20, 40) * SEC,  # many equal timestamps: ties matter
            rng.normal(size=40),
        )
        for _ in range(4)
    ]
    rows = coalesce_latest(batches, prefix=None, sent={})
    expected = _expected_latest(batches)
    assert {r["path"]: (r["ts"], r["value"]) for r in rows} == {
        p: (iso(datetime.fromtimestamp(t / 1e9, UTC)), v) for p, (t, v) in expected.items()
    }
    narrowed = coalesce_latest(batches, prefix="acme/p1", sent={})
    assert {r["path"] for r in narrowed} == {p for p in expected if p.startswith("acme/p1/")}


def test_coalesce_never_moves_a_tag_backwards() -> None:
    sent: dict[str, int] = {}
    new = PointBatch.from_points([("a/x", ns(T0) + 10 * SEC, 10.0, 0)])
    assert [r["value"] for r in coalesce_latest([new], prefix=None, sent=sent)] == [10.0]
    backlog = PointBatch.from_points(
        [("a/x", ns(T0) + 5 * SEC, 5.0, 0), ("a/y", ns(T0), math.nan, 0)]
    )
    rows = coalesce_latest([backlog], prefix=None, sent=sent)
    assert [r["path"] for r in rows] == ["a/y"]  # a/x at 5 s is older than the 10 s sent
    assert math.isnan(rows[0]["value"])  # shown as null once serialised


async def test_real_server_refuses_a_streamed_oversize_body(make_server: MakeServer) -> None:
    server = await make_server(max_body_bytes=64 * 1024)

    async def chunks() -> Any:  # chunked upload without Content-Length, 1 MiB in all
        for _ in range(64):
            yield b" " * (16 * 1024)

    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, headers=server.headers) as http:
        response = await http.post(
            "/api/v1/ingest", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["field"] == "body"
        assert (await http.get("/healthz")).status_code == 200
