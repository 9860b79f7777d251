"""Scaled out, an edit of the plant through an API server reaches the ingest workers while
they run (issue 9): a real API server and a real worker (in this process) over a real
PostgreSQL and Mosquitto, sharing the plant file; the server tells the worker through
PostgreSQL NOTIFY, and the worker evaluates the new equipment's alarms — keeping the
state of the alarms whose rule did not change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg

from shopfloor.config import ShopfloorConfig
from shopfloor.model import PointBatch, Quality, now_ns
from shopfloor.server.app import Server
from shopfloor.server.worker import IngestWorker
from shopfloor.testing.auth import grant, shared_secret_key
from shopfloor.testing.mosquitto import Mosquitto

from .test_asset_edits import PUMP, copy_demo_plant

CELL = "acme/plant-1/machining/line-1"
OLD = f"{CELL}/cell-3/cnc-03"
NEW = f"{CELL}/cell-4/cnc-04"


@asynccontextmanager
async def _api_server(config: ShopfloorConfig) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    server = Server(config)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=grant(server.app, user="ada")
        ) as client:
            yield server, client
    finally:
        stop.set()
        await serving
        await server.close()


async def _until(what: str, probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        await asyncio.sleep(0.05)


def _activations(dsn: str, alarm: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute(
            "SELECT count(*) FROM shopfloor.alarm_journal WHERE alarm = %s AND event = 'activated'",
            [alarm],
        ).fetchone()
    return int(row[0]) if row else 0


def _bad_quality_alarm(server: Server, machine: str) -> str:
    """The name of the template's "no data" alarm of ``machine``."""
    (name,) = (
        r.name
        for r in server.alarms.rules
        if r.tag == f"{machine}/state" and r.kind == "bad_quality"
    )
    return name


def _feed_left(dsn: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT count(*) FROM shopfloor.point_feed").fetchone()
    return int(row[0]) if row else 0


def _bad(paths: list[str], ts: int) -> PointBatch:
    n = len(paths)
    return PointBatch.from_columns(
        paths, np.arange(n), np.full(n, ts), np.zeros(n), np.full(n, int(Quality.BAD))
    )


async def test_an_equipment_added_through_the_api_is_evaluated_by_a_running_worker(
    tmp_path: Path, dsn: str, mosquitto: Mosquitto
) -> None:
    plant = copy_demo_plant(tmp_path / "site")
    data = tmp_path / "data"
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"kind": "postgres", "dsn": dsn, "shared": True, "flush_interval_s": 0.05},
            "security": {"secret_key_file": str(shared_secret_key(tmp_path))},
            "ingest": {
                "mqtt": {"port": mosquitto.port, "shared_group": "ingest", "session_expiry": "0s"}
            },
            "alarms": {"partitions": 4},
            "assets": {"plant": str(plant)},
        }
    ).resolve_paths(data)
    worker = IngestWorker(config, client_id="w-a")
    await worker.start()
    try:
        async with _api_server(config) as (server, client):
            (old_alarm,) = (
                r.name
                for r in server.alarms.rules
                if r.tag == f"{OLD}/state" and r.kind == "bad_quality"
            )
            t0 = now_ns()
            await server.ingest_local(_bad([f"{OLD}/state"], t0))
            await _until(
                "the old machine's alarm raised", lambda: _activations(dsn, old_alarm) == 1
            )

            tree = await client.get("/api/v1/assets")
            created = await client.post(
                "/api/v1/assets/equipment", json=PUMP, headers={"If-Match": tree.headers["ETag"]}
            )
            assert created.status_code == 201, created.text
            assert created.json()["path"] == NEW
            (new_alarm,) = (
                r.name
                for r in server.alarms.rules
                if r.tag == f"{NEW}/state" and r.kind == "bad_quality"
            )
            await _until(
                "the worker took the edit",
                lambda: (
                    worker.partitions is not None and worker.partitions.rule(new_alarm) is not None
                ),
            )
            # the new machine's points are evaluated by the worker; the old machine's alarm
            # kept its state (still in, not raised again by its next bad value)
            await server.ingest_local(_bad([f"{OLD}/state", f"{NEW}/state"], t0 + 10**9))
            await _until(
                "the new machine's alarm raised", lambda: _activations(dsn, new_alarm) == 1
            )
            await _until("the worker evaluated every point", lambda: _feed_left(dsn) == 0)
            assert _activations(dsn, old_alarm) == 1
            # and the API server shows what the worker journaled
            await _until(
                "the API server shows the new alarm",
                lambda: (
                    server.alarms.state_of(new_alarm) is not None
                    and server.alarms.state_of(new_alarm).value == "unacknowledged"
                ),  # type: ignore[union-attr]
            )
    finally:
        await worker.close()
    assert worker.owner is not None
    assert worker.owner.replaced == 1
