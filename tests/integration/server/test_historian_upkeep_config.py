"""``[historian.compaction]`` and ``[historian.rollups]`` reach the historian the server builds.

A server built from the configuration compacts a closed range and rolls it up by itself
within its interval, and with rollups off every query reads raw points. The counters in
``/healthz`` (``compacted_points``, ``rollup_rows``) say what happened.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from shopfloor.config import load_config_text
from shopfloor.model import PointBatch
from shopfloor.server.app import build_historian
from shopfloor.server.historian.base import Historian
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.testing.postgres import PostgresServer

from .history_backends import Backend

SECOND = 10**9
HOUR = 3600 * SECOND
DAY = 24 * HOUR


def two_hours_two_days_ago() -> PointBatch:
    """1 Hz points of two tags over two closed hours of a closed UTC day."""
    start = (time.time_ns() // DAY - 2) * DAY + 5 * HOUR
    ts = start + np.arange(7200, dtype=np.int64) * SECOND
    rng = np.random.default_rng(3)
    return PointBatch.from_columns(
        ["plant/a/temp", "plant/a/flow"],
        np.tile([0, 1], 7200)[:7200],
        ts,
        rng.normal(50, 2, 7200),
        np.zeros(7200, dtype=np.uint32),
    )


def upkeep(*, rollups: bool) -> str:
    return (
        '\n[historian.compaction]\ninterval = "1s"\ngrace = "0s"\n'
        f"\n[historian.rollups]\nenabled = {'true' if rollups else 'false'}\n"
        'interval = "1s"\ngrace = "0s"\n'
    )


async def wait_for(what: str, probe: object, timeout_s: float = 30.0) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        await asyncio.sleep(0.1)


def rollup_queries(h: Historian) -> int:
    assert isinstance(h, DuckDBHistorian | PostgresHistorian)
    return h.rollup_use.queries


class UpkeepSuite:
    @pytest.mark.parametrize("rollups", [True, False], ids=["rollups-on", "rollups-off"])
    async def test_compaction_runs_by_itself_and_rollups_as_configured(
        self, backend: Backend, rollups: bool
    ) -> None:
        h = build_historian(load_config_text(backend.config_section() + upkeep(rollups=rollups)))
        batch = two_hours_two_days_ago()
        await h.start()
        try:
            await h.write(batch)
            await h.flush()
            await wait_for("compaction", lambda: h.stats().compacted_points == len(batch))
            if rollups:
                await wait_for("rollups", lambda: h.stats().rollup_rows > 0)
            start = int(batch.ts.min())
            table = await h.read_aggregates(
                "plant/a/temp", start, start + 2 * HOUR, bucket_ns=HOUR, aggregates=["count"]
            )
            assert table.column("count").to_pylist() == [1800, 1800]
            if rollups:
                assert rollup_queries(h) == 1
            else:  # nothing rolled up, every answer from raw points
                assert (h.stats().rollup_rows, rollup_queries(h)) == (0, 0)
        finally:
            await h.close()

    async def test_compaction_off_leaves_closed_ranges_alone(self, backend: Backend) -> None:
        text = backend.config_section() + "\n[historian.compaction]\nenabled = false\n"
        h = build_historian(load_config_text(text))
        await h.start()
        try:
            await h.write(two_hours_two_days_ago())
            await h.flush()
            await asyncio.sleep(1.5)
            assert h.stats().compacted_points == 0
            report = await h.compact()  # asked for, it still runs
            assert report.points == 7200
            assert h.stats().compacted_points == 7200
        finally:
            await h.close()


class TestDuckDB(UpkeepSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return Backend("duckdb", path=tmp_path / "history.duckdb")


class TestPostgres(UpkeepSuite):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer) -> Backend:
        return Backend("postgres", dsn=postgres_server.create_database())
