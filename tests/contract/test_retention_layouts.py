"""PostgreSQL retention beyond the contract: version 1's daily partitions, rollup tables.

The contract suite (test_historians.py) checks the points every backend keeps; this
checks what only PostgreSQL storage shows: partitions dropped whole (and made again for
a late point), rows of other tags' classes deleted from a kept partition, and rollup
tables of either time type found and trimmed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from shopfloor.model import PointBatch
from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.retention_policy import DAY_NS, PathRule, RetentionPolicy

SECOND = 10**9
HOUR = 3600 * SECOND
DAY0 = 1_700_000_000 * SECOND // DAY_NS * DAY_NS


async def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("SET search_path TO shopfloor")
        cur = await con.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def _version_1_schema(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("CREATE SCHEMA shopfloor")
        await con.execute("SET search_path TO shopfloor")
        for statement in (*pg_schema.DDL, *pg_schema.V1_PARTITIONED_DDL):
            await con.execute(statement)


def _days(paths: list[str], days: int, per_day: int) -> tuple[PointBatch, np.ndarray, np.ndarray]:
    ts = np.concatenate(
        [DAY0 + d * DAY_NS + np.arange(per_day) * (DAY_NS // per_day) for d in range(days)]
    )
    index = np.repeat(np.arange(len(paths)), len(ts))
    all_ts = np.tile(ts, len(paths))
    return PointBatch.from_columns(paths, index, all_ts, all_ts % 97), index, all_ts


async def _partitions(dsn: str) -> list[str]:
    found = await rows(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'points'::regclass ORDER BY 1",
    )
    return [r[0] for r in found]


async def test_version_1_partitions_are_dropped_whole_or_lose_expired_tags(dsn: str) -> None:
    await _version_1_schema(dsn)
    paths = ["plant/utilities/air", "plant/lab/gauge"]
    batch, index, ts = _days(paths, 5, 48)
    now = [DAY0 + 5 * DAY_NS + HOUR]
    policy = RetentionPolicy(raw_ns=2 * DAY_NS, rules=(PathRule.of("plant/lab", 4 * DAY_NS),))
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: now[0], retention=policy)
    await h.start()
    try:
        assert h.layout == "partitioned"
        await h.write(batch)
        await h.flush()
        report = await h.apply_retention()
        cut = {
            0: (now[0] - 2 * DAY_NS) // DAY_NS * DAY_NS,
            1: (now[0] - 4 * DAY_NS) // DAY_NS * DAY_NS,
        }
        keep = ts >= np.where(index == 0, cut[0], cut[1])
        assert report.raw_points == int((~keep).sum())
        for i, path in enumerate(paths):
            got = (await h.read_raw(path, 0, 2**62)).column("ts").cast("int64").to_numpy()
            np.testing.assert_array_equal(got, ts[(index == i) & keep])
        # day 0 is past every tag's retention: dropped whole; days 1 and 2 kept for the lab
        names = await _partitions(dsn)
        assert pg_schema.partition_name(DAY0 // DAY_NS) not in names
        assert pg_schema.partition_name(DAY0 // DAY_NS + 1) in names
        # a late point for the dropped day: its partition is made again, nothing is lost
        late = PointBatch.from_columns([paths[1]], [0], [DAY0 + HOUR], [1.5])
        await h.write(late)
        await h.flush()
        got = await h.read_raw(paths[1], DAY0, DAY0 + DAY_NS)
        assert got.column("value").to_pylist() == [1.5]
    finally:
        await h.close()


async def test_version_1_budget_drops_the_oldest_partitions(dsn: str) -> None:
    await _version_1_schema(dsn)
    batch, _, ts = _days(["a", "b"], 4, 2000)
    now = DAY0 + 3 * DAY_NS + HOUR
    h = PostgresHistorian(
        dsn,
        compaction_interval_s=None,
        clock=lambda: now,
        retention=RetentionPolicy(disk_budget_bytes=1),
    )
    await h.start()
    try:
        await h.write(batch)
        await h.flush()
        report = await h.apply_retention()
        assert report.evicted_raw_days == 3
        assert report.evicted_raw_points == int((ts < DAY0 + 3 * DAY_NS).sum())
        assert report.over_budget
        got = (await h.read_raw("a", 0, 2**62)).column("ts").cast("int64").to_numpy()
        np.testing.assert_array_equal(got, np.unique(ts[ts >= DAY0 + 3 * DAY_NS]))
        names = await _partitions(dsn)
        assert all(n >= pg_schema.partition_name(DAY0 // DAY_NS + 3) for n in names)
    finally:
        await h.close()


async def test_rollup_tables_of_either_time_type_are_found_and_trimmed(dsn: str) -> None:
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: DAY0)
    await h.start()
    await h.write(PointBatch.from_columns(["a", "b"], [0, 1], [DAY0, DAY0], [1.0, 2.0]))
    await h.flush()
    await h.close()
    (a,), (b,) = await rows(dsn, "SELECT id FROM tags ORDER BY path")
    minutes = [DAY0 + i * 10 * 60 * SECOND for i in range(6 * 144)]  # 6 days, every 10 min
    hours = [DAY0 + i * HOUR for i in range(6 * 24)]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("SET search_path TO shopfloor")
        await con.execute("CREATE TABLE rollup_1m_archive(tag_id integer, bucket bigint, v float8)")
        await con.execute("CREATE TABLE rollup_1h_archive(tag_id integer, ts timestamptz)")
        await con.execute(
            "INSERT INTO rollup_1m_archive SELECT t, m, 0.5 FROM unnest(%s::int[]) AS t, "
            "unnest(%s::bigint[]) AS m",
            [[a, b], minutes],
        )
        await con.execute(
            "INSERT INTO rollup_1h_archive SELECT %s, to_timestamp(h / 1e9) "
            "FROM unnest(%s::bigint[]) AS h",
            [a, hours],
        )
    now = DAY0 + 6 * DAY_NS + HOUR
    policy = RetentionPolicy(rollup_1m_ns=2 * DAY_NS, rollup_1h_ns=3 * DAY_NS)
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: now, retention=policy)
    await h.start()
    try:
        before = await h.storage_report()
        report = await h.apply_retention()
        after = await h.storage_report()
    finally:
        await h.close()
    minute_cut = (now - 2 * DAY_NS) // DAY_NS * DAY_NS
    hour_cut = (now - 3 * DAY_NS) // DAY_NS * DAY_NS
    left = await rows(dsn, "SELECT DISTINCT bucket FROM rollup_1m_archive ORDER BY 1")
    assert [r[0] for r in left] == [m for m in minutes if m >= minute_cut]
    left = await rows(
        dsn, "SELECT (extract(epoch FROM ts) * 1e9)::bigint FROM rollup_1h_archive ORDER BY 1"
    )
    assert [r[0] for r in left] == [h for h in hours if h >= hour_cut]
    expired = 2 * sum(m < minute_cut for m in minutes) + sum(h < hour_cut for h in hours)
    assert report.rollup_rows == expired
    rollup_rows = {t.path: t.rollup_rows for t in before.tags}
    assert rollup_rows == {"a": len(minutes) + len(hours), "b": len(minutes)}
    assert after.totals.rollup_rows == before.totals.rollup_rows - expired
    kinds = {t.name: t.kind for t in after.tables}
    assert kinds["rollup_1m_archive"] == "rollup_1m"
    assert kinds["rollup_1h_archive"] == "rollup_1h"


async def test_raw_points_wait_for_their_rollups_unless_the_budget_needs_the_room(
    dsn: str,
) -> None:
    batch, _, ts = _days(["a"], 3, 500)
    now = DAY0 + 5 * DAY_NS
    policy = RetentionPolicy(raw_ns=DAY_NS)
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: now, retention=policy)
    await h.start()
    try:
        await h.write(batch)
        await h.flush()
        assert (await h.apply_retention()).raw_points == 0  # not rolled up yet: kept
        await h.compact()  # moves the hours into blocks and rolls them up
        assert (await h.apply_retention()).raw_points == len(ts)
        floors = await rows(dsn, "SELECT floor_ns FROM raw_floor")
        assert floors == [((now - DAY_NS) // DAY_NS * DAY_NS,)]  # the first midnight kept
    finally:
        await h.close()
    budget = RetentionPolicy(disk_budget_bytes=1)
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: now, retention=budget)
    await h.start()
    try:
        await h.write(batch)
        await h.flush()
        report = await h.apply_retention()  # the budget does not wait for rollups
        assert report.evicted_raw_points == len(ts)
    finally:
        await h.close()
