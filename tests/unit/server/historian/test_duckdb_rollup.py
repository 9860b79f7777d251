"""DuckDB rollups: what only the embedded backend has (the frontier, late marks, a kill).

That rollup-served answers equal raw-served ones over both backends (every aggregate,
time zones, late points, the open tail, retention) is in the contract suite
(:mod:`shopfloor.testing.historian_rollup_contract`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from shopfloor.model import PointBatch
from shopfloor.server.historian import duckdb_rollup
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.historian.compaction import RANGE_NS, Todo
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.rollup import HOUR_NS, MINUTE_NS, RollupSettings, cells_of_points

SECOND = 10**9
DAY0 = 1_700_000_000 * SECOND // RANGE_NS * RANGE_NS  # a UTC midnight, long closed
TAGS, SECONDS = 20, 20_000  # 400,000 points over five and a half hours
ALL = list(Aggregate)
OFF = RollupSettings(enabled=False)


def test_points_before_the_frontier_are_marked_late_per_hour_and_tag() -> None:
    todo = Todo([(DAY0, 1)])
    tag = np.array([1, 1, 2, 2, 2], np.int32)
    ts = np.array([DAY0 + 5, DAY0 + 2 * HOUR_NS, DAY0 + 7, DAY0 + 9, DAY0 + RANGE_NS + 1])
    assert todo.commit_pairs(tag, ts)[1] == [(DAY0, 2), (DAY0 + RANGE_NS, 2)]  # no frontier
    todo.late_before = DAY0 + HOUR_NS + 1
    pairs, rows = todo.commit_pairs(tag, ts)
    assert pairs == [(DAY0, 1), (DAY0, 2), (DAY0 + RANGE_NS, 2)]
    # new pairs first, then one mark per late hour and tag (the 02:00 point is not late)
    assert rows == [(DAY0, 2), (DAY0 + RANGE_NS, 2), (DAY0, 1, DAY0), (DAY0, 2, DAY0)]


def _write_day(db: Path, *, rollups: RollupSettings = OFF) -> None:
    paths = [f"t/{i}" for i in range(TAGS)]
    seconds = np.arange(SECONDS, dtype=np.int64)

    async def write() -> None:
        h = DuckDBHistorian(db, compaction_interval_s=None, rollups=rollups)
        await h.start()
        try:
            for part in np.array_split(seconds, 10):
                ts = DAY0 + np.repeat(part * SECOND, TAGS)
                index = np.tile(np.arange(TAGS), len(part))
                value = np.sin(ts / 1e12 + index) * 100 + index
                quality = np.where((ts // SECOND) % 97 == 0, 0x80000000, 0)
                await h.write(PointBatch.from_columns(paths, index, ts, value, quality))
            await h.flush()
            await h.compact()  # compacted, not rolled up
        finally:
            await h.close()

    asyncio.run(write())


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed, compacted file of 400,000 points and no rollups yet."""
    db = tmp_path_factory.mktemp("rollup") / "source.duckdb"
    _write_day(db)
    return db


async def _answers(db: Path, rollups: RollupSettings | None = None) -> list[pa.Table]:
    h = DuckDBHistorian(db, compaction_interval_s=None, rollups=rollups)
    await h.start()
    try:
        paths = [m.path for m in await h.tags()]
        out = []
        for bucket, start, end in [
            (HOUR_NS, DAY0, DAY0 + 6 * HOUR_NS),
            (10 * MINUTE_NS, DAY0 + 7 * SECOND, DAY0 + 5 * HOUR_NS + 3),
        ]:
            out.append(await h.read_buckets(paths, start, end, bucket=bucket, aggregates=ALL))
        if rollups is None:
            assert h.rollup_use.queries == len(out)
        return out
    finally:
        await h.close()


def _assert_tables_close(got: list[pa.Table], want: list[pa.Table]) -> None:
    for a, b in zip(got, want, strict=True):
        for name in a.column_names:
            x, y = a.column(name), b.column(name)
            assert x.null_count == y.null_count, name
            if pa.types.is_floating(x.type):
                np.testing.assert_allclose(
                    x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), rtol=1e-9
                )
            else:
                assert x.to_pylist() == y.to_pylist(), name


def _stored_minutes(db: Path) -> tuple[int | None, dict[str, Any], dict[str, Any]]:
    """The frontier, the stored 1-minute rows below it, and those recomputed from raw."""
    with duckdb.connect(str(db), read_only=True) as con:
        frontier = duckdb_rollup.read_frontier(con)
        hi = frontier if frontier is not None else DAY0
        stored = con.sql(
            "SELECT * FROM rollup_1m WHERE bucket < ? ORDER BY tag_id, bucket", params=[hi]
        ).to_arrow_table()
        raw = con.sql(
            "SELECT tag_id, ts, value, quality FROM points WHERE ts < ?", params=[hi]
        ).to_arrow_table()
    edges = np.arange(DAY0, max(hi, DAY0) + 1, MINUTE_NS)
    fresh = cells_of_points(
        raw.column("tag_id").to_numpy(),
        raw.column("ts").to_numpy(),
        raw.column("value").to_numpy(),
        raw.column("quality").to_numpy(),
        edges,
    )
    want = {"tag_id": fresh.tag.tolist(), "bucket": fresh.start.tolist()}
    for name in ("n", "pts", "bad", "first_ts", "last_ts", "head_ts", "span_ns"):
        want[name] = getattr(fresh, name).tolist()
    got = {name: stored.column(name).to_pylist() for name in want}
    return frontier, got, want


async def test_a_refresh_moves_the_frontier_in_bounded_steps_over_gaps(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    far = DAY0 + 400 * RANGE_NS  # a year later: the refresh must not walk every hour between
    now = [far + 3 * HOUR_NS]
    h = DuckDBHistorian(
        db, compaction_interval_s=None, compaction_chunk_rows=5_000, clock=lambda: now[0]
    )
    await h.start()
    try:
        for t0 in (DAY0, far):
            ts = t0 + np.arange(7200, dtype=np.int64) * SECOND
            await h.write(PointBatch.from_columns(["a", "b"], ts % 2, ts, ts % 1009))
        await h.flush()
        report = await h.compact()
        # 2 x 7,200 points, at most 5,000 a step: a few steps, not 9,600 hours' worth
        assert 3 <= report.rollup_steps <= 12
    finally:
        await h.close()
    frontier, got, want = _stored_minutes(db)
    assert frontier == now[0] - 120 * SECOND  # two minutes of grace, on a whole minute
    assert got == want


_KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from shopfloor.server.historian.duckdb import DuckDBHistorian

    async def main() -> None:
        h = DuckDBHistorian(
            Path(sys.argv[1]), compaction_interval_s=None, compaction_chunk_rows=10_000
        )
        await h.start()
        print("refreshing", flush=True)
        await h.compact()
        print("done", flush=True)
        await h.close()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("delay_s", [0.05, 0.3, 0.6])
def test_a_refresh_killed_midway_leaves_whole_steps_and_finishes_later(
    written: Path, tmp_path: Path, delay_s: float
) -> None:
    db = tmp_path / "h.duckdb"
    shutil.copy(written, db)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "refreshing"
        time.sleep(delay_s)  # somewhere among the refresh's 46 steps (about a second)
    finally:
        child.kill()  # SIGKILL: no rollback, no close, no checkpoint
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    _, got, want = _stored_minutes(db)
    assert got == want  # every minute below the frontier is there, and right
    asyncio.run(_refresh_all(db))  # the next refresh finishes the work
    _, got, want = _stored_minutes(db)
    assert got == want
    assert len(got["bucket"]) == TAGS * -(-SECONDS // 60)
    _assert_tables_close(asyncio.run(_answers(db)), asyncio.run(_answers(db, OFF)))


async def _refresh_all(db: Path) -> None:
    h = DuckDBHistorian(db, compaction_interval_s=None)
    await h.start()
    try:
        await h.compact()
    finally:
        await h.close()


async def test_a_file_from_before_rollups_rolls_up_its_history(
    written: Path, tmp_path: Path
) -> None:
    db = tmp_path / "old.duckdb"
    shutil.copy(written, db)
    with duckdb.connect(str(db)) as con:  # as a version-3 file
        for table in ("rollup_1m", "rollup_1h", "rollup_meta", "raw_floor"):
            con.execute(f"DROP TABLE {table}")
        con.execute("ALTER TABLE compaction_todo DROP COLUMN hour")
        con.execute("UPDATE shopfloor_meta SET value = '3' WHERE key = 'schema_version'")
    await _refresh_all(db)
    _, got, want = _stored_minutes(db)
    assert got == want
    assert len(got["bucket"]) > 0
    _assert_tables_close(await _answers(db), await _answers(db, OFF))


async def test_late_writers_beside_refreshes_lose_no_mark(tmp_path: Path) -> None:
    """Writers backfill hours already rolled up while refreshes run: whatever commits
    between a refresh's snapshot and its end stays marked, and the last refresh catches up."""
    db = tmp_path / "h.duckdb"
    h = DuckDBHistorian(db, compaction_interval_s=None, flush_interval_s=0.01)
    await h.start()
    rng = np.random.default_rng(5)
    try:
        ts = DAY0 + np.arange(4 * 3600, dtype=np.int64) * SECOND
        await h.write(PointBatch.from_columns(["a", "b"], ts % 2, ts, rng.normal(size=len(ts))))
        await h.flush()
        await h.compact()
        done = asyncio.Event()

        async def backfill(tag: str) -> None:
            for k in range(30):
                late = DAY0 + rng.integers(0, 4 * HOUR_NS, 20) // SECOND * SECOND + 1 + k
                await h.write(PointBatch.from_columns([tag], np.zeros(20), late, np.full(20, k)))
                await asyncio.sleep(0.002)

        async def refresher() -> None:
            while not done.is_set():
                await h.compact()
                await asyncio.sleep(0.001)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(refresher())
            async with asyncio.TaskGroup() as writers:
                writers.create_task(backfill("a"))
                writers.create_task(backfill("b"))
            await h.flush()
            done.set()
        await h.compact()
        with duckdb.connect(str(db), config={"memory_limit": "512MB"}) as con:
            marks = con.execute(
                "SELECT count(*) FROM compaction_todo WHERE hour IS NOT NULL"
            ).fetchall()
        assert marks == [(0,)]
    finally:
        await h.close()
    _, got, want = _stored_minutes(db)
    assert got == want


@pytest.mark.parametrize(
    ("limit", "points"),
    [
        ("32MB", 160_000),  # 32 MB of arrays beside a 32 MB DuckDB
        ("128MB", 640_000),
        ("1GB", 1_000_000),  # never more than a compaction chunk
        ("2GiB", 1_000_000),
        ("1MB", 50_000),  # never so few that a refresh crawls
        ("512 kib", 50_000),
        ("lots", 1_000_000),  # unreadable: the chunk size
    ],
)
def test_a_refresh_step_reads_as_many_points_as_the_memory_limit_holds(
    limit: str, points: int
) -> None:
    assert duckdb_rollup.step_points(limit, 1_000_000) == points
