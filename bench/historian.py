"""Both historian backends side by side, each beside its raw baseline from the same run.

Data: ``--tags`` random walks sampled at 1 Hz for ``--seconds`` (sensor resolution 0.01,
``--jitter-ms`` of uniform timestamp jitter at nanosecond resolution, 0.1 % Bad points),
in time-major batches of ``--batch`` points, the way an ingest stream delivers them.

Ingest, each ``--repeats`` times on fresh storage, interleaved so drift hits all rows:

* DuckDB baseline: a bare DuckDB connection appending the same rows as prebuilt Arrow
  tables, one autocommit per batch, into the same unindexed ``points`` table;
* DuckDB historian: ``DuckDBHistorian.write`` of every batch, then ``flush``;
* PostgreSQL baseline: one binary ``COPY`` per batch (autocommit) into an unindexed
  narrow table of the old row layout, the stream built by the same numpy encoder;
* PostgreSQL historian: ``PostgresHistorian.write`` of every batch, then ``flush``.

Then each historian compacts (``compact()``: DuckDB rewrites closed days tag by tag,
PostgreSQL moves closed hours into compressed blocks), timed, with its longest single
transaction. On the last one, after the queries, the same points a day later are
ingested alone, then two days later beside a compaction pass of the first copy: how
much compaction slows ingest down.

PostgreSQL is a throwaway server from the installed binaries with its durable defaults
(fsync, synchronous commit and full-page writes on), on the same disk as DuckDB's file.

Bytes per point, before and after compaction: DuckDB's points table's used blocks (after
CHECKPOINT; the file keeps freed blocks for reuse, so its size says little) and every
used block of the database; PostgreSQL's points storage (tables, TOAST and indexes) and
the whole database.

Queries, on the last historian of each backend (compacted) after adding one tag with a
day of 1 Hz data and enough tags with one point each to make 10,000 (median of
``--query-repeats``): (a) one tag, one day, 1-minute buckets, avg/min/max/first/last/count;
(b) 1,000 tags (or ``--tags``), the last hour, the same, in one ``read_buckets`` call (and,
for comparison, one ``read_aggregates`` call per tag, all at once);
(c) the latest value of 10,000 tags by path.

Memory: for each of ``--memory-limits``, a child process ingests and compacts the same
data into a DuckDB historian with that ``memory_limit`` and reports its peak RSS above
what it held before the historian started (the data itself).

Reads on a long history (PostgreSQL): one tag with ``--history-days`` of 1 Hz points in
the old narrow layout and in the blocks layout (compacted); the last hour through the
``points`` view and through ``points_between``, the last point before it through the view
and through ``points_before``, and ``read_raw`` of the last hour.

Run: ``.venv/bin/python bench/historian.py [--tags N] [--seconds N] [--batch N]
[--jitter-ms MS] [--repeats N] [--query-repeats N] [--backend duckdb|postgres]
[--memory-limits 128MB,1GB] [--history-days N]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import psycopg
import pyarrow as pa

from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.base import Aggregate, Historian
from shopfloor.server.historian.compaction import CompactionReport
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.schema import POINTS_DDL
from shopfloor.testing.postgres import PostgresNotFound, PostgresServer

T0 = 1_700_000_000 * 10**9 // (86_400 * 10**9) * (86_400 * 10**9)  # a UTC midnight
SECOND = 10**9
DAY = 86_400 * SECOND
MINUTE = 60 * SECOND


# ------------------------------------------------------------------------------ data
def make_batches(
    tags: int, seconds: int, batch: int, seed: int = 0, jitter_ms: float = 5.0
) -> list[PointBatch]:
    """1 Hz samples of ``tags`` random walks, time-major, cut into batches."""
    rng = np.random.default_rng(seed)
    points = tags * seconds
    paths = tuple(f"site/area{t // 100}/line{t // 10 % 10}/cell/eq{t % 10}/pv" for t in range(tags))
    level = rng.uniform(0.0, 500.0, tags)
    value = np.round(level + np.cumsum(rng.normal(0.0, 0.05, (seconds, tags)), axis=0), 2)
    tag_index = np.tile(np.arange(tags, dtype=np.int32), seconds)
    ts = T0 + np.repeat(np.arange(seconds, dtype=np.int64) * SECOND, tags)
    if jitter_ms > 0:
        ts = ts + rng.integers(0, int(jitter_ms * 1_000_000), points)
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
    """One ingest run: seconds, bytes of the points storage and of everything, then the
    same after compaction with the compaction's time and longest transaction."""

    seconds: float
    points_bytes: int
    total_bytes: int
    compacted_bytes: int | None = None
    compacted_total: int | None = None
    compact_s: float | None = None
    longest_step_s: float | None = None


@dataclass
class Row:
    """A line of the table: a backend's run, repeated."""

    name: str
    runs: list[Ingest] = field(default_factory=list)
    queries: dict[str, float] = field(default_factory=dict)
    beside: tuple[float, float, float] | None = None
    """Seconds to ingest the data alone, the same beside a compaction pass, and the pass."""


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


def duck_used_bytes(db: Path) -> int:
    """Bytes of every used block of the database (freed blocks are kept for reuse)."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT block_size * used_blocks FROM pragma_database_size()").fetchone()
    assert row is not None
    return int(row[0])


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
    return Ingest(elapsed, duck_points_bytes(db), duck_used_bytes(db))


async def historian_ingest(h: Historian, batches: list[PointBatch]) -> float:
    started = time.perf_counter()
    for b in batches:
        await h.write(b)
    await h.flush()
    return time.perf_counter() - started


def duck_historian(db: Path, batches: list[PointBatch]) -> Ingest:
    async def ingest() -> float:
        h = DuckDBHistorian(db, compaction_interval_s=None)
        await h.start()
        try:
            return await historian_ingest(h, batches)
        finally:
            await h.close()  # checkpoints

    async def compact() -> CompactionReport:
        h = DuckDBHistorian(db, compaction_interval_s=None)
        await h.start()
        try:
            return await h.compact()  # checkpoints when done
        finally:
            await h.close()

    elapsed = asyncio.run(ingest())
    before, before_total = duck_points_bytes(db), duck_used_bytes(db)
    done = asyncio.run(compact())
    return Ingest(
        elapsed,
        before,
        before_total,
        duck_points_bytes(db),
        duck_used_bytes(db),
        done.seconds,
        done.longest_step_s,
    )


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


PG_POINTS_BYTES = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'shopfloor' "
    "AND c.relkind = 'r' AND (c.relname IN ('points', 'points_recent', 'points_cold') "
    "OR c.relname LIKE 'points\\_2%')"
)
"""The points storage of any layout: blocks (recent, cold) or narrow daily partitions,
each with its TOAST table and indexes."""


async def pg_sizes(dsn: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        points = await one(con, PG_POINTS_BYTES)
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
    for extra in extras(tags):
        await h.write(extra)
    await h.flush()
    paths = [m.path for m in await h.tags()]
    main = [p for p in paths if "/area" in p][:1000]
    end = T0 + seconds * SECOND
    every = [Aggregate.AVG, Aggregate.MIN, Aggregate.MAX, Aggregate.FIRST, Aggregate.LAST]
    every.append(Aggregate.COUNT)

    async def a() -> None:
        table = await h.read_aggregates(
            "site/day/pv", T0, T0 + DAY, bucket_ns=MINUTE, aggregates=every
        )
        assert table.num_rows == 1440

    async def b() -> None:
        table = await h.read_buckets(
            main, end - 3600 * SECOND, end, bucket=MINUTE, aggregates=every
        )
        assert table.num_rows == len(main) * 60

    async def b_each() -> None:
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
        "(b) the same, a call per tag": await timed(b_each, repeats),
        f"(c) latest of {min(10_000, len(paths)):,} tags": await timed(c, repeats),
    }


class Compacting(Historian, Protocol):
    """A historian that compacts on request (both backends)."""

    async def compact(self) -> CompactionReport:
        """Compact every closed range now."""


def shifted(batches: list[PointBatch], days: int) -> list[PointBatch]:
    """The same batches ``days`` later (ranges of their own, closed all the same)."""
    return [PointBatch(b.tags, b.tag_index, b.ts + days * DAY, b.value, b.quality) for b in batches]


async def ingest_beside_compaction(
    h: Compacting, batches: list[PointBatch]
) -> tuple[float, float, float]:
    """Ingest a day's copy alone; then another copy while the first is compacted."""
    alone = await historian_ingest(h, shifted(batches, 1))
    started = time.perf_counter()
    compacting = asyncio.create_task(h.compact())
    beside = await historian_ingest(h, shifted(batches, 2))
    await compacting
    return alone, beside, time.perf_counter() - started


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
        h = DuckDBHistorian(last, compaction_interval_s=None)
        await h.start()
        try:
            found = await queries(h, args.tags, args.seconds, args.query_repeats)
            hist.beside = await ingest_beside_compaction(h, batches)
            return found
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
                h = PostgresHistorian(dsn, compaction_interval_s=None)
                await h.start()
                try:
                    elapsed = await historian_ingest(h, batches)
                    before = await pg_sizes(dsn)
                    done = await h.compact()  # ends with VACUUM of the recent table
                finally:
                    await h.close()
                after = await pg_sizes(dsn)
                return Ingest(elapsed, *before, *after, done.seconds, done.longest_step_s)

            hist.runs.append(asyncio.run(ingest()))

        async def query() -> dict[str, float]:
            h = PostgresHistorian(dsn, compaction_interval_s=None)
            await h.start()
            try:
                found = await queries(h, args.tags, args.seconds, args.query_repeats)
                hist.beside = await ingest_beside_compaction(h, batches)
                return found
            finally:
                await h.close()

        hist.queries = asyncio.run(query())
    return [raw, hist]


def report(rows: list[Row], n: int) -> None:
    names = list(dict.fromkeys(q for row in rows for q in row.queries))
    head = (
        f"{'':34} {'points/s':>10} {'vs base':>7} {'B/pt pts':>8} {'B/pt all':>8} "
        f"{'compact':>8} {'step':>6} {'B/pt pts':>8} {'B/pt all':>8}"
    )
    head += "".join(f" {q:>25}" for q in names)
    print(f"{'':73}{'after compaction':-^32}")
    print(head)
    print("-" * len(head))
    base = 0.0
    for row in rows:
        rate = statistics.median(n / r.seconds for r in row.runs)
        if "baseline" in row.name:
            base = rate
        pts = statistics.median(r.points_bytes for r in row.runs) / n
        total = statistics.median(r.total_bytes for r in row.runs) / n
        line = f"{row.name:34} {rate:10,.0f} {rate / base:7.2f} {pts:8.1f} {total:8.1f}"
        if all(r.compacted_bytes is not None for r in row.runs):
            compact = statistics.median(r.compact_s or 0.0 for r in row.runs)
            step = statistics.median(r.longest_step_s or 0.0 for r in row.runs)
            after = statistics.median(r.compacted_bytes or 0 for r in row.runs) / n
            after_all = statistics.median(r.compacted_total or 0 for r in row.runs) / n
            line += f" {compact:7.1f}s {step:5.2f}s {after:8.1f} {after_all:8.1f}"
        else:
            line += f" {'':>8} {'':>6} {'':>8} {'':>8}"
        line += "".join(
            f" {row.queries[q]:>22.1f} ms" if q in row.queries else f" {'':>25}" for q in names
        )
        print(line)
    for row in rows:
        if row.beside is not None:
            alone, beside, passed = row.beside
            print(
                f"{row.name}: the same points ingested beside a compaction pass in "
                f"{beside:.2f} s (alone {alone:.2f} s, {alone / beside:.2f} of the rate); "
                f"the pass took {passed:.2f} s"
            )
    print(
        "B/pt pts: the points storage (DuckDB: the points table's used blocks; PostgreSQL: "
        "tables, TOAST and indexes); B/pt all: every used block of the DuckDB file, the "
        "whole PostgreSQL database; per point ingested. compact: the compaction pass; "
        "step: its longest transaction"
    )


# ------------------------------------------------------------------------------ memory
def memory_probe(args: argparse.Namespace, limit: str) -> None:
    """In a child process: ingest and compact under ``limit``; print RSS as JSON."""
    batches = make_batches(args.tags, args.seconds, args.batch, jitter_ms=args.jitter_ms)
    gc.collect()
    held = _status_kb("VmRSS")
    db = Path(tempfile.mkdtemp(prefix="shopfloor-bench-mem-")) / "h.duckdb"

    async def run() -> None:
        h = DuckDBHistorian(db, memory_limit=limit, compaction_interval_s=None)
        await h.start()
        try:
            await historian_ingest(h, batches)
            await h.compact()
            await h.read_raw(batches[0].tags[0], T0, T0 + DAY, limit=10**7)
        finally:
            await h.close()

    try:
        asyncio.run(run())
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)
    print(json.dumps({"held_kb": held, "peak_kb": _status_kb("VmHWM")}))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} is not in /proc/self/status")


def run_memory(args: argparse.Namespace) -> None:
    print("\nDuckDB historian memory (ingest and compaction in a child process, per limit)")
    print(f"{'memory_limit':>14} {'data held':>10} {'peak RSS':>10} {'historian':>10}")
    for limit in args.memory_limits.split(","):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-probe",
                limit,
                *("--tags", str(args.tags), "--seconds", str(args.seconds)),
                *("--batch", str(args.batch), "--jitter-ms", str(args.jitter_ms)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        held, peak = probe["held_kb"] / 1024, probe["peak_kb"] / 1024
        print(f"{limit:>14} {held:8.0f}MB {peak:8.0f}MB {peak - held:8.0f}MB")
    print("historian: peak RSS above the data the process held before it started")


# ------------------------------------------------------------------------ long history
async def history_reads(server: PostgresServer, days: int, repeats: int) -> None:
    """Reads of one tag with a long history: old narrow layout vs blocks, view vs functions."""
    ts = T0 + np.arange(days * 86_400, dtype=np.int64) * SECOND
    value = np.round(np.cumsum(np.random.default_rng(2).normal(0, 0.05, len(ts))), 2)
    end = int(ts[-1]) + 1
    hour = 3600 * SECOND
    sqls = {
        "view, last hour": (
            "SELECT count(*) FROM points WHERE tag_id = %s AND ts >= %s AND ts < %s",
            (end - hour, end),
        ),
        "points_between, last hour": (
            "SELECT count(*) FROM points_between(ARRAY[%s], %s, %s)",
            (end - hour, end),
        ),
        "view, last point before": (
            "SELECT ts FROM points WHERE tag_id = %s AND ts < %s ORDER BY ts DESC LIMIT 1",
            (end - hour,),
        ),
        "points_before, LIMIT 1": (
            "SELECT ts FROM points_before(%s, %s) LIMIT 1",
            (end - hour,),
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for layout in ("narrow (version 1)", "blocks"):
        dsn = server.create_database()
        if layout.startswith("narrow"):
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
                await con.execute("CREATE SCHEMA shopfloor")
                await con.execute("SET search_path TO shopfloor")
                for statement in (*pg_schema.DDL, *pg_schema.V1_PARTITIONED_DDL):
                    await con.execute(statement)
        h = PostgresHistorian(dsn, compaction_interval_s=None)
        await h.start()
        try:
            for i in range(0, len(ts), 100_000):
                part = slice(i, i + 100_000)
                await h.write(
                    PointBatch.from_columns(["x"], np.zeros(len(ts[part])), ts[part], value[part])
                )
            await h.flush()
            await h.compact()

            async def raw(h: PostgresHistorian = h) -> None:
                await h.read_raw("x", end - hour, end)

            out = {"read_raw, last hour": await timed(raw, repeats)}
        finally:
            await h.close()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
            await con.execute("SET search_path TO shopfloor")
            await con.execute("SET jit = off")
            tag = await one(con, "SELECT id FROM tags WHERE path = 'x'")
            for name, (query, params) in sqls.items():
                bound = (tag, *params)

                async def run(query: str = query, bound: tuple[int, ...] = bound) -> None:
                    await (await con.execute(query, bound)).fetchall()

                out[name] = await timed(run, repeats)
        results[layout] = out
    print(f"\nPostgreSQL reads of one tag with {days} days of 1 Hz points (median ms)")
    names = list(next(iter(results.values())))
    print(f"{'':28}" + "".join(f" {n:>26}" for n in names))
    for layout, out in results.items():
        print(f"{layout:28}" + "".join(f" {out[n]:>23.1f} ms" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=3_600)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--jitter-ms", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-repeats", type=int, default=7)
    parser.add_argument("--backend", choices=["duckdb", "postgres"], action="append")
    parser.add_argument("--memory-limits", default="32MB,128MB,1GB", help="empty: skip")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--history-days", type=int, default=7, help="0: skip")
    parser.add_argument(
        "--pg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PostgreSQL server setting, e.g. --pg max_wal_size=4GB (repeatable)",
    )
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args, args.memory_probe)
        return
    backends = args.backend or ["duckdb", "postgres"]

    batches = make_batches(args.tags, args.seconds, args.batch, jitter_ms=args.jitter_ms)
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
        f"{n:,} points, {args.tags:,} tags at 1 Hz for {args.seconds:,} s with "
        f"{args.jitter_ms:g} ms of jitter, batches of {args.batch:,}, {args.repeats} ingest "
        f"repeats (median), queries: median of {args.query_repeats}"
    )
    report(rows, n)
    if "duckdb" in backends and args.memory_limits:
        run_memory(args)
    if "postgres" in backends and args.history_days > 0:
        try:
            with PostgresServer(durable=True) as server:
                asyncio.run(history_reads(server, args.history_days, args.query_repeats))
        except PostgresNotFound as err:
            print(f"PostgreSQL skipped: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
