"""The edge's /healthz and /metrics, its status reports, and fail-stop through the uplink."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopfloor.edge.buffer import DurableOutbox, OutboxFailed, SegmentLog
from shopfloor.edge.buffer.quarantine import Quarantine
from shopfloor.edge.health import EdgeMonitor, render_metrics
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.http import HttpTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.model import PointBatch
from shopfloor.testing.auth import grant
from shopfloor.testing.processes import free_port

from .conftest import EDGE_TOKEN, PlatformFactory, serve_app

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"
SAMPLE = re.compile(r'^(shopfloor_edge_[a-z0-9_]+)\{([a-z]+="[^"]*"(,[a-z]+="[^"]*")*)\} (\S+)$')


def uplink_to(tmp_path: Path, url: str) -> OutboxUplink:
    transport = HttpTransport(url, edge_id="edge-h", timeout_s=2, token=EDGE_TOKEN)
    return OutboxUplink(
        DurableOutbox(SegmentLog(tmp_path / "outbox"), max_bytes=10_000_000),
        transport,
        edge_id="edge-h",
        quarantine=Quarantine(tmp_path / "outbox" / "quarantine"),
        options=SenderOptions(retry=(0.05, 0.2)),
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Check every line of the exposition and return ``name{labels}`` → value."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[f"{match.group(1)}{{{match.group(2)}}}"] = float(match.group(4))
    return samples


async def test_healthz_and_metrics_show_the_outbox(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # no platform: everything stays in the outbox
    uplink = uplink_to(tmp_path, dead)
    await uplink.start()
    for k in range(7):
        await uplink.send(
            PointBatch.from_points([(TAG, T0 + k * 100 + i, 1.0, 0) for i in range(10 + k)])
        )
    rows = [{"name": "plc-1", "kind": "modbus", "state": "active", "reads": 5, "points": 50}]
    monitor = EdgeMonitor(uplink, connectors=lambda: rows, port=0)
    await monitor.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{monitor.port}") as client:
            health = (await client.get("/healthz")).json()
            metrics = await client.get("/metrics")
    finally:
        await monitor.stop()
        await uplink.close()
    expected_points = sum(10 + k for k in range(7))
    assert health["edge"] == "edge-h"
    assert health["buffer"]["batches"] == 7
    assert health["buffer"]["points"] == expected_points
    assert health["buffer"]["policy"] == "drop-oldest"
    assert health["connectors"] == rows
    assert health["state"] == "degraded", "the platform is unreachable"
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(metrics.text)
    assert samples['shopfloor_edge_buffer_batches{edge="edge-h"}'] == 7
    assert samples['shopfloor_edge_buffer_points{edge="edge-h"}'] == expected_points
    assert samples['shopfloor_edge_buffer_appended_points_total{edge="edge-h"}'] == expected_points
    assert samples['shopfloor_edge_uplink_down{edge="edge-h"}'] == 1
    assert (
        samples['shopfloor_edge_connector_up{edge="edge-h",connector="plc-1",kind="modbus"}'] == 1
    )
    assert samples['shopfloor_edge_up{edge="edge-h"}'] == 1


def test_metric_labels_are_escaped() -> None:
    text = render_metrics(
        {"edge": 'a"b\\c', "connectors": [{"name": "x\ny", "kind": "k", "state": "active"}]}
    )
    assert 'edge="a\\"b\\\\c"' in text
    assert 'connector="x\\ny"' in text


async def test_status_reports_reach_the_platform_with_its_skew(
    tmp_path: Path, platform: PlatformFactory
) -> None:
    async with platform() as server:
        uplink = uplink_to(tmp_path, server.url)
        await uplink.start()
        await uplink.send(PointBatch.from_points([(TAG, T0, 1.0, 0)]))
        transport = uplink.transport
        assert isinstance(transport, HttpTransport)
        monitor = EdgeMonitor(uplink, put_status=transport.put_status, port=None)
        assert monitor.reporter is not None
        answer = await monitor.reporter.report_once()
        assert answer.committed, answer.detail
        assert isinstance(monitor.reporter.skew_s, float)
        assert abs(monitor.reporter.skew_s) < 60, "same machine, same clock"
        assert monitor.status()["clock_skew_s"] == monitor.reporter.skew_s
        async with httpx.AsyncClient(base_url=server.url, headers=grant(server.app)) as client:
            edges = (await client.get("/api/v1/edges")).json()
        await uplink.close()
    (row,) = [e for e in edges["edges"] if e["edge"] == "edge-h"]
    assert row["status"]["buffer"]["policy"] == "drop-oldest"


async def test_an_older_platform_without_status_endpoint_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.health")

    async def ingest(request: Request) -> Response:
        return JSONResponse({"accepted": 1})

    app = Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])
    async with serve_app(app) as url:
        uplink = uplink_to(tmp_path, url)
        transport = uplink.transport
        assert isinstance(transport, HttpTransport)
        monitor = EdgeMonitor(uplink, put_status=transport.put_status, port=None)
        assert monitor.reporter is not None
        answers = [await monitor.reporter.report_once() for _ in range(3)]
        await uplink.close()
    assert [a.status for a in answers] == [404, 404, 404]
    assert caplog.text.count("does not take edge status reports") == 1


async def test_an_fsync_failure_stops_the_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopfloor.edge.buffer import segments

    uplink = uplink_to(tmp_path, f"http://127.0.0.1:{free_port()}")
    await uplink.start()
    await uplink.send(PointBatch.from_points([(TAG, T0, 1.0, 0)]))

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(segments.os, "fdatasync", broken)
    waiter = asyncio.create_task(uplink.wait_failed())
    with pytest.raises(OutboxFailed):
        await uplink.send(PointBatch.from_points([(TAG, T0 + 1, 1.0, 0)]))
    error = await asyncio.wait_for(waiter, 5)
    assert isinstance(error, OutboxFailed)
    with pytest.raises(OutboxFailed):  # no retry: every later send fails at once
        await uplink.send(PointBatch.from_points([(TAG, T0 + 2, 1.0, 0)]))
    monitor = EdgeMonitor(uplink, port=0)
    await monitor.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{monitor.port}") as client:
            answer = await client.get("/healthz")
    finally:
        await monitor.stop()
        monkeypatch.undo()
        await uplink.close()
    assert answer.status_code == 503
    assert answer.json()["state"] == "failed"
