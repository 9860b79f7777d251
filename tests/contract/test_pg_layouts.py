"""PostgreSQL storage layouts: the blocks layout's view and reading functions, version 1.

The historian contract (test_historians.py) checks what the historian answers; this
checks what other SQL readers see: ``points`` and the functions ``points_between``,
``points_before`` and ``points_after`` against plain numpy filters, over points both
compacted and not, and that a schema made by version 1 (narrow daily partitions) still
opens, stores and gets the same functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from shopfloor.model import PointBatch
from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.pg_blocks import BLOCK_NS, SEGMENT_POINTS
from shopfloor.server.historian.postgres import PostgresHistorian

HOUR = BLOCK_NS
T0 = 1_700_000_000 * 10**9 // HOUR * HOUR  # an hour boundary
SECOND = 10**9


async def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("SET search_path TO shopfloor")
        cur = await con.execute(query, params)
        return await cur.fetchall()


async def test_view_and_functions_match_numpy_over_compacted_and_recent(dsn: str) -> None:
    rng = np.random.default_rng(9)
    ts = T0 + np.cumsum(rng.integers(1, 80 * SECOND, 1200))  # ~13 hours, uneven
    ts[500:504] = T0 + 5 * HOUR + np.arange(-2, 2)  # points on both sides of a block edge
    ts = np.sort(ts)
    value = rng.normal(size=len(ts))
    now = [T0 + 6 * HOUR + 900 * SECOND]  # hours before 06:00 closed, the rest recent
    h = PostgresHistorian(dsn, compaction_interval_s=None, clock=lambda: now[0])
    await h.start()
    try:
        for part in np.array_split(np.arange(len(ts)), 7):  # commits out of time order
            await h.write(PointBatch.from_columns(["a", "b"], part % 2, ts[part], value[part]))
            await h.flush()
        one_commit = T0 + 20 * HOUR + np.arange(1000) * SECOND  # longer than one segment
        await h.write(PointBatch.from_columns(["c"], np.zeros(1000), one_commit, one_commit))
        await h.flush()
        moved = await h.compact()
        assert 0 < moved.points < len(ts)
    finally:
        await h.close()
    ids = dict(await rows(dsn, "SELECT path, id FROM tags"))
    assert (await rows(dsn, "SELECT count(*) FROM points_cold"))[0][0] > 0
    recent = await rows(dsn, "SELECT max(cardinality(ts)), count(*) FROM points_recent")
    assert recent[0][0] <= SEGMENT_POINTS
    assert (await rows(dsn, "SELECT count(*) FROM points"))[0][0] == len(ts) + 1000

    for tag, parity in (("a", 0), ("b", 1)):
        own_ts, own_value = ts[parity::2], value[parity::2]  # batches alternate a, b
        got = await rows(
            dsn, "SELECT ts, value FROM points WHERE tag_id = %s ORDER BY ts", [ids[tag]]
        )
        assert [r[0] for r in got] == own_ts.tolist()
        assert [r[1] for r in got] == own_value.tolist()
        for lo, hi in [(T0 + 5 * HOUR - 1, T0 + 5 * HOUR + 1), (T0, T0 + 7 * HOUR), (0, 2**62)]:
            got = await rows(
                dsn,
                "SELECT ts FROM points_between(%s, %s, %s) ORDER BY ts",
                [[ids[tag]], lo, hi],
            )
            assert [r[0] for r in got] == own_ts[(own_ts >= lo) & (own_ts < hi)].tolist()
        for at in (int(own_ts[0]), T0 + 5 * HOUR, int(own_ts[300]), int(own_ts[-1]) + 1):
            before = await rows(dsn, "SELECT ts FROM points_before(%s, %s) LIMIT 3", [ids[tag], at])
            assert [r[0] for r in before] == own_ts[own_ts < at][::-1][:3].tolist()
            after = await rows(dsn, "SELECT ts FROM points_after(%s, %s) LIMIT 3", [ids[tag], at])
            assert [r[0] for r in after] == own_ts[own_ts >= at][:3].tolist()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        # as Grafana would call it: the schema not on the search path
        cur = await con.execute(
            "SELECT count(*) FROM shopfloor.points_between(%s, %s, %s)",
            [[ids["a"], ids["c"]], 0, 2**62],
        )
        assert await cur.fetchall() == [(len(ts[0::2]) + 1000,)]


async def test_a_version_1_schema_keeps_its_layout_and_works(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("CREATE SCHEMA shopfloor")
        await con.execute("SET search_path TO shopfloor")
        for statement in (*pg_schema.DDL, *pg_schema.V1_PARTITIONED_DDL):
            await con.execute(statement)
    ts = T0 + np.arange(100) * 600 * SECOND  # 16 hours, two daily partitions
    h = PostgresHistorian(dsn, compaction_interval_s=None)
    await h.start()
    try:
        assert h.layout == "partitioned"
        await h.write(PointBatch.from_columns(["a"], np.zeros(100), ts, ts % 7))
        await h.flush()
        assert (await h.compact()).points == 0  # nothing to compact in that layout
        table = await h.read_raw("a", 0, 2**62)
        assert table.column("ts").cast("int64").to_pylist() == ts.tolist()
    finally:
        await h.close()
    (tag,) = await rows(dsn, "SELECT id FROM tags WHERE path = 'a'")
    got = await rows(
        dsn, "SELECT ts FROM points_between(%s, 0, %s) ORDER BY ts", [[tag[0]], T0 * 2]
    )
    assert [r[0] for r in got] == ts.tolist()
    last = await rows(dsn, "SELECT ts FROM points_before(%s, %s) LIMIT 1", [tag[0], int(ts[50])])
    assert last == [(int(ts[49]),)]
