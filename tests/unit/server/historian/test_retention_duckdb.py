"""DuckDB retention: what only the embedded backend shows (its blocks, its file, its rollups).

What every backend must do (exact points kept per tag class, the budget, the report) is
in the contract suite (shopfloor.testing.historian_retention_contract).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pytest

from shopfloor.config import load_config_text
from shopfloor.model import PointBatch
from shopfloor.server.app import build_historian
from shopfloor.server.historian.disk_usage import StorageReporter
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.retention_policy import DAY_NS, RetentionPolicy

SECOND = 10**9
HOUR = 3600 * SECOND
DAY0 = 1_700_000_000 * SECOND // DAY_NS * DAY_NS
TAGS = [
    f"acme/plant-1/area-{a}/line/cell/eq-{e}/t{t}"
    for a in range(2)
    for e in range(2)
    for t in range(4)
]


def _day(rng: np.random.Generator, day: int, per_tag: int) -> PointBatch:
    """A day of irregular points of every tag, as one batch in time order."""
    start = DAY0 + day * DAY_NS
    ts = np.sort(rng.integers(start, start + DAY_NS, per_tag * len(TAGS)))
    return PointBatch.from_columns(
        TAGS, rng.integers(0, len(TAGS), len(ts)), ts, rng.normal(size=len(ts))
    )


def _blocks(path: Path) -> tuple[int, int]:
    """(used, free) blocks of a closed database file, read by DuckDB itself."""
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT used_blocks, free_blocks FROM pragma_database_size()").fetchall()
    return int(row[0][0]), int(row[0][1])


async def _roll(path: Path, days: int, *, keep_days: int | None) -> list[tuple[int, int]]:
    """Write ``days`` days one after the other, compacting and applying retention after
    each, as a server does; return the file's size and the used bytes after each day."""
    rng = np.random.default_rng(4)
    now = [DAY0]
    keep = None if keep_days is None else keep_days * DAY_NS
    policy = RetentionPolicy(raw_ns=keep, rollup_1m_ns=keep, rollup_1h_ns=keep)
    h = DuckDBHistorian(
        path,
        clock=lambda: now[0],
        compaction_interval_s=None,
        flush_interval_s=60,
        retention=policy,
    )
    await h.start()
    sizes = []
    try:
        for day in range(days):
            batch = _day(rng, day, 4_000)
            for part in np.array_split(np.arange(len(batch)), 4):  # a few commits per day
                mask = np.zeros(len(batch), dtype=np.bool_)
                mask[part] = True
                await h.write(batch.select(mask))
                await h.flush()
            now[0] = DAY0 + (day + 1) * DAY_NS + HOUR
            await h.compact()
            await h.apply_retention()
            totals = (await h.storage_report()).totals
            sizes.append((totals.database_bytes, totals.used_bytes))
    finally:
        await h.close()
    return sizes


async def test_used_blocks_and_the_file_stop_growing_under_retention(tmp_path: Path) -> None:
    sizes = await _roll(tmp_path / "h.duckdb", 12, keep_days=3)
    files, used = [f for f, _ in sizes], [u for _, u in sizes]
    # three days kept: from day 4 on, each day's points take the blocks a deleted day
    # freed (bench/retention.py shows the same run without retention growing all along)
    assert max(used[7:]) <= max(used[3:7])
    assert max(files[7:]) <= max(files[:7])
    assert used[-1] < 2 * used[2]  # 12 days written, about 4 held


async def test_deleting_days_frees_blocks_for_reuse(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    rng = np.random.default_rng(2)
    now = [DAY0 + 6 * DAY_NS + HOUR]
    h = DuckDBHistorian(path, clock=lambda: now[0], compaction_interval_s=None)
    await h.start()
    for day in range(6):
        await h.write(_day(rng, day, 4_000))
    await h.flush()
    await h.compact()
    await h.close()
    used_before, free_before = _blocks(path)
    h = DuckDBHistorian(path, clock=lambda: now[0], retention=RetentionPolicy(raw_ns=3 * DAY_NS))
    await h.start()
    report = await h.apply_retention()
    await h.close()
    used_after, free_after = _blocks(path)
    assert report.raw_points == 3 * 4_000 * len(TAGS)
    assert used_after < used_before
    assert free_after > free_before
    assert used_before + free_before == used_after + free_after  # same file, blocks freed


def _rollup_rows(path: Path, table: str, column: str = "bucket") -> list[int]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(f"SELECT DISTINCT {column} FROM {table} ORDER BY 1").fetchall()
    return [int(r[0]) for r in rows]


async def test_rollups_keep_their_own_retention_and_the_raw_floor_is_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.duckdb"
    rng = np.random.default_rng(5)
    now = DAY0 + 6 * DAY_NS + HOUR
    with duckdb.connect(str(path)) as con:  # a rollup table of another layout: a timestamp
        con.execute("CREATE TABLE rollup_1h_archive(tag_id INTEGER, ts TIMESTAMPTZ, v DOUBLE)")
        hours = [dt.datetime.fromtimestamp((DAY0 + i * HOUR) // SECOND, dt.UTC) for i in range(144)]
        con.executemany("INSERT INTO rollup_1h_archive VALUES (1, ?, 0.5)", [[h] for h in hours])
    h = DuckDBHistorian(path, clock=lambda: now, compaction_interval_s=None)
    await h.start()
    for day in range(6):
        await h.write(_day(rng, day, 2_000))
    await h.flush()
    await h.compact()  # rolls up too
    await h.close()
    minutes_before = _rollup_rows(path, "rollup_1m")
    assert minutes_before[0] < DAY0 + DAY_NS
    policy = RetentionPolicy(raw_ns=4 * DAY_NS, rollup_1m_ns=2 * DAY_NS, rollup_1h_ns=3 * DAY_NS)
    h = DuckDBHistorian(path, clock=lambda: now, compaction_interval_s=None, retention=policy)
    await h.start()
    report = await h.apply_retention()
    await h.close()
    minute_cut, hour_cut, raw_cut = (
        (now - keep) // DAY_NS * DAY_NS for keep in (2 * DAY_NS, 3 * DAY_NS, 4 * DAY_NS)
    )
    minutes = _rollup_rows(path, "rollup_1m")
    assert minutes == [b for b in minutes_before if b >= minute_cut]
    assert min(_rollup_rows(path, "rollup_1h")) == hour_cut
    archive = _rollup_rows(path, "rollup_1h_archive", "epoch_ns(ts)")
    assert archive == [DAY0 + i * HOUR for i in range(144) if DAY0 + i * HOUR >= hour_cut]
    assert report.rollup_rows > 0
    with duckdb.connect(str(path), read_only=True) as con:
        floors = con.execute("SELECT DISTINCT floor_ns FROM raw_floor").fetchall()
        oldest = con.execute("SELECT min(ts) FROM points").fetchall()
    assert floors == [(raw_cut,)]
    assert oldest[0][0] >= raw_cut


async def test_the_budget_evicts_rollups_only_when_only_today_is_left_of_raw(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.duckdb"
    rng = np.random.default_rng(6)
    now = DAY0 + 3 * DAY_NS + 20 * HOUR
    h = DuckDBHistorian(path, clock=lambda: now, compaction_interval_s=None)
    await h.start()
    for day in range(4):
        await h.write(_day(rng, day, 1_000))
    await h.flush()
    await h.compact()
    await h.close()
    h = DuckDBHistorian(path, clock=lambda: now, retention=RetentionPolicy(disk_budget_bytes=1))
    await h.start()
    report = await h.apply_retention()
    stats = h.stats()
    await h.close()
    assert report.evicted_raw_days == 3
    assert report.evicted_rollup_days >= 3  # the three days of each table older than today
    assert report.over_budget
    assert stats.budget_evictions == report.evicted_raw_days + report.evicted_rollup_days
    today = DAY0 + 3 * DAY_NS
    assert min(_rollup_rows(path, "rollup_1m")) >= today
    assert min(_rollup_rows(path, "rollup_1h")) >= today
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT min(ts) >= ? FROM points", [today]).fetchall() == [(True,)]


@pytest.mark.parametrize("keep", [None, 2 * DAY_NS])
async def test_a_historian_without_a_file_applies_retention_too(keep: int | None) -> None:
    rng = np.random.default_rng(7)
    now = DAY0 + 4 * DAY_NS
    h = DuckDBHistorian(None, clock=lambda: now, retention=RetentionPolicy(raw_ns=keep))
    await h.start()
    try:
        for day in range(4):
            await h.write(_day(rng, day, 100))
        await h.flush()
        report = await h.apply_retention()
        kept = 0
        for path in TAGS:
            kept += (await h.read_raw(path, 0, 2**62)).num_rows
        assert kept + report.raw_points == 4 * 100 * len(TAGS)
        assert report.raw_points == (0 if keep is None else 2 * 100 * len(TAGS))
    finally:
        await h.close()


async def test_the_background_pass_runs_by_itself(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    now = DAY0 + 4 * DAY_NS
    policy = RetentionPolicy(raw_ns=DAY_NS, interval_s=0.05)
    h = DuckDBHistorian(tmp_path / "h.duckdb", clock=lambda: now, retention=policy)
    await h.start()
    try:
        for day in range(4):
            await h.write(_day(rng, day, 50))
        await h.flush()
        async with asyncio.timeout(30):  # a bound on a hang, not a timing assertion
            while h.stats().retention_deleted_points == 0:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.02)
        assert h.stats().retention_deleted_points == 3 * 50 * len(TAGS)
    finally:
        await h.close()


async def test_the_configuration_reaches_the_historian(tmp_path: Path) -> None:
    config = load_config_text(
        '[historian.retention]\nraw = "30d"\ndisk_budget = "1GB"\n'
        '[[historian.retention.rules]]\nmatch = "a/**"\nraw = ""\n'
    ).resolve_paths(tmp_path)
    h = build_historian(config)
    await h.start()
    try:
        assert isinstance(h, StorageReporter)
        retention = (await h.storage_report()).retention
    finally:
        await h.close()
    assert (retention["raw"], retention["disk_budget_bytes"]) == ("30d", 10**9)
    assert retention["rules"] == "a/** = forever"
