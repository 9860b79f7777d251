"""Historian queries (read_buckets, read_at) beside plain SQL GROUP BY in the same run.

Data: ``--tags`` random walks at 1 Hz for one hour (0.1 % Bad points), one tag with a day
of 1 Hz data and ``--month-tags`` tags with 30 days of 1 Hz data, written through the
historian (so storage has its commit layout), then compacted and rolled up (``compact()``).

Queries, median of ``--repeats`` after a warm-up:

* (a) one tag, one day, 1-minute buckets: ``avg``, then every aggregate;
* (b) every tag, the last hour, 1-minute buckets, one call: ``avg``, then every aggregate;
* (c) ``read_at`` of every tag at 60 times in the last hour, linear;
* (d) the month tags, 30 days, 1-hour buckets, every aggregate (median of at most 3).

Each historian runs twice over the same storage: with rollups (the default) and with
rollups off (every answer from raw points). Baselines: DuckDB runs the same ``avg`` as one
SQL ``GROUP BY`` over a copy of the historian's file (same layout); PostgreSQL runs it
over the historian's own tables. Only the historian computes the bad counts, null
buckets, twa and delta.

Run: ``.venv/bin/python bench/queries.py [--tags N] [--month-tags N] [--repeats N]
[--backend duckdb|postgres]``
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
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psycopg

from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian.base import Aggregate, Historian, Interpolation
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.rollup import RollupSettings
from shopfloor.testing.postgres import PostgresNotFound, PostgresServer

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000 * SECOND // DAY * DAY  # a UTC midnight
END = T0 + DAY
DAY_TAG = "site/day/pv"
MONTH = 30 * DAY
MONTH_PREFIX = "site/month/"
RAW = RollupSettings(enabled=False)
NOW = END + 30 * SECOND
"""The historians' clock: just after the data, as live (the last day not compacted yet,
the last two minutes not rolled up: they come from raw points)."""


def clock() -> int:
    return NOW


GOOD = "(quality & 3221225472) = 0"


def batches(tags: int, seed: int = 0) -> list[PointBatch]:
    """The last hour of the day for ``tags`` tags, and the whole day for one more."""
    rng = np.random.default_rng(seed)
    seconds = 3600
    paths = tuple(f"site/area{t // 100}/line{t // 10 % 10}/eq{t % 10}/pv" for t in range(tags))
    value = rng.uniform(0, 500, tags) + np.cumsum(rng.normal(0, 0.05, (seconds, tags)), axis=0)
    ts = END - HOUR + np.repeat(np.arange(seconds, dtype=np.int64) * SECOND, tags)
    ts += rng.integers(0, 5_000_000, len(ts))
    quality = np.where(rng.random(len(ts)) < 0.001, Quality.BAD_SENSOR_FAILURE, Quality.GOOD)
    index = np.tile(np.arange(tags, dtype=np.int32), seconds)
    out = [
        PointBatch(
            paths,
            index[i : i + 10_000],
            ts[i : i + 10_000],
            value.ravel()[i : i + 10_000],
            quality.astype(np.uint32)[i : i + 10_000],
        )
        for i in range(0, len(ts), 10_000)
    ]
    day = T0 + np.arange(86_400, dtype=np.int64) * SECOND
    walk = np.cumsum(rng.normal(0, 0.05, len(day)))
    out.append(PointBatch.from_columns([DAY_TAG], np.zeros(len(day)), day, walk))
    return out


def month_batches(tags: int, seed: int = 1) -> list[PointBatch]:
    """30 days of 1 Hz points for ``tags`` tags, a day per batch."""
    rng = np.random.default_rng(seed)
    paths = [f"{MONTH_PREFIX}{t}" for t in range(tags)]
    out = []
    for day in range(30):
        start = END - MONTH + day * DAY
        ts = start + np.repeat(np.arange(86_400, dtype=np.int64) * SECOND, tags)
        ts += rng.integers(0, 5_000_000, len(ts))
        value = 50 + np.cumsum(rng.normal(0, 0.05, len(ts)))
        quality = np.where(rng.random(len(ts)) < 0.001, Quality.BAD_SENSOR_FAILURE, Quality.GOOD)
        index = np.tile(np.arange(tags, dtype=np.int32), 86_400)
        out.append(PointBatch(tuple(paths), index, ts, value, quality.astype(np.uint32)))
    return out


async def timed(run: Callable[[], Awaitable[Any]], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds (after one warm-up call)."""
    await run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


async def historian_queries(
    h: Historian, paths: list[str], month: list[str], repeats: int
) -> dict[str, float]:
    every = list(Aggregate)
    times = np.linspace(END - HOUR, END - 1, 60).astype(np.int64)

    def buckets(
        which: list[str], start: int, aggregates: list[Aggregate], rows: int
    ) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            table = await h.read_buckets(which, start, END, bucket=MINUTE, aggregates=aggregates)
            assert table.num_rows == rows, table.num_rows

        return run

    async def at() -> None:
        table = await h.read_at(paths, times, method=Interpolation.LINEAR)
        assert table.num_rows == len(paths) * 60

    async def month_hours() -> None:
        table = await h.read_buckets(month, END - MONTH, END, bucket=HOUR, aggregates=every)
        assert table.num_rows == len(month) * 720

    n = len(paths)
    return {
        "(a) avg": await timed(buckets([DAY_TAG], T0, [Aggregate.AVG], 1440), repeats),
        "(a) all": await timed(buckets([DAY_TAG], T0, every, 1440), repeats),
        "(b) avg": await timed(buckets(paths, END - HOUR, [Aggregate.AVG], 60 * n), repeats),
        "(b) all": await timed(buckets(paths, END - HOUR, every, 60 * n), repeats),
        "(c) read_at": await timed(at, repeats),
        "(d) month": await timed(month_hours, min(repeats, 3)),
    }


def duck_baseline(db: Path, ids: list[int], day_id: int, repeats: int) -> dict[str, float]:
    con = duckdb.connect(str(db), read_only=True)

    def sql(where: str, params: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        query = (
            "SELECT tag_id, ts - ts % 60000000000 AS bucket, avg(value) FROM points "
            f"WHERE {where} AND ts >= $start AND ts < $end AND {GOOD} GROUP BY ALL ORDER BY ALL"
        )

        async def run() -> None:
            con.sql(query, params={**params, "end": END}).to_arrow_table()

        return run

    try:
        return {
            "(a) avg": asyncio.run(
                timed(sql("tag_id = $id", {"id": day_id, "start": T0}), repeats)
            ),
            "(b) avg": asyncio.run(
                timed(
                    sql("list_contains($ids, tag_id)", {"ids": ids, "start": END - HOUR}), repeats
                )
            ),
        }
    finally:
        con.close()


async def pg_baseline(dsn: str, ids: list[int], day_id: int, repeats: int) -> dict[str, float]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
        await con.execute("SET search_path TO shopfloor; SET jit = off; SET work_mem = '32MB'")
        query = (
            "SELECT tag_id, ts - ts %% 60000000000 AS bucket, avg(value) FROM points "
            "WHERE tag_id = ANY(%(ids)s::int4[]) AND ts >= %(start)s AND ts < %(end)s "
            f"AND {GOOD.replace('3221225472', '-1073741824')} GROUP BY 1, 2 ORDER BY 1, 2"
        )

        def sql(which: list[int], start: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                cur = await con.execute(query, {"ids": which, "start": start, "end": END})
                await cur.fetchall()

            return run

        return {
            "(a) avg": await timed(sql([day_id], T0), repeats),
            "(b) avg": await timed(sql(ids, END - HOUR), repeats),
        }


async def load(h: Any, tags: int, month_tags: int) -> tuple[list[str], list[str], float]:
    """Write the data, compact and roll it up; return the hour's tags, the month's tags
    and the seconds ``compact()`` took."""
    for b in [*batches(tags), *month_batches(month_tags)]:
        await h.write(b)
    await h.flush()
    started = time.perf_counter()
    await h.compact()
    seconds = time.perf_counter() - started
    names = [m.path for m in await h.tags()]
    month = [p for p in names if p.startswith(MONTH_PREFIX)]
    return [p for p in names if p != DAY_TAG and p not in month], month, seconds


def tag_ids(db_rows: list[tuple[str, int]], paths: list[str]) -> tuple[list[int], int]:
    lookup = dict(db_rows)
    return [lookup[p] for p in paths], lookup[DAY_TAG]


def run_duckdb(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    db = tmp / "historian.duckdb"

    async def build() -> tuple[list[str], list[str], float]:
        h = DuckDBHistorian(db, compaction_interval_s=None, clock=clock)
        await h.start()
        try:
            return await load(h, args.tags, args.month_tags)
        finally:
            await h.close()

    paths, month, seconds = asyncio.run(build())
    print(f"DuckDB: compaction and rollups of everything written took {seconds:.1f} s")
    copy = tmp / "baseline.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy), read_only=True) as con:
        ids, day_id = tag_ids(
            [(str(p), int(i)) for p, i in con.execute("SELECT path, id FROM tags").fetchall()],
            paths,
        )
    base = duck_baseline(copy, ids, day_id, args.repeats)

    async def query(rollups: RollupSettings | None) -> dict[str, float]:
        h = DuckDBHistorian(db, compaction_interval_s=None, rollups=rollups, clock=clock)
        await h.start()
        try:
            return await historian_queries(h, paths, month, args.repeats)
        finally:
            await h.close()

    return {
        "DuckDB SQL GROUP BY (baseline)": base,
        "DuckDB historian, raw points": asyncio.run(query(RAW)),
        "DuckDB historian, rollups": asyncio.run(query(None)),
    }


def run_postgres(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    with PostgresServer() as server:
        dsn = server.create_database()

        async def run() -> dict[str, dict[str, float]]:
            h = PostgresHistorian(dsn, compaction_interval_s=None, clock=clock)
            await h.start()
            try:
                paths, month, seconds = await load(h, args.tags, args.month_tags)
                print(f"PostgreSQL: compaction and rollups took {seconds:.1f} s")
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as con:
                    cur = await con.execute("SELECT path, id FROM shopfloor.tags")
                    ids, day_id = tag_ids(
                        [(str(p), int(i)) for p, i in await cur.fetchall()], paths
                    )
                base = await pg_baseline(dsn, ids, day_id, args.repeats)
                served = await historian_queries(h, paths, month, args.repeats)
            finally:
                await h.close()
            h = PostgresHistorian(dsn, compaction_interval_s=None, rollups=RAW, clock=clock)
            await h.start()
            try:
                raw = await historian_queries(h, paths, month, args.repeats)
            finally:
                await h.close()
            return {
                "PostgreSQL SQL GROUP BY (baseline)": base,
                "PostgreSQL historian, raw points": raw,
                "PostgreSQL historian, rollups": served,
            }

        return asyncio.run(run())


def report(rows: dict[str, dict[str, float]], tags: int, month_tags: int) -> None:
    names = ["(a) avg", "(a) all", "(b) avg", "(b) all", "(c) read_at", "(d) month"]
    print(
        f"(a) 1 tag, 1 day of 1 Hz, 1-min buckets; (b) {tags:,} tags, last hour of 1 Hz, "
        f"1-min buckets, one call; (c) read_at {tags:,} tags x 60 times, linear; "
        f"(d) {month_tags} tags, 30 days of 1 Hz, 1-h buckets, all aggregates. Median ms."
    )
    head = f"{'':36}" + "".join(f" {n:>12}" for n in names)
    print(head)
    print("-" * len(head))
    for name, values in rows.items():
        cells = "".join(f" {values[n]:>12.1f}" if n in values else f" {'-':>12}" for n in names)
        print(f"{name:36}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--month-tags", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", choices=["duckdb", "postgres", "both"], default="both")
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    if args.backend in ("duckdb", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            rows.update(run_duckdb(args, Path(tmp)))
    if args.backend in ("postgres", "both"):
        try:
            rows.update(run_postgres(args))
        except PostgresNotFound as err:
            print(f"PostgreSQL skipped: {err}", file=sys.stderr)
    report(rows, args.tags, args.month_tags)


if __name__ == "__main__":
    main()
