"""A real ``Server`` with ``[analytics.anomaly]`` and ``[analytics.rul]`` over the demo plant.

Two hours of the simulated plant are ingested in ten-minute batches through the same path
as an edge's, with a sensor failure and bearing wear injected; the anomaly monitor follows
the live channel, publishes ``<equipment>/anomaly_score`` and raises ``anomaly.<id>``;
the RUL refresh reads the stored history. The figures of the detectors themselves are
measured in ``tests/unit/server/analytics/test_anomaly_simulator.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shopfloor.config import load_config_text
from shopfloor.model import now_ns
from shopfloor.server.app import Server
from shopfloor.simulator import Fault, Plant
from shopfloor.testing.serving import api_client, serving

S = 10**9
MINUTE = 60 * S
CNC1 = "acme/plant-1/machining/line-1/cell-1/cnc-01"


def _config(data_dir: Path) -> str:
    return f"""
[server]
port = 0
data_dir = "{data_dir}"

[historian]
path = "history.duckdb"
flush_interval_s = 0.05

[simulator]
enabled = true

[analytics.anomaly]
enabled = true
window = 1200
min_points = 300
refresh = 30
settle = "1m"
alarm = true
priority = "high"

[analytics.rul]
enabled = true
history = "3h"
interval = "1h"
min_points = 10
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = load_config_text(_config(tmp_path / "data")).resolve_paths(tmp_path)
    async with (
        serving(Server(config)) as server,
        api_client(server) as client,
    ):
        yield server, client


async def test_scores_events_alarms_and_rul_through_the_api(
    served: tuple[Server, httpx.AsyncClient],
) -> None:
    server, client = served
    assert server.anomaly is not None
    t0 = (now_ns() // S - 2 * 3600) * S
    plant = Plant.default(seed=1, start_ns=t0)
    plant.inject("cnc-01", Fault.sensor_failure("spindle_temp", at_ns=t0 + 90 * MINUTE))
    plant.inject("cnc-01", Fault.bearing_wear(4.0, at_ns=t0 + 10 * MINUTE))
    await server.register_tags(plant.tags())
    for chunk in range(12):
        batch = plant.advance(start_ns=t0 + chunk * 10 * MINUTE, steps=600)
        await server.ingest_local(batch)
    await server.historian.flush()

    async with asyncio.timeout(20):  # the monitor follows the live channel
        while True:
            await server.historian.flush()
            answer = await client.get("/api/v1/anomaly", params={"equipment": "cnc-01"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            if any(p["score"] == 1000 for p in body["scores"]):
                break
            await asyncio.sleep(0.05)
    (machine,) = body["machines"]
    assert machine["equipment"] == CNC1
    assert f"{CNC1}/spindle_temp" in machine["tags"]
    assert any(e["cause"] == "bad spindle_temp" and e["score"] == 1000 for e in body["events"])

    everything = (await client.get("/api/v1/anomaly")).json()
    # the CNCs and presses (vibration, temperatures) and the compressors (outlet temperature)
    assert len(everything["machines"]) == 7

    async with asyncio.timeout(10):
        while not any(  # noqa: ASYNC110 - polling over HTTP
            a["name"] == "anomaly.cnc-01" for a in (await client.get("/api/v1/alarms")).json()
        ):
            await asyncio.sleep(0.05)

    await server.anomaly.refresh_rul()
    rul = await client.get("/api/v1/rul", params={"equipment": CNC1})
    assert rul.status_code == 200, rul.text
    (row,) = rul.json()["machines"]
    assert row["status"] == "estimate", row
    assert row["threshold"] == 7.1
    assert row["model"]["kind"] in ("linear", "exponential")
    assert row["interval"]["low"] <= row["failure_time"]
    assert row["rul_hours"] > 0, row
    all_rul = (await client.get("/api/v1/rul")).json()["machines"]
    assert {r["status"] for r in all_rul} <= {"estimate", "no_estimate"}

    for path in ("/api/v1/anomaly", "/api/v1/rul"):
        missing = await client.get(path, params={"equipment": "cnc-99"})
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "equipment"
    bad_range = await client.get(
        "/api/v1/anomaly", params={"equipment": "cnc-01", "start": "now", "end": "now-1h"}
    )
    assert bad_range.status_code == 422
    assert bad_range.json()["error"]["field"] == "start"
