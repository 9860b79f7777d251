"""DuckDB compaction: what only the embedded backend has (its todo pairs, its file, a kill).

What every backend must do around compaction (the same points before and after, late
points, concurrent writers, a failed step, closed ranges only) is in the contract suite.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pytest

from shopfloor.model import PointBatch
from shopfloor.server.historian.compaction import RANGE_NS, Todo
from shopfloor.server.historian.duckdb import DuckDBHistorian

DAY0 = 1_700_000_000 * 10**9 // RANGE_NS * RANGE_NS  # a UTC midnight, long closed
SECOND = 10**9
TAGS, SECONDS = 50, 30_000  # 1.5 million points in one day


def test_todo_new_pairs_are_the_distinct_unrecorded_day_tag_pairs() -> None:
    rng = np.random.default_rng(4)
    tag_id = rng.integers(1, 40, 20_000).astype(np.int32)
    ts = rng.integers(-3 * RANGE_NS, 5 * RANGE_NS, 20_000).astype(np.int64)  # across 1970
    pairs = [(int(t) // RANGE_NS * RANGE_NS, int(g)) for t, g in zip(ts, tag_id, strict=True)]
    known = set(pairs[:500])  # Python's // floors, like a day boundary before 1970 must
    todo = Todo(known)
    every, new = todo.commit_pairs(tag_id, ts)
    assert len(every) == len(set(every))
    assert set(every) == set(pairs)
    assert len(new) == len(set(new))
    assert set(new) == set(pairs) - known
    todo.touch(every, 1)
    assert todo.commit_pairs(tag_id, ts)[1] == []
    assert len(todo) == len(set(pairs))


def test_todo_keeps_pairs_written_after_the_chunk_began() -> None:
    todo = Todo()
    todo.touch([(0, 1), (0, 2), (0, 3)], 4)
    todo.touch([(0, 2)], 6)  # commit 6 came after the chunk's snapshot (commit 5)
    assert todo.discard(0, [1, 2], untouched_since=5) == [1]
    assert todo.tags_of(0) == [2, 3]


def _rows(db: Path) -> npt.NDArray[np.void]:
    """Every stored point, sorted: the multiset compaction must keep."""
    with duckdb.connect(str(db), read_only=True) as con:
        table = con.sql("SELECT tag_id, ts, value FROM points ORDER BY tag_id, ts").to_arrow_table()
    out = np.empty(table.num_rows, dtype=[("tag", "i4"), ("ts", "i8"), ("value", "f8")])
    for name, column in zip(out.dtype.names or (), table.column_names, strict=True):
        out[name] = table.column(column).to_numpy()
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed file of a day's points committed in time-major batches, not compacted."""
    db = tmp_path_factory.mktemp("compaction") / "source.duckdb"
    paths = [f"t/{i}" for i in range(TAGS)]
    seconds = np.arange(SECONDS, dtype=np.int64)

    async def write() -> None:
        h = DuckDBHistorian(db, compaction_interval_s=None)
        await h.start()
        try:
            for part in np.array_split(seconds, 30):
                ts = DAY0 + np.repeat(part * SECOND, TAGS)
                index = np.tile(np.arange(TAGS), len(part))
                await h.write(PointBatch.from_columns(paths, index, ts, (ts // SECOND) % 1009))
            await h.flush()
        finally:
            await h.close()

    asyncio.run(write())
    return db


_KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from shopfloor.server.historian.duckdb import DuckDBHistorian

    async def main() -> None:
        h = DuckDBHistorian(
            Path(sys.argv[1]), compaction_interval_s=None, compaction_chunk_rows=10**8
        )
        await h.start()
        print("compacting", flush=True)
        report = await h.compact()
        print("done", report.points, flush=True)
        await h.close()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("delay_s", [0.0, 0.1, 0.3])
def test_compaction_killed_midway_loses_and_duplicates_nothing(
    written: Path, tmp_path: Path, delay_s: float
) -> None:
    db = tmp_path / "h.duckdb"
    shutil.copy(written, db)
    before = _rows(db)
    assert len(before) == TAGS * SECONDS
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "compacting"
        time.sleep(delay_s)  # somewhere in the one transaction (about a second long)
    finally:
        child.kill()  # SIGKILL: no rollback, no close, no checkpoint
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    np.testing.assert_array_equal(_rows(db), before)  # all or nothing, never half

    async def again() -> int:
        h = DuckDBHistorian(db, compaction_interval_s=None)
        await h.start()
        try:
            return (await h.compact()).points
        finally:
            await h.close()

    assert asyncio.run(again()) in (0, TAGS * SECONDS)  # killed after or before the commit
    np.testing.assert_array_equal(_rows(db), before)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM compaction_todo").fetchone() == (0,)


async def test_a_file_from_before_compaction_compacts_its_old_days(
    written: Path, tmp_path: Path
) -> None:
    db = tmp_path / "old.duckdb"
    shutil.copy(written, db)
    with duckdb.connect(str(db)) as con:  # as a version-2 file: no todo table
        con.execute("DROP TABLE compaction_todo")
        con.execute("UPDATE shopfloor_meta SET value = '2' WHERE key = 'schema_version'")
    before = _rows(db)
    h = DuckDBHistorian(db, compaction_interval_s=None)
    await h.start()
    try:
        assert (await h.compact()).points == TAGS * SECONDS
    finally:
        await h.close()
    np.testing.assert_array_equal(_rows(db), before)


async def test_the_writer_compacts_by_itself_and_frees_the_old_blocks(
    written: Path, tmp_path: Path
) -> None:
    db = tmp_path / "h.duckdb"
    shutil.copy(written, db)

    def blocks() -> int:
        with duckdb.connect(str(db), read_only=True) as con:
            row = con.execute(
                "SELECT count(DISTINCT block_id) FROM pragma_storage_info('points') "
                "WHERE persistent"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before, committed = _rows(db), blocks()
    h = DuckDBHistorian(db, compaction_interval_s=0.05, compaction_chunk_rows=400_000)
    await h.start()
    try:
        # the same database instance as the writer's (same file, same configuration)
        with duckdb.connect(str(db), config={"memory_limit": "512MB"}) as con:
            deadline = time.monotonic() + 60
            while con.execute("SELECT count(*) FROM compaction_todo").fetchone() != (0,):
                assert time.monotonic() < deadline, "the writer did not compact on its own"
                await asyncio.sleep(0.05)
        # ingest goes on: the next checkpoint with changes drops the emptied row groups
        # even if a reader (the loop above) kept the one after the pass from doing so
        await h.write(PointBatch.from_columns(["t/other"], [0], [DAY0 + 2 * RANGE_NS], [1.0]))
    finally:
        await h.close()
    got = _rows(db)
    np.testing.assert_array_equal(got[got["tag"] != got["tag"].max()], before)
    # one run per tag instead of a run per tag and commit: fewer blocks hold the points
    assert blocks() < committed
