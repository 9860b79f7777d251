"""PostgreSQL rollups: hours compacted while rollups were off, or before they existed.

That rollup-served answers equal raw-served ones (every aggregate, time zones, late
points, the open tail, retention) is in the contract suite (test_historians.py); this
checks what only the PostgreSQL backend has: hours queued in ``rollup_todo`` and built by
later compaction passes, and the rollup rows against a plain numpy count of the points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from shopfloor.model import PointBatch
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.rollup import HOUR_NS, MINUTE_NS, RollupSettings

SECOND = 10**9
T0 = 1_700_000_000 * SECOND // HOUR_NS * HOUR_NS
OFF = RollupSettings(enabled=False)
ALL = list(Aggregate)


async def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("SET search_path TO shopfloor")
        cur = await con.execute(query, params)
        return await cur.fetchall() if cur.description else []


def _data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(21)
    ts = T0 + np.sort(rng.integers(0, 6 * HOUR_NS, 20_000))
    return ts, rng.integers(0, 3, len(ts)), rng.normal(size=len(ts))


async def _ask(dsn: str, rollups: RollupSettings | None = None) -> tuple[pa.Table, int]:
    h = PostgresHistorian(dsn, compaction_interval_s=None, rollups=rollups)
    await h.start()
    try:
        table = await h.read_buckets(
            ["a", "b", "c"], T0 + 7, T0 + 6 * HOUR_NS, bucket=30 * MINUTE_NS, aggregates=ALL
        )
        return table, h.rollup_use.queries
    finally:
        await h.close()


async def _minute_counts(dsn: str) -> dict[tuple[int, int], int]:
    got = await rows(dsn, "SELECT tag_id, bucket, pts FROM rollup_1m")
    return {(int(t), int(b)): int(n) for t, b, n in got}


async def _expected_counts(dsn: str, ts: Any, tag: Any) -> dict[tuple[int, int], int]:
    ids = dict(await rows(dsn, "SELECT path, id FROM tags"))
    tag_id = np.array([ids["abc"[i]] for i in range(3)])[tag]
    keys, counts = np.unique(np.stack([tag_id, ts - ts % MINUTE_NS]), axis=1, return_counts=True)
    return {(int(t), int(b)): int(n) for (t, b), n in zip(keys.T, counts, strict=True)}


async def _write_and_compact(dsn: str, rollups: RollupSettings | None) -> None:
    ts, tag, value = _data()
    h = PostgresHistorian(dsn, compaction_interval_s=None, rollups=rollups)
    await h.start()
    try:
        await h.write(PointBatch.from_columns(["a", "b", "c"], tag, ts, value))
        await h.flush()
        await h.compact()
    finally:
        await h.close()


async def _compact(dsn: str) -> None:
    h = PostgresHistorian(dsn, compaction_interval_s=None)
    await h.start()
    try:
        report = await h.compact()
        assert report.rollup_rows > 0
    finally:
        await h.close()


async def test_hours_compacted_while_rollups_were_off_are_built_later(dsn: str) -> None:
    await _write_and_compact(dsn, OFF)
    assert await rows(dsn, "SELECT count(*) FROM rollup_1m") == [(0,)]
    assert await rows(dsn, "SELECT count(DISTINCT block) FROM rollup_todo") == [(6,)]
    raw, used = await _ask(dsn)  # every queued hour is stale: the plain raw path answers
    assert used == 0
    await _compact(dsn)
    assert await rows(dsn, "SELECT count(*) FROM rollup_todo") == [(0,)]
    ts, tag, _ = _data()
    assert await _minute_counts(dsn) == await _expected_counts(dsn, ts, tag)
    served, _ = await _ask(dsn)
    plain, none = await _ask(dsn, OFF)
    assert none == 0
    for name in served.column_names:
        a, b = served.column(name), plain.column(name)
        if pa.types.is_floating(a.type):
            np.testing.assert_allclose(
                a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False), rtol=1e-9
            )
        else:
            assert a.to_pylist() == b.to_pylist() == raw.column(name).to_pylist(), name


async def test_a_schema_compacted_before_rollups_existed_rolls_up_its_hours(dsn: str) -> None:
    await _write_and_compact(dsn, None)
    await rows(dsn, "DROP TABLE rollup_1m, rollup_1h, rollup_todo, rollup_meta, raw_floor")
    await _compact(dsn)  # opening queues every cold hour; the pass builds them
    ts, tag, _ = _data()
    assert await _minute_counts(dsn) == await _expected_counts(dsn, ts, tag)
    hours = await rows(dsn, "SELECT sum(pts) FROM rollup_1h")
    assert hours == [(len(ts),)]
