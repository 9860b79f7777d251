"""Retention keeps the disk flat: a rolling window beside the same data kept forever.

Data: ``--tags`` tags of 1 Hz-like points (``--points`` per tag and day, random times,
random-walk values), written a day at a time for ``--days`` days with a fake clock; after
each day the historian compacts (as its timer would) and applies retention. Two runs per
backend on fresh storage, the same data:

* baseline: no retention (what every day adds stays);
* retention: raw points and rollups kept ``--keep`` days.

After each day the table prints, per run: the database's size on disk (DuckDB: the file
and WAL; PostgreSQL: the schema's tables with TOAST and indexes) and what the history
uses (DuckDB: used blocks plus WAL; PostgreSQL: live rows and indexes, the figure the
disk budget counts), and the retention pass's wall time. PostgreSQL runs when its
binaries are installed (a throwaway server, fsync off: sizes, not speed, are the point).

Run: ``.venv/bin/python bench/retention.py`` (about a minute with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from shopfloor.model import PointBatch
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.postgres import PostgresHistorian
from shopfloor.server.historian.retention_policy import DAY_NS, RetentionPolicy
from shopfloor.testing.postgres import PostgresNotFound, PostgresServer

DAY0 = 1_700_000_000 * 10**9 // DAY_NS * DAY_NS
HOUR = 3600 * 10**9

Row = tuple[int, int, float]  # on disk, used, pass seconds


def _day(rng: np.random.Generator, tags: list[str], day: int, points: int) -> PointBatch:
    start = DAY0 + day * DAY_NS
    ts = np.sort(rng.integers(start, start + DAY_NS, points * len(tags)))
    index = rng.integers(0, len(tags), len(ts))
    value = np.round(np.cumsum(rng.normal(0, 0.1, len(ts))), 2)
    return PointBatch.from_columns(tags, index, ts, value)


async def run(make: Callable[..., Any], args: argparse.Namespace, *, keep: int | None) -> list[Row]:
    rng = np.random.default_rng(1)
    tags = [f"acme/plant-1/area-{i % 4}/line/cell/eq-{i % 10}/tag-{i}" for i in range(args.tags)]
    now = [DAY0]
    policy = RetentionPolicy(raw_ns=keep, rollup_1m_ns=keep, rollup_1h_ns=keep)
    h = make(clock=lambda: now[0], compaction_interval_s=None, retention=policy)
    await h.start()
    rows: list[Row] = []
    try:
        for day in range(args.days):
            batch = _day(rng, tags, day, args.points)
            for part in np.array_split(np.arange(len(batch)), 24):  # hourly-ish commits
                mask = np.zeros(len(batch), dtype=np.bool_)
                mask[part] = True
                await h.write(batch.select(mask))
            await h.flush()
            now[0] = DAY0 + (day + 1) * DAY_NS + HOUR
            await h.compact()
            started = time.perf_counter()
            await h.apply_retention()
            seconds = time.perf_counter() - started
            totals = (await h.storage_report()).totals
            rows.append((totals.storage_bytes, totals.used_bytes, seconds))
    finally:
        await h.close()
    return rows


def show(name: str, base: list[Row], kept: list[Row], keep_days: int) -> None:
    print(f"\n{name}: baseline (kept forever) beside retention ({keep_days} days)")
    head = f"{'on disk MB':>11} {'used MB':>9}"
    print(f"{'day':>4} {head} | {head} {'pass s':>7}")
    for day, (b, k) in enumerate(zip(base, kept, strict=True), start=1):
        print(
            f"{day:>4} {b[0] / 1e6:>11.1f} {b[1] / 1e6:>9.1f} | "
            f"{k[0] / 1e6:>11.1f} {k[1] / 1e6:>9.1f} {k[2]:>7.2f}"
        )
    half = len(kept) // 2
    print(
        f"second half of the run: on disk at most {max(r[0] for r in kept[half:]) / 1e6:.1f} MB "
        f"with retention, {base[-1][0] / 1e6:.1f} MB and growing without "
        f"(last day {kept[-1][0] / base[-1][0]:.2f}x the baseline)"
    )


async def main(args: argparse.Namespace) -> None:
    keep = args.keep * DAY_NS
    with TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def duck(name: str) -> Callable[..., Any]:
            return lambda **o: DuckDBHistorian(folder / f"{name}.duckdb", **o)

        base = await run(duck("base"), args, keep=None)
        kept = await run(duck("kept"), args, keep=keep)
        show("DuckDB", base, kept, args.keep)
    try:
        server = PostgresServer()
    except PostgresNotFound:
        print("\nPostgreSQL: binaries not installed, skipped")
        return
    with server:
        for_base = server.create_database()
        for_kept = server.create_database()
        base = await run(lambda **o: PostgresHistorian(for_base, **o), args, keep=None)
        kept = await run(lambda **o: PostgresHistorian(for_kept, **o), args, keep=keep)
        show("PostgreSQL", base, kept, args.keep)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", type=int, default=40)
    parser.add_argument("--points", type=int, default=10_000, help="per tag and day")
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--keep", type=int, default=3, help="days kept")
    asyncio.run(main(parser.parse_args()))
