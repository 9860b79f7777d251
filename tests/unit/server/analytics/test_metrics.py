"""Metrics: windows computed from a real (in-memory DuckDB) historian, against numpy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from shopfloor.model import PointBatch, Quality
from shopfloor.server.analytics.metrics import MAX_CATCH_UP, Metric, MetricJob
from shopfloor.server.historian.duckdb import DuckDBHistorian

S = 10**9
WINDOW = 60 * S
T0 = 1_750_000_000 * S // WINDOW * WINDOW  # a window start
M = "acme/site/area/line/cell/m-1"


@pytest.fixture
async def historian() -> AsyncIterator[DuckDBHistorian]:
    h = DuckDBHistorian(None, flush_interval_s=3600)
    await h.start()
    yield h
    await h.close()


def metric(name: str, expression: str, *tags: str) -> Metric:
    return Metric(f"{M}/{name}", expression, {t: f"{M}/{t}" for t in tags}, WINDOW, 0)


async def test_windows_match_numpy_over_the_good_points(historian: DuckDBHistorian) -> None:
    rng = np.random.default_rng(7)
    n = 500
    ts = np.sort(T0 + rng.integers(0, 3 * WINDOW, n))
    power = rng.normal(12.0, 3.0, n)
    quality = np.where(rng.random(n) < 0.1, int(Quality.BAD_SENSOR_FAILURE), 0).astype(np.uint32)
    counter = np.cumsum(rng.integers(0, 3, n)).astype(float)
    await historian.write(
        PointBatch.from_columns(
            [f"{M}/power_kw", f"{M}/part_count"],
            np.r_[np.zeros(n), np.ones(n)],
            np.r_[ts, ts],
            np.r_[power, counter],
            np.r_[quality, np.zeros(n)],
        )
    )
    metrics = [
        metric("avg_power", "avg(power_kw)", "power_kw"),
        metric("peak_ratio", "max(power_kw) / avg(power_kw)", "power_kw"),
        metric("parts", "last(part_count) - first(part_count)", "part_count"),
        metric("readings", "count(power_kw)", "power_kw"),
    ]
    sent: list[PointBatch] = []

    async def sink(batch: PointBatch) -> None:
        sent.append(batch)

    job = MetricJob(metrics, historian, sink)
    for w in range(3):
        start = T0 + w * WINDOW
        batch = await job.compute(WINDOW, 0, start)
        got = {batch.tags[i]: v for i, v in zip(batch.tag_index, batch.value.tolist(), strict=True)}
        assert set(batch.ts.tolist()) == {start}  # stamped at the window's start
        inside = (ts >= start) & (ts < start + WINDOW)
        good = inside & (quality == 0)
        assert got[f"{M}/avg_power"] == pytest.approx(power[good].mean())
        assert got[f"{M}/peak_ratio"] == pytest.approx(power[good].max() / power[good].mean())
        assert got[f"{M}/parts"] == pytest.approx(counter[inside][-1] - counter[inside][0])
        assert got[f"{M}/readings"] == good.sum()
    assert len(sent) == 3
    assert job.windows == 3


async def test_a_window_without_data_gives_no_point_and_unknown_tags_are_no_error(
    historian: DuckDBHistorian,
) -> None:
    await historian.write(PointBatch.from_points([(f"{M}/power_kw", T0 + S, 5.0, 0)]))
    job = MetricJob(
        [
            metric("avg_power", "avg(power_kw)", "power_kw"),
            metric("never", "avg(never_sent)", "never_sent"),
        ],
        historian,
        lambda _batch: _noop(),
    )
    first = await job.compute(WINDOW, 0, T0)
    assert (list(first.tags), first.value.tolist()) == ([f"{M}/avg_power"], [5.0])
    assert not len(await job.compute(WINDOW, 0, T0 + WINDOW))  # nothing in that window


async def _noop() -> None:
    return None


async def test_after_a_stall_only_the_last_windows_are_caught_up(
    historian: DuckDBHistorian,
) -> None:
    await historian.write(
        PointBatch.from_columns(
            [f"{M}/power_kw"], np.zeros(20), T0 + np.arange(80, 100) * WINDOW + S, np.arange(20.0)
        )
    )
    now = [T0 + WINDOW // 2]  # at start: the first window is under way
    readings = iter(range(10**6))

    def clock() -> int:
        if next(readings) == 1:  # then its end has come
            now[0] = T0 + WINDOW
        return now[0]

    sent: list[int] = []
    done = asyncio.Event()

    async def sink(batch: PointBatch) -> None:
        sent.extend(((batch.ts - T0) // WINDOW).tolist())
        now[0] = T0 + 100 * WINDOW + WINDOW // 2  # and the server stalls for 100 windows
        if len(sent) == 1 + MAX_CATCH_UP:
            done.set()

    await historian.write(PointBatch.from_points([(f"{M}/power_kw", T0 + S, 1.0, 0)]))
    job = MetricJob(
        [metric("avg_power", "avg(power_kw)", "power_kw")], historian, sink, clock=clock
    )
    task = asyncio.create_task(job.run(), name="test/metrics")
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sent == [0, *range(100 - MAX_CATCH_UP, 100)]


async def test_windows_follow_a_data_clock_faster_than_the_wall(
    historian: DuckDBHistorian,
) -> None:
    """A demo replays yesterday at speed: its windows close by the simulated clock, which
    here runs 120 times faster than the wall, so a 1-minute window closes every 0.5 s."""
    await historian.write(
        PointBatch.from_columns(
            [f"{M}/power_kw"], np.zeros(10), T0 + np.arange(10) * WINDOW + S, np.arange(10.0)
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    def clock() -> int:
        return T0 + int((loop.time() - started) * 120 * S)

    sent: list[int] = []
    done = asyncio.Event()

    async def sink(batch: PointBatch) -> None:
        sent.extend(((batch.ts - T0) // WINDOW).tolist())
        if len(sent) >= 3:
            done.set()

    job = MetricJob(
        [metric("avg_power", "avg(power_kw)", "power_kw")], historian, sink, clock=clock
    )
    task = asyncio.create_task(job.run(), name="test/metrics")
    try:
        async with asyncio.timeout(5):  # sleeping to the window's end in wall seconds: 60 s
            await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sent[:3] == [0, 1, 2]
