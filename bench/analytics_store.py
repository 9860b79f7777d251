"""The analytics store's grouped OEE sums over a month × 100 machines: the shared
PostgreSQL store (several API servers) beside the single server's SQLite file (the
baseline), in the same run.

Data (synthetic): one slice per machine and hour for ``--days`` days, with random
components, attributed to three 8-hour shifts (06:00, 14:00, 22:00 UTC), stored one
month per machine per ``put_hours`` (what the OEE job does on its first start).

Timed, median of ``--repeats`` after a warm-up, from the store's own thread (no event
loop, no HTTP): ``count_hours`` (the first question of every OEE query), and
``sum_hours`` of every machine over the month grouped ``none``, ``day``, ``shift`` and
``hour`` — one SQL ``SUM … GROUP BY`` each. PostgreSQL is a throwaway local server
(``shopfloor.testing.postgres``) with its durable defaults (``fsync``, synchronous
commit, like the SQLite file's ``synchronous=FULL``), on the same host over TCP, its
tables analysed after the load.

Run: ``.venv/bin/python bench/analytics_store.py [--machines N] [--days N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import psycopg

from shopfloor.config.analytics import ShiftsSection
from shopfloor.server.analytics.oee import COMPONENTS, HOUR_NS, Slices
from shopfloor.server.analytics.pg_store import PgAnalyticsStore
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.store import AnalyticsStore
from shopfloor.server.analytics.store_base import AnalyticsStorage
from shopfloor.testing.postgres import PostgresNotFound, PostgresServer

DAY = 24 * HOUR_NS
T0 = 1_700_000_000 * 10**9 // DAY * DAY  # a UTC midnight
GROUPS = ("none", "day", "shift", "hour")


def month_of(rng: np.random.Generator, hours: int) -> Slices:
    """One slice per hour from T0, shifts by the hour of day."""
    start = T0 + np.arange(hours, dtype=np.int64) * HOUR_NS
    hod = (start - T0) // HOUR_NS % 24
    shift = np.where((hod >= 6) & (hod < 14), 0, np.where((hod >= 14) & (hod < 22), 1, 2))
    first_hour = np.array([6, 14, 22])[shift]
    day = start // DAY * DAY
    shift_start = np.where(hod >= first_hour, day, day - DAY) + first_hour * HOUR_NS
    values = {c: rng.uniform(0, 3.6e12, hours) for c in COMPONENTS}
    return Slices(start, start + HOUR_NS, shift.astype(np.int64), shift_start, values)


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3


def run(
    store: AnalyticsStorage, args: argparse.Namespace, *, settle: Callable[[], object] = list
) -> dict[str, float]:
    rng = np.random.default_rng(7)
    cal = ShiftCalendar(ShiftsSection())
    hours = args.days * 24
    paths = [f"bench/site/area/line-{i // 10}/cell/m{i:03d}" for i in range(args.machines)]
    t = time.perf_counter()
    for path in paths:
        sl = month_of(rng, hours)
        days = [cal.day_of(int(s)) for s in sl.start]
        store.put_hours(path, sl, shift_names=cal.names, days=days, computed_ns=1)
    out = {"store a month, per machine": (time.perf_counter() - t) / len(paths) * 1e3}
    settle()
    end = T0 + hours * HOUR_NS
    out["count_hours"] = timed(lambda: store.count_hours(paths, T0, end), args.repeats)
    for group in GROUPS:
        got = store.sum_hours(paths, T0, end, group)
        assert len(got) == {"none": 1, "day": args.days, "hour": hours}.get(group, len(got))
        out[f"sum_hours, group {group}"] = timed(
            partial(store.sum_hours, paths, T0, end, group), args.repeats
        )
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run(AnalyticsStore(Path(tmp) / "analytics.sqlite"), args)
    try:
        with PostgresServer(durable=True) as server:
            dsn = server.create_database()
            with psycopg.connect(dsn, autocommit=True) as con:
                con.execute("CREATE SCHEMA shopfloor")

                def analyze() -> None:  # what autovacuum does soon after a bulk load
                    con.execute("ANALYZE")

                pg: dict[str, float] | None = run(
                    PgAnalyticsStore(dsn, "shopfloor"), args, settle=analyze
                )
    except PostgresNotFound as err:
        print(f"PostgreSQL skipped: {err}", file=sys.stderr)
        pg = None
    print(
        f"{args.machines} machines x {args.days} days, one slice per hour "
        f"({args.machines * args.days * 24:,} rows); {os.cpu_count()} cores; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"median of {args.repeats}, ms"
    )
    head = f"| {'operation':30} | {'SQLite (baseline)':>17} | {'PostgreSQL':>10} | {'ratio':>5} |"
    print(head)
    print("| " + " | ".join(["-" * 30, "-" * 16 + ":", "-" * 9 + ":", "-" * 4 + ":"]) + " |")
    for name, base in sqlite.items():
        other = "-" if pg is None else f"{pg[name]:.1f}"
        ratio = "-" if pg is None else f"{pg[name] / base:.1f}"
        print(f"| {name:30} | {base:17.1f} | {other:>10} | {ratio:>5} |")


if __name__ == "__main__":
    main()
