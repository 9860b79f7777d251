"""Scaled out, every API server lists every edge: an ingest worker takes one edge's batch
and status through the broker, an API server takes another's over HTTP, and a third
process — another API server — lists both with their status and figures from the shared
PostgreSQL.

Real processes' parts in this process for speed (an `IngestWorker`, two `Server`s), a
throwaway Mosquitto and PostgreSQL; nothing is shared but the database and the broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.config import ShopfloorConfig
from shopfloor.model import PointBatch, now_ns
from shopfloor.server.app import Server
from shopfloor.server.ingest.pg_edges import EdgeRow, PgEdgeStore
from shopfloor.server.worker import IngestWorker
from shopfloor.testing.auth import grant, shared_secret_key
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

SEC = 10**9


def _config(data: Path, *, dsn: str, broker_port: int) -> ShopfloorConfig:
    return ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True, "flush_interval_s": 0.05},
            "security": {"secret_key_file": str(shared_secret_key(data.parent))},
            "ingest": {
                "mqtt": {"port": broker_port, "shared_group": "ingest", "session_expiry": "0s"}
            },
        }
    ).resolve_paths(data)


@asynccontextmanager
async def _api_server(config: ShopfloorConfig) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=grant(server.app)
        ) as client:
            yield server, client
    finally:
        stop.set()
        await serving
        await server.close()


def _batch(tag: str, n: int) -> PointBatch:
    t0 = now_ns() - 60 * SEC
    return PointBatch.from_columns([tag], np.zeros(n), t0 + np.arange(n) * 10**6, np.ones(n))


def _status(outbox: int) -> dict[str, Any]:
    return {
        "edge_time_ns": now_ns(),
        "buffer": {"batches": outbox, "points": outbox * 10},
        "uplink": {"reconnects": 0},
        "connectors": [{"name": "plc", "state": "up"}],
    }


async def _until(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await probe():  # noqa: ASYNC110 - state in other processes' table
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


async def test_an_api_server_lists_the_edges_other_processes_took(
    tmp_path: Path, dsn: str, mosquitto: Mosquitto
) -> None:
    config = _config(tmp_path / "worker", dsn=dsn, broker_port=mosquitto.port)
    worker = IngestWorker(config, client_id="w-a")
    await worker.start()
    try:
        async with (
            _api_server(_config(tmp_path / "a", dsn=dsn, broker_port=mosquitto.port)) as (_, a),
            _api_server(_config(tmp_path / "b", dsn=dsn, broker_port=mosquitto.port)) as (_, b),
        ):
            # edge-w goes through the broker to the worker: one batch of 40, a status
            settings = config.ingest.mqtt
            async with aiomqtt.Client(
                mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
            ) as edge:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = [("seq", "1"), ("edge", "edge-w")]
                await edge.publish(
                    settings.topic("edge-w", "batches"),
                    encode_arrow(_batch("acme/p/a/l/c/w/t", 40), edge="edge-w", seq=1),
                    qos=1,
                    properties=properties,
                )
                await edge.publish(
                    settings.topic("edge-w", "status"),
                    json.dumps(_status(3)).encode(),
                    qos=1,
                )
            # edge-h posts to API server A: two batches of 25, one sent twice, a status
            for seq in (1, 2, 2):
                body = encode_arrow(_batch("acme/p/a/l/c/h/t", 25), edge="edge-h", seq=seq)
                r = await a.post(
                    "/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE}
                )
                assert r.status_code == 200, r.text
            r = await a.put("/api/v1/edges/edge-h/status", json=_status(7))
            assert r.status_code == 200, r.text

            async def listed() -> dict[str, Any]:
                r = await b.get("/api/v1/edges")
                assert r.status_code == 200, r.text
                return {e["edge"]: e for e in r.json()["edges"]}

            async def both() -> bool:
                edges = await listed()
                return all(
                    e is not None and e["batches"] == n and e["status"] is not None
                    for e, n in ((edges.get("edge-w"), 1), (edges.get("edge-h"), 2))
                )

            await _until("B lists both edges with their figures", both)
            edges = await listed()
            assert sorted(edges) == ["edge-h", "edge-w"]
            w, h = edges["edge-w"], edges["edge-h"]
            assert (w["batches"], w["points"], w["duplicates"], w["last_seq"]) == (1, 40, 0, 1)
            assert (h["batches"], h["points"], h["duplicates"], h["last_seq"]) == (2, 50, 1, 2)
            assert w["status"]["buffer"]["batches"] == 3
            assert h["status"]["buffer"]["batches"] == 7
            assert h["status"]["connectors"] == [{"name": "plc", "kind": None, "state": "up"}]
            for e in (w, h):
                assert e["last_seen"] is not None
                assert e["status_at"] is not None
                assert e["skew_s"] is not None
            # A, which took edge-h itself, shows the same as B
            again = (await a.get("/api/v1/edges")).json()["edges"]
            assert {e["edge"]: e["points"] for e in again} == {"edge-h": 50, "edge-w": 40}
    finally:
        await worker.close()


async def test_the_table_keeps_one_row_per_edge_and_forgets_the_edges_gone(dsn: str) -> None:
    store = PgEdgeStore(dsn, "public")
    try:
        now = now_ns()
        first = EdgeRow("e1", now, {"n": 1}, now, 0.5, batches=2, points=20, stream="e1")
        await asyncio.to_thread(store.upsert, [first])
        first = dataclasses.replace(first, last_seq=2)
        # another process's increase and an older status: counters add, the newer status stays
        older = EdgeRow("e1", now - SEC, {"n": 0}, now - SEC, batches=3, points=30, last_seq=5)
        later = EdgeRow("e1", now, stream="e1", last_seq=5, last_commit_ns=now)
        await asyncio.to_thread(store.upsert, [older])
        await asyncio.to_thread(store.upsert, [later])
        gone = EdgeRow("e0", now - 10 * SEC)
        await asyncio.to_thread(store.upsert, [gone, EdgeRow("e2", now), EdgeRow("e3", now)])
        (row, *_) = await asyncio.to_thread(store.read)
        assert row.edge == "e0"
        rows = {r.edge: r for r in await asyncio.to_thread(store.read)}
        assert (rows["e1"].batches, rows["e1"].points, rows["e1"].last_seq) == (5, 50, 5)
        assert rows["e1"].status == {"n": 1}
        # e0 not heard from for longer than the age limit; beyond 2 edges, the oldest go
        evicted = await asyncio.to_thread(store.prune, older_than_ns=now - 5 * SEC, max_edges=2)
        assert evicted == 1
        assert len(await asyncio.to_thread(store.read)) == 2
    finally:
        store.close()
