"""Both historian backends side by side, each beside its raw baseline from the same run.

Data: ``--tags`` random walks sampled at 1 Hz for ``--seconds`` (sensor resolution 0.01,
a few ms of jitter, 0.1 % Bad points), in time-major batches of ``--batch`` points, the
way an ingest stream delivers them.

Ingest, each ``--repeats`` times on fresh storage, interleaved so drift hits all rows:

* DuckDB baseline: a bare DuckDB connection appending the same rows as prebuilt Arrow
  tables, one autocommit per batch, into the same unindexed ``points`` table;
* DuckDB historian: ``DuckDBHistorian.write`` of every batch, then ``flush``;
* PostgreSQL baseline: one binary ``COPY`` per batch (autocommit) into an unindexed
  table of the historian's row layout, the stream built by the same numpy encoder;
* PostgreSQL historian: ``PostgresHistorian.write`` of every batch, then ``flush``.

PostgreSQL is a throwaway server from the installed binaries with its durable defaults
(fsync, synchronous commit and full-page writes on), on the same disk as DuckDB's file.

Bytes per point: DuckDB's file after CHECKPOINT, and its points table's blocks alone;
PostgreSQL's points table with its index (every partition), and the whole database.

Queries, on the last historian of each backend after adding one tag with a day of 1 Hz
data and enough tags with one point each to make 10,000 (median of ``--query-repeats``):
(a) one tag, one day, 1-minute buckets, every aggregate; (b) 1,000 tags (or ``--tags``),
the last hour, 1-minute buckets, every aggregate, one call per tag, all at once;
(c) the latest value of 10,000 tags by path.

Run: ``.venv/bin/python bench/historian.py [--tags N] [--seconds N] [--batch N]
[--repeats N] [--query-repeats N] [--backend duckdb|postgres]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa

from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.base import Aggregate, Historian
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.schema import POINTS_DDL
from shopfloor.testing.postgres import PostgresNotFound, PostgresServer

T0 = 1_700_000_000 * 10**9 // (86_400 * 10**9) * (86_400 * 10**9)  # a UTC midnight
SECOND = 10**9
DAY = 86_400 * SECOND
MINUTE = 60 * SECOND


# ------------------------------------------------------------------------------ data
def make_batches(tags: int, seconds: int, batch: int, seed: int = 0) -> list[PointBatch]:
    """1 Hz samples of ``tags`` random walks, time-major, cut into batches."""
    rng = np.random.default_rng(seed)
    points = tags * seconds
    paths = tuple(f"site/area{t // 100}/line{t // 10 % 10}/cell/eq{t % 10}/pv" for t in range(tags))
    level = rng.uniform(0.0, 500.0, tags)
    value = np.round(level + np.cumsum(rng.normal(0.0, 0.05, (seconds, tags)), axis=0), 2)
    tag_index = np.tile(np.arange(tags, dtype=np.int32), seconds)
    ts = T0 + np.repeat(np.arange(seconds, dtype=np.int64) * SECOND, tags)
    ts = ts + rng.integers(0, 5_000_000, points)
    quality = np.where(rng.random(points) < 0.001, Quality.BAD_SENSOR_FAILURE, Quality.GOOD)
    flat = value.ravel()
    q = quality.astype(np.uint32)
    return [
        PointBatch(
            paths,
            tag_index[i : i + batch],
            ts[i : i + batch],
            flat[i : i + batch],
            q[i : i + batch],
        )
        for i in range(0, points, batch)
    ]


def extras(tags: int) -> list[PointBatch]:
    """One tag with a day of 1 Hz data, and one-point tags up to 10,000 tags in all."""
    rng = np.random.default_rng(1)
    ts = T0 + np.arange(86_400, dtype=np.int64) * SECOND
    day = PointBatch.from_columns(
        ["site/day/pv"], np.zeros(len(ts)), ts, np.round(np.cumsum(rng.normal(0, 0.05, len(ts))), 2)
    )
    more = max(0, 10_000 - tags - 1)
    few = PointBatch.from_columns(
        [f"site/more/t{i}" for i in range(more)],
        np.arange(more),
        np.full(more, T0),
        rng.normal(size=more),
    )
    return [day, few]


def arrow_rows(b: PointBatch) -> pa.Table:
    """The batch as rows of DuckDB's points table (tag ids = dictionary indices)."""
    return pa.table(
        {
            "tag_id": pa.array(b.tag_index, pa.int32()),
            "ts": pa.array(b.ts, pa.int64()),
            "value": pa.array(b.value, pa.float64()),
            "quality": pa.array(b.quality, pa.uint32()),
            "text": pa.nulls(len(b), pa.string()),
        }
    )


# ------------------------------------------------------------------------- results
@dataclass
class Ingest:
    """One ingest run: seconds, and bytes of the points storage and of everything."""

    seconds: float
    points_bytes: int
    total_bytes: int


@dataclass
class Row:
    """A line of the table: a backend's run, repeated."""

    name: str
    runs: list[Ingest] = field(default_factory=list)
    queries: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ DuckDB
def duck_points_bytes(db: Path) -> int:
    """Bytes of the storage blocks of the ``points`` table (checkpointed file)."""
    with duckdb.connect(str(db), read_only=True) as con:
        size = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()
        blocks = con.execute(
            "SELECT count(DISTINCT block_id) FROM pragma_storage_info('points') WHERE persistent"
        ).fetchone()
    assert size is not None
    assert blocks is not None
    return int(size[0]) * int(blocks[0])


def duck_raw(db: Path, tables: list[pa.Table]) -> Ingest:
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
    return Ingest(elapsed, duck_points_bytes(db), db.stat().st_size)


async def historian_ingest(h: Historian, batches: list[PointBatch]) -> float:
    started = time.perf_counter()
    for b in batches:
        await h.write(b)
    await h.flush()
    return time.perf_counter() - started


def duck_historian(db: Path, batches: list[PointBatch]) -> Ingest:
    async def ingest() -> float:
        h = DuckDBHistorian(db)
        await h.start()
        try:
            return await historian_ingest(h, batches)
        finally:
            await h.close()  # checkpoints

    elapsed = asyncio.run(ingest())
    return Ingest(elapsed, duck_points_bytes(db), db.stat().st_size)


# -------------------------------------------------------------------------- PostgreSQL
async def pg_raw(dsn: str, batches: list[PointBatch]) -> Ingest:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute(f"CREATE TABLE raw_points({pg_schema.POINTS_COLUMNS})")
        copy_sql = pg_schema.COPY_POINTS.replace("COPY points", "COPY raw_points")
        started = time.perf_counter()
        for b in batches:
            stream = pg_schema.encode_points(b.ts, b.value, b.tag_index, b.quality, None)
            async with con.cursor() as cur, cur.copy(copy_sql) as copy:
                await copy.write(stream)
        elapsed = time.perf_counter() - started
        size = await one(con, "SELECT pg_total_relation_size('raw_points')")
        total = await one(con, "SELECT pg_database_size(current_database())")
    return Ingest(elapsed, size, total)


async def one(con: psycopg.AsyncConnection[Any], query: str) -> int:
    cur = await con.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def pg_sizes(dsn: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        points = await one(
            con,
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            "WHERE inhparent = 'shopfloor.points'::regclass",
        )
        total = await one(con, "SELECT pg_database_size(current_database())")
    return points, total


# ----------------------------------------------------------------------------- queries
async def timed(run: Callable[[], Awaitable[Any]], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds (after one warm-up call)."""
    await run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


async def queries(h: Historian, tags: int, seconds: int, repeats: int) -> dict[str, float]:
    for b in extras(tags):
        await h.write(b)
    await h.flush()
    paths = [m.path for m in await h.tags()]
    main = [p for p in paths if "/area" in p][:1000]
    end = T0 + seconds * SECOND
    every = list(Aggregate)

    async def a() -> None:
        table = await h.read_aggregates(
            "site/day/pv", T0, T0 + DAY, bucket_ns=MINUTE, aggregates=every
        )
        assert table.num_rows == 1440

    async def b() -> None:
        tables = await asyncio.gather(
            *(
                h.read_aggregates(p, end - 3600 * SECOND, end, bucket_ns=MINUTE, aggregates=every)
                for p in main
            )
        )
        assert all(t.num_rows >= min(60, seconds // 60) - 1 for t in tables)

    async def c() -> None:
        table = await h.latest(paths[:10_000])
        assert table.num_rows == min(10_000, len(paths))

    return {
        "(a) 1 tag, 1 day, 1-min": await timed(a, repeats),
        f"(b) {len(main):,} tags, 1 h, 1-min": await timed(b, repeats),
        f"(c) latest of {min(10_000, len(paths)):,} tags": await timed(c, repeats),
    }


# ------------------------------------------------------------------------------- main
def run_duckdb(args: argparse.Namespace, batches: list[PointBatch], tmp: Path) -> list[Row]:
    tables = [arrow_rows(b) for b in batches]
    raw, hist = Row("DuckDB Arrow append (baseline)"), Row("DuckDB historian")
    last: Path | None = None
    for r in range(args.repeats):
        raw.runs.append(duck_raw(tmp / f"raw{r}.duckdb", tables))
        last = tmp / f"hist{r}.duckdb"
        hist.runs.append(duck_historian(last, batches))
    assert last is not None

    async def query() -> dict[str, float]:
        h = DuckDBHistorian(last)
        await h.start()
        try:
            return await queries(h, args.tags, args.seconds, args.query_repeats)
        finally:
            await h.close()

    hist.queries = asyncio.run(query())
    return [raw, hist]


def run_postgres(args: argparse.Namespace, batches: list[PointBatch]) -> list[Row]:
    raw, hist = Row("PostgreSQL binary COPY (baseline)"), Row("PostgreSQL historian")
    settings = dict(item.split("=", 1) for item in args.pg)
    with PostgresServer(durable=True, settings=settings) as server:
        dsn = ""
        for r in range(args.repeats):
            raw.runs.append(asyncio.run(pg_raw(server.create_database(f"raw{r}"), batches)))
            dsn = server.create_database(f"hist{r}")

            async def ingest(dsn: str = dsn) -> Ingest:
                h = PostgresHistorian(dsn)
                await h.start()
                try:
                    elapsed = await historian_ingest(h, batches)
                finally:
                    await h.close()
                return Ingest(elapsed, *await pg_sizes(dsn))

            hist.runs.append(asyncio.run(ingest()))

        async def query() -> dict[str, float]:
            h = PostgresHistorian(dsn)
            await h.start()
            try:
                return await queries(h, args.tags, args.seconds, args.query_repeats)
            finally:
                await h.close()

        hist.queries = asyncio.run(query())
    return [raw, hist]


def report(rows: list[Row], n: int) -> None:
    names = list(dict.fromkeys(q for row in rows for q in row.queries))
    head = f"{'':36} {'points/s':>11} {'vs base':>8} {'B/pt pts':>9} {'B/pt all':>9}"
    head += "".join(f" {q:>28}" for q in names)
    print(head)
    print("-" * len(head))
    base = 0.0
    for row in rows:
        rate = statistics.median(n / r.seconds for r in row.runs)
        if "baseline" in row.name:
            base = rate
        pts = statistics.median(r.points_bytes for r in row.runs) / n
        total = statistics.median(r.total_bytes for r in row.runs) / n
        line = f"{row.name:36} {rate:11,.0f} {rate / base:8.2f} {pts:9.1f} {total:9.1f}"
        line += "".join(
            f" {row.queries[q]:>25.1f} ms" if q in row.queries else f" {'':>28}" for q in names
        )
        print(line)
    print(
        "B/pt pts: the points table's storage (DuckDB: its blocks; PostgreSQL: table and "
        "index, every partition); B/pt all: the whole file or database / points ingested"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=3_600)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-repeats", type=int, default=7)
    parser.add_argument("--backend", choices=["duckdb", "postgres"], action="append")
    parser.add_argument(
        "--pg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PostgreSQL server setting, e.g. --pg max_wal_size=4GB (repeatable)",
    )
    args = parser.parse_args()
    backends = args.backend or ["duckdb", "postgres"]

    batches = make_batches(args.tags, args.seconds, args.batch)
    n = sum(len(b) for b in batches)
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="shopfloor-bench-"))
    try:
        if "duckdb" in backends:
            rows += run_duckdb(args, batches, tmp)
        if "postgres" in backends:
            try:
                rows += run_postgres(args, batches)
            except PostgresNotFound as err:
                print(f"PostgreSQL skipped: {err}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{n:,} points, {args.tags:,} tags at 1 Hz for {args.seconds:,} s, batches of "
        f"{args.batch:,}, {args.repeats} ingest repeats (median), queries: median of "
        f"{args.query_repeats}"
    )
    report(rows, n)


if __name__ == "__main__":
    main()
