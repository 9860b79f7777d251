"""The outbox drained by the sender into the real platform and into fake ones.

Exact counts: every durable batch is in the historian once; the lanes, the historical
flag, Retry-After, quarantine and coalescing behave as docs/outbox.md says.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.buffer import DurableOutbox, SegmentLog
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import Quarantine, list_quarantined, retry_quarantined
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.mapping import TagSpec
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.http import HttpTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.model import PointBatch, TagMeta
from shopfloor.testing.auth import grant
from shopfloor.testing.processes import free_port

from .conftest import EDGE_TOKEN, Features, PlatformFactory, serve_app, stored_ts

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"


class FakeClock:
    """Wall time that can be set; monotonic and sleep stay real."""

    def __init__(self, ns: int = T0) -> None:
        self.ns = ns

    def now_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def points(k: int, n: int = 50, tag: str = TAG) -> PointBatch:
    """Batch ``k``: ``n`` points with timestamps unique across batches."""
    return PointBatch.from_points([(tag, T0 + k * 1000 + i, float(k), 0) for i in range(n)])


def uplink_for(
    tmp_path: Path,
    url: str,
    *,
    compression: str = "zstd",
    options: SenderOptions | None = None,
    clock: FakeClock | None = None,
    name: str = "outbox",
) -> OutboxUplink:
    outbox = DurableOutbox(SegmentLog(tmp_path / name), max_bytes=1 << 30, clock=clock)
    transport = HttpTransport(
        url, edge_id="edge-t", compression=compression, timeout_s=5, token=EDGE_TOKEN
    )
    return OutboxUplink(
        outbox,
        transport,
        edge_id="edge-t",
        quarantine=Quarantine(tmp_path / name / "quarantine"),
        options=options or SenderOptions(retry=(0.05, 0.5)),
        clock=clock,
    )


async def drained(uplink: OutboxUplink, timeout_s: float = 20) -> None:
    async def empty() -> None:
        await uplink.wait_ready()
        while uplink.outbox.stats().batches:  # noqa: ASYNC110 - polling the figure under test
            await asyncio.sleep(0.02)

    await asyncio.wait_for(empty(), timeout_s)


async def test_every_durable_batch_is_stored_once_across_a_platform_restart(
    tmp_path: Path,
    platform: PlatformFactory,
    features: Callable[[str], Awaitable[Features]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.uplink")
    port = free_port()
    uplink = uplink_for(tmp_path, f"http://127.0.0.1:{port}")
    await uplink.start()
    await uplink.announce([TagMeta(TAG, unit="degC")])
    for k in range(60):  # the platform is not there yet: everything waits on disk
        await uplink.send(points(k))
    assert uplink.outbox.stats().batches == 60
    async with platform(port) as server:
        zstd = (await features(server.url)).zstd
        while uplink.outbox.stats().batches > 30:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    # the platform went away mid-drain and comes back on the same data
    for k in range(60, 90):
        await uplink.send(points(k))
    async with platform(port) as server:
        await drained(uplink)
        ts = await stored_ts(server, TAG)
        (meta,) = [t for t in await server.historian.tags() if t.path == TAG]
    await uplink.close()
    expected = np.sort(np.concatenate([points(k).ts for k in range(90)]))
    assert len(ts) == len(expected), f"stored {len(ts)}, durable {len(expected)}"
    np.testing.assert_array_equal(np.sort(ts), expected)
    assert meta.unit == "degC", "tags are announced before the first batch"
    stats = uplink.sender.stats()
    assert stats.reconnects == 2
    assert stats.acked_batches == 90
    assert uplink.outbox.stats().acked_batches == 90
    buffer = uplink.status()["buffer"]  # what /healthz and /metrics show
    assert (buffer["acked_batches"], buffer["acked_points"]) == (90, 90 * 50)
    assert caplog.text.count("platform unreachable") == 2, "one line per outage"
    assert zstd, "the platform reads zstd bodies (Content-Encoding) as the contract says"


async def test_live_batches_go_first_and_the_backlog_is_flagged_historical(
    tmp_path: Path,
) -> None:
    seen: list[tuple[int, bool]] = []

    async def ingest(request: Request) -> Response:
        raw = await request.body()
        assert request.headers["content-encoding"] == "zstd"
        body = pa.CompressedInputStream(pa.BufferReader(raw), "zstd").read()
        meta = pa.ipc.open_stream(body).schema.metadata
        historical = meta[b"historical"] == b"1"
        seqs = meta.get(b"seqs", meta[b"seq"]).split(b",")  # a coalesced request lists all
        seen.extend((int(seq), historical) for seq in seqs)
        return JSONResponse({"accepted": 1, "duplicate": False})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    async with serve_app(app) as url:
        clock = FakeClock()
        uplink = uplink_for(tmp_path, url, clock=clock, options=SenderOptions(window=2))
        await uplink.outbox.open()
        for k in range(20):  # a backlog from an hour ago …
            await uplink.outbox.append(encode_payload(points(k)), points=50)
        clock.ns += 3600 * 10**9
        for k in range(20, 22):  # … and two live batches
            await uplink.outbox.append(encode_payload(points(k)), points=50)
        await uplink.start()
        await drained(uplink)
        await uplink.close()
    first, rest = seen[:2], seen[2:]
    assert sorted(first) == [(21, False), (22, False)], "live values go out first"
    assert sorted(rest) == [(seq, True) for seq in range(1, 21)], "the backlog is historical"
    order = [seq for seq, _ in rest]
    assert all(abs(order[i] - (i + 1)) <= 1 for i in range(20)), f"oldest first: {order}"
    assert uplink.sender.stats().historical_batches == 20


async def test_retry_after_is_honoured_before_the_next_attempt(tmp_path: Path) -> None:
    attempts: list[float] = []

    async def ingest(request: Request) -> Response:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) == 1:
            return Response(status_code=429, headers={"retry-after": "0.4"})
        return JSONResponse({"accepted": 50, "duplicate": False})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    async with serve_app(app) as url:
        uplink = uplink_for(tmp_path, url, compression="none")
        await uplink.start()
        await uplink.send(points(0))
        await drained(uplink)
        await uplink.close()
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.4, "Retry-After wins over the short backoff"
    assert uplink.sender.stats().retry_later == 1


async def test_one_failure_while_later_requests_succeed_is_not_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flapping link: the request that was unlucky goes again at once; the window stays
    open because requests sent after it got through (no probe mode, no backoff)."""
    release_first = asyncio.Event()
    answered: list[int] = []

    async def ingest(request: Request) -> Response:
        meta = pa.ipc.open_stream(await request.body()).schema.metadata
        seq = int(meta[b"seq"])
        if seq == 1 and 1 not in answered:
            answered.append(1)
            await release_first.wait()  # held while the others go through, then fails
            return Response(status_code=502)
        answered.append(seq)
        if len(answered) == 4:
            release_first.set()
        return JSONResponse({"accepted": 50, "duplicate": False})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    caplog.set_level(logging.INFO, logger="shopfloor")
    async with serve_app(app) as url:
        options = SenderOptions(window=4, coalesce_points=0, retry=(30.0, 30.0))
        uplink = uplink_for(tmp_path, url, compression="none", options=options)
        await uplink.start()
        for k in range(12):
            await uplink.send(points(k))
        await drained(uplink, timeout_s=10)  # a 30 s backoff would not fit
        await uplink.close()
    stats = uplink.sender.stats()
    assert (stats.failures, stats.reconnects, stats.down) == (1, 0, False)
    assert stats.acked_batches == 12
    assert answered.count(1) == 2, "the failed batch went again"
    assert "platform unreachable" not in caplog.text


async def test_a_refused_batch_goes_to_quarantine_and_never_blocks_the_rest(
    tmp_path: Path, platform: PlatformFactory
) -> None:
    async with platform() as server:
        options = SenderOptions(window=1, max_refusals=3, requeue_every_s=0.05, retry=(0.05, 0.5))
        uplink = uplink_for(tmp_path, server.url, options=options)
        await uplink.start()
        bad = PointBatch.from_points([("acme//temp", T0, 1.0, 0)])  # an empty path segment
        await uplink.send(points(0))
        await uplink.send(bad)
        for k in range(1, 6):
            await uplink.send(points(k))
        await drained(uplink)
        ts = await stored_ts(server, TAG)
        assert len(ts) == 6 * 50, "the batches behind the bad one were delivered"
        (entry,) = list_quarantined(tmp_path / "outbox")
        assert (entry.seq, entry.points, entry.status, entry.refusals) == (2, 1, 422, 3)
        assert "empty segment" in entry.reason, "the platform's reason is kept"
        assert uplink.sender.stats().refusals == 3
        assert uplink.outbox.stats().quarantined_batches == 1

        assert retry_quarantined(tmp_path / "outbox") == 1  # still bad: back it comes

        def counted() -> bool:  # the copy is written first, then the batch counted
            listed = [q.seq for q in list_quarantined(tmp_path / "outbox")]
            return listed == [8] and uplink.outbox.stats().quarantined_batches == 2

        async def requarantined() -> None:
            while not counted():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(requarantined(), 10)
        await uplink.close()
        assert len(await stored_ts(server, TAG)) == 6 * 50


async def test_coalesced_backlog_is_acked_per_batch_and_a_refusal_splits_it(
    tmp_path: Path,
) -> None:
    """Against a platform applying its ledger per record batch (the coalescing contract)."""
    applied: dict[int, int] = {}
    requests: list[list[int]] = []

    async def ingest(request: Request) -> Response:
        raw = await request.body()
        reader = pa.ipc.open_stream(pa.CompressedInputStream(pa.BufferReader(raw), "zstd").read())
        seqs: list[tuple[int, int]] = []
        while True:
            try:
                record, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            seq = int((custom or reader.schema.metadata)[b"seq"])
            seqs.append((seq, record.num_rows))
        requests.append([seq for seq, _ in seqs])
        if any(seq == 13 for seq, _ in seqs):
            return JSONResponse({"error": {"field": "ts", "message": "bad"}}, status_code=422)
        for seq, rows in seqs:
            applied.setdefault(seq, rows)
        return JSONResponse({"accepted": sum(r for _, r in seqs), "duplicate": False})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    async with serve_app(app) as url:
        clock = FakeClock()
        options = SenderOptions(window=2, coalesce_points=400, max_refusals=2)
        uplink = uplink_for(tmp_path, url, clock=clock, options=options)
        await uplink.outbox.open()
        for k in range(40):
            await uplink.outbox.append(encode_payload(points(k, n=50)), points=50)
        clock.ns += 3600 * 10**9  # all of it is backlog now
        await uplink.start()
        await drained(uplink)
        await uplink.close()
    assert sorted(applied) == [s for s in range(1, 41) if s != 13]
    assert all(rows == 50 for rows in applied.values())
    assert max(len(r) for r in requests) == 8, "400 points per request: 8 batches"
    assert len(requests) < 20, f"coalesced: {len(requests)} requests for 40 batches"
    assert [r for r in requests if 13 in r][-2:] == [[13], [13]], "the culprit is found alone"
    assert [q.seq for q in list_quarantined(tmp_path / "outbox")] == [13]


async def test_replaying_the_whole_outbox_twice_stores_it_once(
    tmp_path: Path, platform: PlatformFactory, features: Callable[[str], Awaitable[Features]]
) -> None:
    async with platform() as server:
        if not (await features(server.url)).ledger:
            pytest.skip("the platform under test has no ingest ledger yet")
        clock = FakeClock()
        uplink = uplink_for(tmp_path, server.url, clock=clock)
        await uplink.outbox.open()
        for k in range(30):
            await uplink.outbox.append(encode_payload(points(k)), points=50)
        await uplink.outbox.close()
        for copy in ("replay-1", "replay-2"):  # the ack state as it was: nothing sent
            shutil.copytree(tmp_path / "outbox", tmp_path / copy)
        duplicates = []
        for name in ("outbox", "replay-1", "replay-2"):
            again = uplink_for(tmp_path, server.url, clock=clock, name=name)
            await again.start()
            await drained(again)
            await again.close()
            duplicates.append(again.sender.stats().duplicates)
        assert duplicates == [0, 30, 30], "the replays were answered as duplicates"
        ts = await stored_ts(server, TAG)
        assert len(ts) == 30 * 50
        assert len(np.unique(ts)) == len(ts)


async def test_a_re_created_outbox_is_not_taken_for_the_one_before(
    tmp_path: Path, platform: PlatformFactory
) -> None:
    """Wiping the outbox restarts its seqs at 1; the platform must store those batches,
    not drop them as duplicates of the old outbox's seqs 1 … n."""
    async with platform() as server:
        for life in range(2):
            uplink = uplink_for(tmp_path, server.url)
            await uplink.start()
            for k in range(5):
                await uplink.send(points(10 * life + k))
            await drained(uplink)
            await uplink.close()
            assert uplink.sender.stats().duplicates == 0
            shutil.rmtree(tmp_path / "outbox")
        ts = await stored_ts(server, TAG)
        async with httpx.AsyncClient(base_url=server.url, headers=grant(server.app)) as client:
            edges = (await client.get("/api/v1/edges")).json()["edges"]
    assert len(ts) == 2 * 5 * 50, "the second outbox's seqs 1-5 were stored too"
    (row,) = [e for e in edges if e["edge"] == "edge-t"]
    assert (row["batches"], row["points"], row["duplicates"]) == (10, 500, 0)
    assert row["last_seq"] == 5


class Counter:
    """A pollable device whose values count up; the edge agent drives it unchanged."""

    kind = "test"
    name = "counter"

    def __init__(self) -> None:
        self.reads = 0

    def tags(self) -> list[TagMeta]:
        return [TagMeta(TAG, unit="parts")]

    def specs(self) -> list[TagSpec]:
        return [TagSpec(TAG)]

    def groups(self) -> list[PollGroup]:
        return [PollGroup("fast", 0.02, (TAG,))]

    async def connect(self) -> None:
        pass

    async def read(self, group: PollGroup) -> PointBatch:
        self.reads += 1
        now = time.time_ns()
        return PointBatch.from_points([(TAG, now, float(self.reads), 0)])

    async def close(self) -> None:
        pass


async def test_the_edge_agent_runs_unchanged_on_the_outbox_uplink(
    tmp_path: Path, platform: PlatformFactory
) -> None:
    port = free_port()
    uplink = uplink_for(tmp_path, f"http://127.0.0.1:{port}")
    await uplink.start()
    device = Counter()
    agent = EdgeAgent([device], uplink)
    await agent.start()  # the platform is down: announcing and reading go on regardless
    while uplink.outbox.stats().points < 20:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    async with platform(port) as server:
        while uplink.sender.stats().acked_points < 40:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await agent.stop()
        await drained(uplink)
        stored = await stored_ts(server, TAG)
        (meta,) = [t for t in await server.historian.tags() if t.path == TAG]
    await uplink.close()
    appended = uplink.outbox.stats().appended_points
    assert len(stored) == appended, "every point the agent handed over is stored once"
    assert len(np.unique(stored)) == len(stored)
    assert meta.unit == "parts"
