"""Ingest throughput of the DuckDB historian against bare DuckDB, measured in one run.

Builds 1 Hz random-walk data for many tags, cut into PointBatches like a busy ingest, then
times, each ``--repeats`` times on a fresh database file:

* ``raw 10k appends``: a bare DuckDB connection inserting the same rows as prebuilt Arrow
  tables of the same batch size into an identical, unindexed ``points`` table (baseline);
* ``raw sorted 100k``: the same, but coalesced to ``flush_rows`` and sorted by (tag, ts)
  the way the historian commits, to show what sorting costs and saves without the rest;
* ``historian``: ``DuckDBHistorian.write`` of every batch and a final ``flush`` (end to
  end: tag mapping, queueing, coalescing, sorting, the latest-value table).

It prints the median points/s, the ratio to the baseline and the bytes per point, of the
whole database file after a checkpoint and of the points table's blocks alone.

Run: ``.venv/bin/python bench/ingest.py [--points N] [--batch N] [--tags N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian.commit_plan import sort_order
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.schema import POINTS_DDL

T0 = 1_700_000_000 * 10**9
FLUSH_ROWS = 100_000


def make_batches(points: int, batch: int, tags: int, seed: int = 0) -> list[PointBatch]:
    """1 Hz samples of ``tags`` random walks (sensor resolution 0.01), time-major order."""
    rng = np.random.default_rng(seed)
    seconds = -(-points // tags)
    paths = tuple(f"site/area{t // 100}/line{t // 10 % 10}/cell/eq{t % 10}/pv" for t in range(tags))
    level = rng.uniform(0.0, 500.0, tags)
    steps = rng.normal(0.0, 0.05, (seconds, tags))
    value = np.round(level + np.cumsum(steps, axis=0), 2).ravel()[:points]
    tag_index = np.tile(np.arange(tags, dtype=np.int32), seconds)[:points]
    # each tag samples once a second with a few ms of jitter
    ts = (T0 + np.repeat(np.arange(seconds, dtype=np.int64) * 10**9, tags))[:points]
    ts = ts + rng.integers(0, 5_000_000, points)
    quality = np.where(rng.random(points) < 0.001, Quality.BAD_SENSOR_FAILURE, Quality.GOOD)
    quality = quality.astype(np.uint32)
    return [
        PointBatch(
            tags=paths,
            tag_index=tag_index[i : i + batch],
            ts=ts[i : i + batch],
            value=value[i : i + batch],
            quality=quality[i : i + batch],
        )
        for i in range(0, points, batch)
    ]


def arrow_rows(b: PointBatch, order: npt.NDArray[np.intp] | None = None) -> pa.Table:
    """The batch as rows of the points table (tag ids = dictionary indices)."""
    pick = slice(None) if order is None else order
    return pa.table(
        {
            "tag_id": pa.array(b.tag_index[pick], pa.int32()),
            "ts": pa.array(b.ts[pick], pa.int64()),
            "value": pa.array(b.value[pick], pa.float64()),
            "quality": pa.array(b.quality[pick], pa.uint32()),
            "text": pa.nulls(len(b), pa.string()),
        }
    )


Result = tuple[float, int, int]
"""Seconds, file bytes after checkpoint, bytes of the blocks holding the points table."""


def points_bytes(db: Path) -> int:
    """Bytes of the storage blocks the ``points`` table occupies (checkpointed file)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        block_size = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()
        blocks = con.execute(
            "SELECT count(DISTINCT block_id) FROM pragma_storage_info('points') WHERE persistent"
        ).fetchone()
    finally:
        con.close()
    assert block_size is not None
    assert blocks is not None
    return int(block_size[0]) * int(blocks[0])


def raw_run(db: Path, tables: list[pa.Table]) -> Result:
    """Insert each table in its own autocommit, the baseline."""
    con = duckdb.connect(str(db))
    con.execute(POINTS_DDL)
    started = time.perf_counter()
    for table in tables:
        con.register("_in", table)
        con.execute("INSERT INTO points SELECT * FROM _in")
        con.unregister("_in")
    elapsed = time.perf_counter() - started
    con.execute("CHECKPOINT")
    con.close()
    return elapsed, db.stat().st_size, points_bytes(db)


def raw_sorted_run(db: Path, batches: list[PointBatch]) -> Result:
    """Coalesce to FLUSH_ROWS and sort by (tag, ts) inside the timing, like the writer."""
    con = duckdb.connect(str(db))
    con.execute(POINTS_DDL)
    started = time.perf_counter()
    group = max(1, FLUSH_ROWS // max(1, len(batches[0])))
    for i in range(0, len(batches), group):
        joined = PointBatch.concat(batches[i : i + group])
        order = sort_order(joined.tag_index, joined.ts)
        con.register("_in", arrow_rows(joined, order))
        con.execute("INSERT INTO points SELECT * FROM _in")
        con.unregister("_in")
    elapsed = time.perf_counter() - started
    con.execute("CHECKPOINT")
    con.close()
    return elapsed, db.stat().st_size, points_bytes(db)


def historian_run(db: Path, batches: list[PointBatch]) -> Result:
    """Write every batch through the historian, then flush; close checkpoints the file."""

    async def go() -> float:
        historian = DuckDBHistorian(db, flush_rows=FLUSH_ROWS)
        await historian.start()
        started = time.perf_counter()
        for b in batches:
            await historian.write(b)
        await historian.flush()
        elapsed = time.perf_counter() - started
        await historian.close()
        return elapsed

    elapsed = asyncio.run(go())
    return elapsed, db.stat().st_size, points_bytes(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    batches = make_batches(args.points, args.batch, args.tags)
    tables = [arrow_rows(b) for b in batches]
    n = sum(len(b) for b in batches)
    runs: dict[str, Callable[[Path], Result]] = {
        f"raw {args.batch:,} appends (baseline)": lambda db: raw_run(db, tables),
        f"raw sorted {FLUSH_ROWS:,}": lambda db: raw_sorted_run(db, batches),
        "historian write+flush": lambda db: historian_run(db, batches),
    }
    results: dict[str, list[Result]] = {name: [] for name in runs}
    tmp = Path(tempfile.mkdtemp(prefix="shopfloor-bench-"))
    try:
        for r in range(args.repeats):
            for name, run in runs.items():  # interleaved, so drift hits all rows alike
                db = tmp / f"{r}-{len(results[name])}.duckdb"
                results[name].append(run(db))
                shutil.rmtree(tmp)
                tmp.mkdir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"{n:,} points, {args.tags:,} tags at 1 Hz, batches of {args.batch:,}, "
        f"{args.repeats} repeats (median)"
    )
    header = (
        f"{'':32} {'points/s':>12} {'vs baseline':>12} {'file B/point':>13} {'points B/pt':>12}"
    )
    print(header)
    print("-" * len(header))
    base = None
    for name, res in results.items():
        rate = statistics.median(n / s for s, _, _ in res)
        size = statistics.median(b for _, b, _ in res) / n
        table_size = statistics.median(b for _, _, b in res) / n
        base = base or rate
        print(f"{name:32} {rate:12,.0f} {rate / base:12.2f} {size:13.2f} {table_size:12.2f}")
    print(
        "file B/point: database file after CHECKPOINT / points (includes the fixed blocks of"
        " tags, indexes and latest); points B/pt: blocks of the points table only"
    )


if __name__ == "__main__":
    main()
