"""OEE of 100 machines over 30 days: from stored hours and from scratch, beside the time
to read that raw data with ``read_raw``, in the same run.

Data (synthetic, written through a DuckDB historian and compacted): per machine a
``state`` tag (runs of 40 min on average, then stops: micro-stops, idling, setups,
breakdowns), its ``down_reason``, and ``part_count``/``good_count``/``scrap_count``
sampled every ``--counter-period`` seconds while running (one counter reset mid-month).
Three 8-hour shifts with a daily 30-minute break.

Timed, median of ``--repeats`` after a warm-up:

* read raw: ``read_raw`` of the five tags of every machine over the month (paged);
* OEE from scratch: read + compute of every machine over the month (what a query does
  with nothing stored), and the compute alone on series already read;
* OEE from stored hours: one month, one answer per machine set, grouped none, by day and
  by shift (after the job stored every hour, timed once as "job catch-up").

Run: ``.venv/bin/python bench/analytics.py [--machines N] [--days N] [--counter-period S]
[--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from shopfloor.config.analytics import AnalyticsSection
from shopfloor.model import PointBatch
from shopfloor.server.analytics.job import OeeJob
from shopfloor.server.analytics.machines import Machine
from shopfloor.server.analytics.oee import compute_slices, read_window
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.historian.duckdb import DuckDBHistorian

SECOND = 10**9
HOUR = 3600 * SECOND
DAY = 24 * HOUR
T0 = 1_700_000_000 * SECOND // DAY * DAY  # a UTC midnight
NAMES = ("state", "down_reason", "part_count", "good_count", "scrap_count")
SECTION = AnalyticsSection.model_validate(
    {
        "shifts": {"breaks": [{"start": "12:00", "end": "12:30"}]},
        "oee": {"backfill": "400d"},
    }
)


def machines(n: int) -> list[Machine]:
    return [
        Machine(
            path=f"bench/site/area/line-{i // 10}/cell/m{i:03d}",
            id=f"m{i:03d}",
            line=f"line-{i // 10}",
            ideal_cycle_s=60.0,
            reason_labels={},
        )
        for i in range(n)
    ]


def machine_batch(m: Machine, seed: int, days: int, period_s: int) -> PointBatch:
    """One machine's month as one batch of columns."""
    rng = np.random.default_rng(seed)
    end = T0 + days * DAY
    n = int(days * 24 * 1.6) + 10  # about 1.5 stops an hour
    run = rng.exponential(40 * 60, n)
    kind = rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15])  # micro, idle, setup, down
    stop = np.choose(
        kind,
        [
            rng.uniform(10, 110, n),
            rng.lognormal(6, 0.6, n),
            rng.lognormal(7, 0.4, n),
            rng.lognormal(7.5, 0.8, n),
        ],
    )
    state_of = np.array([2, 2, 3, 4])[kind]
    reason_of = np.choose(kind, [3, 2, 7, rng.choice([4, 6], n)])
    edges = T0 + np.cumsum(np.column_stack((run, stop)).ravel() * SECOND).astype(np.int64)
    starts = np.concatenate(([T0], edges[:-1]))
    keep = starts < end
    starts = starts[keep]
    states = np.column_stack((np.ones(n), state_of)).ravel()[: len(starts)]
    reasons = np.column_stack((np.zeros(n), reason_of)).ravel()[: len(starts)]
    # counters sampled while running: parts at 55-70 s each
    grid = np.arange(T0, end, period_s * SECOND, dtype=np.int64)
    seg = np.searchsorted(starts, grid, side="right") - 1
    running = states[seg] == 1
    made = np.cumsum(running * period_s / rng.uniform(55, 70, len(grid)))
    parts = np.floor(made)
    scrap = np.floor(made * 0.02)
    reset = np.searchsorted(grid, T0 + days * DAY // 2)
    parts[reset:] -= parts[reset]  # a PLC restart mid-month
    scrap[reset:] -= scrap[reset]
    grid, parts, scrap = grid[running], parts[running], scrap[running]
    tags = tuple(m.tag(name) for name in NAMES)
    idx = np.concatenate(
        [
            np.full(len(starts), 0),
            np.full(len(starts), 1),
            *(np.full(len(grid), k) for k in (2, 3, 4)),
        ]
    )
    ts = np.concatenate([starts, starts, grid, grid, grid])
    value = np.concatenate([states, reasons, parts, parts - scrap, scrap])
    return PointBatch.from_columns(tags, idx, ts, value)


async def load(h: DuckDBHistorian, fleet: list[Machine], args: argparse.Namespace) -> None:
    """Write every machine's month, commit and compact it."""
    points = 0
    started = time.perf_counter()
    for i, m in enumerate(fleet):
        batch = machine_batch(m, i, args.days, args.counter_period)
        points += len(batch)
        await h.write(batch)
    await h.flush()
    await h.compact()
    print(f"wrote and compacted {points:,} points in {time.perf_counter() - started:.1f} s")


async def timed(run: Callable[[], Awaitable[Any]], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds (after one warm-up call)."""
    await run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    end = T0 + args.days * DAY
    now = end + HOUR

    def clock() -> int:
        return now

    fleet = machines(args.machines)
    h = DuckDBHistorian(tmp / "historian.duckdb", compaction_interval_s=None, clock=clock)
    await h.start()
    await load(h, fleet, args)
    analytics = Analytics(h, fleet, SECTION, tmp, clock=clock)
    await analytics.start()
    try:
        rows: dict[str, float] = {}

        async def read_raw() -> None:
            for m in fleet:
                for name in NAMES:
                    t = await h.read_raw(m.tag(name), T0, end, limit=10_000_000)
                    t.column("value").to_numpy()

        rows["read raw (read_raw, 5 tags x machines)"] = await timed(read_raw, args.repeats)

        async def scratch() -> None:
            await analytics.oee(fleet, T0, end, "none")  # nothing stored yet: all on demand

        rows["OEE from scratch (read + compute)"] = await timed(scratch, args.repeats)
        known = {t.path for t in await h.tags()}
        series = []
        for m in fleet:
            lo, hi = read_window(analytics.calendar, analytics.settings, T0, end)
            series.append(await analytics.series(m, lo, hi, known=known))

        async def compute_only() -> None:
            for s in series:
                compute_slices(s, analytics.calendar, analytics.settings, T0, end)

        rows["OEE compute only (series already read)"] = await timed(compute_only, args.repeats)
        job = OeeJob(analytics, SECTION.oee, clock=clock)
        started = time.perf_counter()
        hours = await job.step()
        rows["job catch-up: store every hour (once)"] = (time.perf_counter() - started) * 1000
        print(f"the job stored {hours:,} machine-hours")
        for group in ("none", "day", "shift"):

            async def stored(group: str = group) -> None:
                await analytics.oee(fleet, T0, end, group)

            rows[f"OEE from stored hours, group={group}"] = await timed(stored, args.repeats)
        one = await analytics.oee(fleet, T0, end, "none")
        again = await analytics.oee(fleet, T0, end, "none")
        assert one == again
    finally:
        await analytics.close()
        await h.close()
    base = rows["read raw (read_raw, 5 tags x machines)"]
    print(
        f"{args.machines} machines x {args.days} days, counters every {args.counter_period} s; "
        f"median of {args.repeats} (ms)"
    )
    head = f"{'':44} {'ms':>10} {'x read raw':>11}"
    print(head)
    print("-" * len(head))
    for name, ms in rows.items():
        print(f"{name:44} {ms:>10.1f} {ms / base:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--counter-period", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
