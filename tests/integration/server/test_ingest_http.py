"""POST /api/v1/ingest and the edges API over real HTTP, against a DuckDB file historian."""

from __future__ import annotations

import asyncio
from typing import Any

import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pytest

from shopfloor.model import PointBatch, Quality, now_ns
from shopfloor.model.points import ARROW_SCHEMA
from shopfloor.server.ingest import EdgeRegistry
from shopfloor.wire import ARROW_MEDIA_TYPE, compress, encode_arrow

from .conftest import MakePlatform, Platform

SEC = 10**9
TAG = "acme/plant-1/press/line-1/p1/force"
ARROW = {"content-type": ARROW_MEDIA_TYPE}


def batch(seq: int, n: int = 1000, *, t0: int | None = None) -> PointBatch:
    """``n`` points whose values all equal ``seq``, at distinct times."""
    start = (now_ns() - 3600 * SEC if t0 is None else t0) + seq * n * 10**6
    return PointBatch.from_columns(
        [TAG], np.zeros(n), start + np.arange(n) * 10**6, np.full(n, seq)
    )


async def post(
    platform: Platform, seq: int, body: bytes | None = None, **headers: str
) -> httpx.Response:
    content = encode_arrow(batch(seq), edge="edge-1", seq=seq) if body is None else body
    return await platform.client.post("/api/v1/ingest", content=content, headers=ARROW | headers)


async def series_counts(platform: Platform) -> dict[int, int]:
    """Points per seq as the REST API shows them (the values encode the seq)."""
    response = await platform.client.get(
        f"/api/v1/tags/{TAG}/series", params={"start": "-30d", "end": "+30d", "limit": 10**6}
    )
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    values, counts = np.unique(response.json()["columns"]["value"], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


async def test_answer_means_committed_and_a_resend_is_a_duplicate(
    make_platform: MakePlatform,
) -> None:
    platform = await make_platform()  # flush interval 60 s: only the ack path commits now
    response = await post(platform, 1)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1000, "edge": "edge-1", "seq": 1, "duplicate": False}
    assert await series_counts(platform) == {1: 1000}  # visible the moment the answer is
    again = await post(platform, 1)
    assert again.json() == {"accepted": 0, "edge": "edge-1", "seq": 1, "duplicate": True}
    assert await series_counts(platform) == {1: 1000}


async def test_concurrent_resends_store_every_batch_once(make_platform: MakePlatform) -> None:
    platform = await make_platform()
    seqs = [s for s in range(1, 9) for _ in range(4)]
    np.random.default_rng(2).shuffle(seqs)
    answers = await asyncio.gather(*(post(platform, s) for s in seqs))
    assert all(a.status_code == 200 for a in answers)
    fresh = sorted(a.json()["seq"] for a in answers if not a.json()["duplicate"])
    assert fresh == list(range(1, 9))
    assert await series_counts(platform) == {s: 1000 for s in range(1, 9)}
    edges = (await platform.client.get("/api/v1/edges")).json()["edges"]
    assert [(e["edge"], e["batches"], e["points"], e["duplicates"]) for e in edges] == [
        ("edge-1", 8, 8000, 24)
    ]


async def test_busy_historian_answers_429_with_retry_after(make_platform: MakePlatform) -> None:
    platform = await make_platform(ingestor={"max_pending_points": 500, "retry_after_s": 1.5})
    # an in-process edge queues 600 points; with a 60 s flush interval they stay pending
    await platform.ingestor.ingest(batch(0, 600), source="local")
    refused = await post(platform, 1)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    error = refused.json()["error"]
    assert error["code"] == "too_many_requests"
    assert "600 points" in error["message"]
    assert await series_counts(platform) == {}  # nothing stored, not even queued
    await platform.historian.flush()
    assert (await post(platform, 1)).status_code == 200
    assert await series_counts(platform) == {0: 600, 1: 1000}


async def test_closing_historian_answers_503_with_retry_after(make_platform: MakePlatform) -> None:
    platform = await make_platform()
    await platform.historian.close()
    refused = await post(platform, 1)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "unavailable"


async def test_failed_commit_answers_503_and_the_resend_is_stored(
    make_platform: MakePlatform,
) -> None:
    platform = await make_platform()
    assert (await post(platform, 1)).status_code == 200
    other = duckdb.connect(str(platform.db), config={"memory_limit": "512MB"})
    try:
        other.begin()
        other.execute("UPDATE latest SET value = -1")  # holds the row the commit must update
        refused = await post(platform, 2)
        other.rollback()
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert other.execute("SELECT seq FROM ingest_ledger").fetchall() == [(1,)]
    finally:
        other.close()
    assert await series_counts(platform) == {1: 1000}
    assert (await post(platform, 2)).json()["duplicate"] is False
    assert await series_counts(platform) == {1: 1000, 2: 1000}


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
async def test_compressed_bodies_are_accepted(make_platform: MakePlatform, encoding: str) -> None:
    platform = await make_platform()
    body = compress(encode_arrow(batch(1), edge="edge-1", seq=1), encoding)
    response = await post(platform, 1, body, **{"content-encoding": encoding})
    assert response.status_code == 200, response.text
    assert await series_counts(platform) == {1: 1000}


async def test_decompression_bomb_and_unknown_encoding_are_refused(
    make_platform: MakePlatform,
) -> None:
    platform = await make_platform(max_body_bytes=1 << 20)
    bomb = compress(bytes(64 << 20), "zstd")  # 64 MiB of zeros in a few kB
    response = await post(platform, 1, bomb, **{"content-encoding": "zstd"})
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "body"
    body = encode_arrow(batch(1), edge="edge-1", seq=1)
    response = await post(platform, 1, body, **{"content-encoding": "br"})
    assert response.status_code == 415
    assert response.json()["error"]["field"] == "content-encoding"
    assert await series_counts(platform) == {}


async def test_skewed_edge_clock_is_measured_and_its_future_points_flagged(
    make_platform: MakePlatform,
) -> None:
    """An edge whose clock runs 3 h ahead: nothing lost, points flagged, skew reported."""
    platform = await make_platform()
    ahead = 3 * 3600 * SEC
    points = batch(1, 100, t0=now_ns() + ahead)
    body = encode_arrow(points, edge="edge-1", seq=1)
    response = await post(platform, 1, body, **{"x-shopfloor-edge-time": str(now_ns() + ahead)})
    assert response.json() == {"accepted": 100, "edge": "edge-1", "seq": 1, "duplicate": False}
    stored = (
        await platform.client.get(
            f"/api/v1/tags/{TAG}/series", params={"start": "-1d", "end": "+1d"}
        )
    ).json()["columns"]
    assert stored["quality"] == [int(Quality.UNCERTAIN)] * 100
    assert len(set(stored["ts"])) == 100  # own timestamps, not "now"
    (edge,) = (await platform.client.get("/api/v1/edges")).json()["edges"]
    assert edge["future_points"] == 100
    assert edge["skew_s"] == pytest.approx(-3 * 3600, abs=5)


STATUS: dict[str, Any] = {
    "edge_time_ns": 0,  # set per request
    "buffer": {
        "batches": 12,
        "points": 48000,
        "bytes": 1048576,
        "oldest_age_s": 3600.0,
        "hours_left": 71.5,
        "dropped_points": 0,
        "quarantined_batches": 0,
        "policy": "drop-oldest",
        "full": False,
    },
    "uplink": {"send_rate_pps": 1500.0, "ack_latency_ms_p50": 40.0, "reconnects": 3},
    "connectors": [
        {"name": "press-plc", "kind": "modbus", "state": "active", "reads": 10, "extra": [1]}
    ],
}


async def test_status_is_stored_and_listed_with_skew(make_platform: MakePlatform) -> None:
    platform = await make_platform()
    behind = 42 * SEC
    status = STATUS | {"edge_time_ns": now_ns() - behind}
    response = await platform.client.put("/api/v1/edges/edge-7/status", json=status)
    assert response.status_code == 200, response.text
    assert response.json()["skew_s"] == pytest.approx(42, abs=5)
    assert (await post(platform, 1)).status_code == 200  # another edge sends a batch
    edges = {e["edge"]: e for e in (await platform.client.get("/api/v1/edges")).json()["edges"]}
    assert sorted(edges) == ["edge-1", "edge-7"]
    assert edges["edge-7"]["status"] == status  # kept as sent, unknown connector keys too
    assert edges["edge-7"]["batches"] == 0
    assert edges["edge-7"]["skew_s"] == response.json()["skew_s"]
    assert edges["edge-1"]["status"] is None
    assert (edges["edge-1"]["batches"], edges["edge-1"]["last_seq"]) == (1, 1)
    assert edges["edge-1"]["last_seen"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/edges/edge-7/status", STATUS | {"surprise": 1}, "surprise"),
        ("/api/v1/edges/edge-7/status", STATUS | {"buffer": {"points": -1}}, "buffer.points"),
        ("/api/v1/edges/edge-7/status", {"buffer": {}, "uplink": {}}, "edge_time_ns"),
        ("/api/v1/edges/bad%20id/status", STATUS, "edge_id"),
    ],
)
async def test_invalid_status_is_refused_with_the_field(
    make_platform: MakePlatform, path: str, body: dict[str, Any], field: str
) -> None:
    platform = await make_platform()
    response = await platform.client.put(path, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert (await platform.client.get("/api/v1/edges")).json()["edges"] == []


async def test_edges_registry_is_bounded(make_platform: MakePlatform) -> None:
    platform = await make_platform(ingestor={"edges": EdgeRegistry(max_edges=2)})
    for i in range(4):
        status = STATUS | {"edge_time_ns": now_ns()}
        assert (await platform.client.put(f"/api/v1/edges/e{i}/status", json=status)).is_success
    listed = (await platform.client.get("/api/v1/edges")).json()
    assert [e["edge"] for e in listed["edges"]] == ["e2", "e3"]
    assert listed["evicted"] == 2


async def test_openapi_documents_the_edge_contract(make_platform: MakePlatform) -> None:
    platform = await make_platform()
    spec = (await platform.client.get("/openapi.json")).json()
    ingest = spec["paths"]["/api/v1/ingest"]["post"]
    assert {"200", "413", "415", "422", "429", "503"} <= set(ingest["responses"])
    assert "/api/v1/edges/{edge_id}/status" in spec["paths"]
    assert "EdgeStatusIn" in spec["components"]["schemas"]


def coalesced(
    seqs: list[int], *, listed: str | None = None, bad_tag_in: int | None = None
) -> bytes:
    """Several outbox batches in one stream: each record batch carries its own seq."""
    metadata = {
        b"version": b"1",
        b"edge": b"edge-1",
        b"seq": b"%d" % seqs[0],
        b"historical": b"1",
        b"seqs": (listed or ",".join(map(str, seqs))).encode(),
    }
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ARROW_SCHEMA.with_metadata(metadata)) as writer:
        for seq in seqs:
            part = batch(seq)
            if seq == bad_tag_in:
                part = PointBatch.from_points([("a/#/b", now_ns(), 1.0, 0)])
            writer.write_batch(part.to_arrow(), custom_metadata={b"seq": b"%d" % seq})
    data: bytes = sink.getvalue().to_pybytes()
    return data


async def test_coalesced_backlog_batches_are_each_stored_once(make_platform: MakePlatform) -> None:
    platform = await make_platform()
    first = await post(platform, 1, coalesced([1, 2, 3]))
    assert first.json() == {"accepted": 3000, "edge": "edge-1", "seq": 1, "duplicate": False}
    regrouped = await post(platform, 2, coalesced([2, 3, 4]))  # framed differently on resend
    assert regrouped.json() == {"accepted": 1000, "edge": "edge-1", "seq": 2, "duplicate": False}
    again = await post(platform, 3)
    assert again.json()["duplicate"] is True
    assert await series_counts(platform) == {1: 1000, 2: 1000, 3: 1000, 4: 1000}
    edges = (await platform.client.get("/api/v1/edges")).json()["edges"]
    assert (edges[0]["batches"], edges[0]["last_seq"], edges[0]["gaps"]) == (4, 4, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (coalesced([5, 6], listed="5,7"), "seqs"),
        (coalesced([5, 6, 7], bad_tag_in=7), "tag"),
    ],
)
async def test_a_bad_coalesced_stream_stores_none_of_its_parts(
    make_platform: MakePlatform, body: bytes, field: str
) -> None:
    platform = await make_platform()
    response = await post(platform, 5, body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert await series_counts(platform) == {}
