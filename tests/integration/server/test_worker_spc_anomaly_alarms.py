"""Scaled out, SPC and anomaly alarms are raised by the ingest workers, once (issue 9).

A real worker and two real API servers (in this process) over a real PostgreSQL and
Mosquitto, analytics and alarms both partitioned. Both API servers get every live batch
(as through the live fan-out); only the one leasing the machine's analytics partition
runs its SPC chart and anomaly detector and stores their derived points through the
shared historian; those reach the worker through the committed-points feed, and it
journals each alarm once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from shopfloor.config import ShopfloorConfig
from shopfloor.errors import UnknownTagError
from shopfloor.model import LiveBatch, PointBatch, Quality, now_ns
from shopfloor.server.app import Server
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.worker import IngestWorker
from shopfloor.testing.auth import shared_secret_key
from shopfloor.testing.mosquitto import Mosquitto

from .test_asset_edits import copy_demo_plant

S = 10**9
CELL = "acme/plant-1/machining/line-1"
CNC1 = f"{CELL}/cell-1/cnc-01"
CNC2 = f"{CELL}/cell-2/cnc-02"
CHART_TAG = f"{CNC1}/cycle_time"
SPC_TAG = f"{CHART_TAG}.spc.cycle"
SCORE_TAG = f"{CNC2}/anomaly_score"
BASELINE = 30
LIVE = [10.0, 10.1, 9.9, 10.0, 25.0, 10.0, 10.1, 9.9, 10.0]
"""Live cycle times: in control, one far beyond the limits, in control again."""


def _config(tmp_path: Path, dsn: str, broker: Mosquitto, t0: int) -> ShopfloorConfig:
    data = tmp_path / "data"
    settings: dict[str, Any] = {
        "server": {"port": 0, "data_dir": str(data)},
        "historian": {"kind": "postgres", "dsn": dsn, "shared": True, "flush_interval_s": 0.05},
        "security": {"secret_key_file": str(shared_secret_key(tmp_path))},
        "ingest": {"mqtt": {"port": broker.port, "shared_group": "ingest", "session_expiry": "0s"}},
        "alarms": {"partitions": 4},
        "analytics": {
            "partitions": 4,
            "spc": [
                {
                    "name": "cycle",
                    "tag": CHART_TAG,
                    "kind": "imr",
                    "baseline_start": t0 // S,
                    "baseline_subgroups": BASELINE,
                    "rules": ["WE1"],
                    "alarm": True,
                }
            ],
            "anomaly": {"enabled": True, "alarm": True, "settle": "0s"},
        },
        "assets": {"plant": str(copy_demo_plant(tmp_path / "site"))},
    }
    return ShopfloorConfig.model_validate(settings).resolve_paths(data)


def _api_config(config: ShopfloorConfig, name: str) -> ShopfloorConfig:
    """The same file as seen by one API server: its own MQTT client id."""
    mqtt = config.ingest.mqtt.model_copy(update={"client_id": name})
    return config.model_copy(update={"ingest": config.ingest.model_copy(update={"mqtt": mqtt})})


@asynccontextmanager
async def _historian(dsn: str, t0: int) -> AsyncIterator[PostgresHistorian]:
    """A third process's view of the shared historian, which first stores the chart's
    baseline (in control around 10)."""
    historian = PostgresHistorian(dsn, flush_interval_s=0.05, shared=True)
    await historian.start()
    try:
        values = 10.0 + 0.1 * np.sin(np.arange(BASELINE))
        await historian.write(
            PointBatch.from_columns(
                [CHART_TAG], np.zeros(BASELINE), t0 + np.arange(BASELINE) * S, values
            )
        )
        await historian.flush()
        yield historian
    finally:
        await historian.close()


@asynccontextmanager
async def _server(config: ShopfloorConfig) -> AsyncIterator[Server]:
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _until(what: str, probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        await asyncio.sleep(0.05)


def _scalar(dsn: str, query: str, *params: object) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute(query, list(params)).fetchone()
    return int(row[0]) if row else 0


def _activations(dsn: str, alarm: str) -> int:
    return _scalar(
        dsn,
        "SELECT count(*) FROM shopfloor.alarm_journal WHERE alarm = %s AND event = 'activated'",
        alarm,
    )


async def _stored(historian: PostgresHistorian, tag: str) -> int:
    """How many points of ``tag`` are committed."""
    try:
        return (await historian.read_raw(tag, 0, 2**62)).num_rows
    except UnknownTagError:  # not registered yet (read every second)
        return 0


def _monitoring(server: Server) -> bool:
    names = {sub.name for sub in server.live._subscribers}
    return {"live/spc-monitor", "live/anomaly-monitor"} <= names


def _live(t1: int) -> PointBatch:
    """The live cycle times, and one Bad spindle temperature of cnc-02 (a failed sensor)."""
    n = len(LIVE)
    return PointBatch.from_columns(
        [CHART_TAG, f"{CNC2}/state", f"{CNC2}/spindle_temp"],
        np.r_[np.zeros(n), 1, 2],
        np.r_[t1 + np.arange(n) * S, t1, t1 + S],
        np.r_[LIVE, 1.0, 0.0],
        np.r_[np.zeros(n + 1), int(Quality.BAD)],
    )


async def test_spc_and_anomaly_alarms_are_raised_once_by_the_workers(
    tmp_path: Path, dsn: str, mosquitto: Mosquitto
) -> None:
    t0 = (now_ns() // S - 3600) * S
    config = _config(tmp_path, dsn, mosquitto, t0)
    async with AsyncExitStack() as stack:
        historian = await stack.enter_async_context(_historian(dsn, t0))
        worker = IngestWorker(config, client_id="w-a")
        stack.push_async_callback(worker.close)
        await worker.start()
        assert worker.partitions is not None
        assert worker.partitions.rule("spc.cycle") is not None
        assert worker.partitions.rule("anomaly.cnc-02") is not None
        servers = [
            await stack.enter_async_context(_server(_api_config(config, f"api-{i}")))
            for i in range(2)
        ]
        owners = [s.analytics_owner for s in servers if s.analytics_owner is not None]
        assert len(owners) == 2
        await _until(
            "the analytics partitions split between the servers",
            lambda: len(owners[0].held) == len(owners[1].held) == 2,
        )
        await _until(
            "the monitors follow the live channels", lambda: all(map(_monitoring, servers))
        )

        # every API server gets every batch, as through the live fan-out
        live = LiveBatch(_live(t0 + 1800 * S), edge="edge-1")
        for server in servers:
            server.live.publish(live)

        await _until("the SPC alarm journaled", lambda: _activations(dsn, "spc.cycle") >= 1)
        await _until(
            "the anomaly alarm journaled", lambda: _activations(dsn, "anomaly.cnc-02") >= 1
        )
        # every derived point stored (and so fed), and the feed consumed: nothing more to come
        deadline = time.monotonic() + 30
        while await _stored(historian, SPC_TAG) < len(LIVE) or not await _stored(
            historian, SCORE_TAG
        ):
            assert time.monotonic() < deadline, "the derived points were not stored"
            await asyncio.sleep(0.05)
        await _until(
            "the worker evaluated the feed",
            lambda: _scalar(dsn, "SELECT count(*) FROM shopfloor.point_feed") == 0,
        )
        assert await _stored(historian, SPC_TAG) == len(LIVE), "one server judged the chart"
        assert await _stored(historian, SCORE_TAG) == 1, "one server scored the machine"
        assert _activations(dsn, "spc.cycle") == 1
        assert _activations(dsn, "anomaly.cnc-02") == 1
        judged = sorted(s.spc.subgroups for s in servers if s.spc is not None)
        assert judged == [0, len(LIVE)]


async def test_a_plant_edit_that_only_changes_the_watched_machines_reaches_a_worker(
    tmp_path: Path, dsn: str, mosquitto: Mosquitto
) -> None:
    """The anomaly alarms follow the plant's machines and tags: a new temperature on the
    conveyors makes them watched, with no alarm of their template changed."""
    config = _config(tmp_path, dsn, mosquitto, now_ns())
    worker = IngestWorker(config, client_id="w-a")
    try:
        assert worker.partitions is not None
        assert worker.partitions.rule("anomaly.conv-01") is None
        template = tmp_path / "site" / "templates" / "conveyor.toml"
        template.write_text(
            template.read_text()
            + '\n[[measurements]]\nname = "motor_temp"\nunit = "degC"\ndescription = "Motor"\n'
        )
        await worker._reload_plant()  # what the plant watch does when an API server edits
        rule = worker.partitions.rule("anomaly.conv-01")
        assert rule is not None
        assert rule.tag == f"{CELL}/transport/conv-01/anomaly_score"
        assert worker.partitions.route(rule.tag) == (
            worker.partitions.part_of_alarm("anomaly.conv-01"),
        )
    finally:
        await worker.close()
