"""Energy of 100 machines over 30 days: from stored hours and from scratch, beside the time
to read that raw data with ``read_raw``, in the same run.

Data: the machines of ``bench/analytics.py`` (state runs, reasons, part counters), each
with an ``energy_kwh`` meter reading every ``--counter-period`` seconds: 12 kW while
running, 3 kW while stopped, reset to 0 mid-month. Three 8-hour shifts with a daily
30-minute break.

Timed, median of ``--repeats`` after a warm-up:

* read raw: ``read_raw`` of the tags energy is computed from (meter, state, three part
  counters) of every machine over the month;
* energy from scratch: read + compute of every machine over the month (a query with
  nothing stored), and the compute alone on series already read;
* energy from stored hours: the month grouped none, by day and by shift (after the job
  stored every hour, timed once as "job catch-up").

Run: ``.venv/bin/python bench/energy.py [--machines N] [--days N] [--counter-period S]
[--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from analytics import (  # bench/analytics.py: the same machines and timing
    DAY,
    HOUR,
    NAMES,
    SECOND,
    SECTION,
    T0,
    machine_batch,
    machines,
    timed,
)
from shopfloor.model import PointBatch
from shopfloor.server.analytics.energy import compute_energy, read_window
from shopfloor.server.analytics.energy_job import EnergyJob
from shopfloor.server.analytics.energy_service import EnergyMeter, EnergyService
from shopfloor.server.analytics.machines import Machine
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.historian.duckdb import DuckDBHistorian


def meter(m: Machine) -> EnergyMeter:
    return EnergyMeter(
        path=m.path,
        id=m.id,
        line=m.line,
        source="counter",
        energy_tag=m.tag("energy_kwh"),
        state_tag=m.tag("state"),
        part_tags=(m.tag("part_count"), m.tag("good_count"), m.tag("scrap_count")),
    )


def energy_batch(m: Machine, oee: PointBatch, days: int, period_s: int) -> PointBatch:
    """The machine's meter reading from its states: 12 kW running, 3 kW stopped."""
    k = oee.tags.index(m.tag("state"))
    pick = oee.tag_index == k
    starts, states = oee.ts[pick], oee.value[pick]
    grid = np.arange(T0, T0 + days * DAY, period_s * SECOND, dtype=np.int64)
    running = states[np.searchsorted(starts, grid, side="right") - 1] == 1
    kwh = np.cumsum(np.where(running, 12.0, 3.0) * period_s / 3600.0)
    reset = np.searchsorted(grid, T0 + days * DAY // 2)
    kwh[reset:] -= kwh[reset]
    return PointBatch.from_columns(
        (m.tag("energy_kwh"),), np.zeros(len(grid), dtype=np.int64), grid, kwh
    )


async def load(h: DuckDBHistorian, fleet: list[Machine], args: argparse.Namespace) -> float:
    """Write every machine's month (OEE tags and meter), commit and compact it; the kWh
    the meters counted, summed here independently: each meter's rise before and after
    its reset (the first reading has no reading before it, so adds nothing)."""
    points = 0
    expected = 0.0
    started = time.perf_counter()
    for i, m in enumerate(fleet):
        oee = machine_batch(m, i, args.days, args.counter_period)
        energy = energy_batch(m, oee, args.days, args.counter_period)
        points += len(oee) + len(energy)
        kwh = energy.value
        reset = int(np.argmin(kwh))
        expected += float(kwh[reset - 1] - kwh[0] + kwh[-1] - kwh[reset])
        await h.write(oee)
        await h.write(energy)
    await h.flush()
    await h.compact()
    print(f"wrote and compacted {points:,} points in {time.perf_counter() - started:.1f} s")
    return expected


def report(rows: dict[str, float], args: argparse.Namespace) -> None:
    """The table, each row beside the raw read of the same run."""
    base = rows["read raw (read_raw, 5 tags x machines)"]
    print(
        f"{args.machines} machines x {args.days} days, readings every {args.counter_period} s; "
        f"median of {args.repeats} (ms)"
    )
    head = f"{'':44} {'ms':>10} {'x read raw':>11}"
    print(head)
    print("-" * len(head))
    for name, ms in rows.items():
        print(f"{name:44} {ms:>10.1f} {ms / base:>11.3f}")


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    end = T0 + args.days * DAY
    now = end + HOUR

    def clock() -> int:
        return now

    fleet = machines(args.machines)
    h = DuckDBHistorian(tmp / "historian.duckdb", compaction_interval_s=None, clock=clock)
    await h.start()
    expected = await load(h, fleet, args)
    analytics = Analytics(h, fleet, SECTION, tmp, clock=clock)
    await analytics.start()
    service = EnergyService(analytics, [meter(m) for m in fleet], SECTION.energy)
    await service.start()
    meters = service.meters
    try:
        rows: dict[str, float] = {}

        async def read_raw() -> None:
            for m in fleet:
                for name in ("energy_kwh", *NAMES[:1], *NAMES[2:]):
                    t = await h.read_raw(m.tag(name), T0, end, limit=10_000_000)
                    t.column("value").to_numpy()

        rows["read raw (read_raw, 5 tags x machines)"] = await timed(read_raw, args.repeats)

        async def scratch() -> None:
            await service.energy(meters, T0, end, "none")  # nothing stored: all on demand

        rows["energy from scratch (read + compute)"] = await timed(scratch, args.repeats)
        known = {t.path for t in await h.tags()}
        lo, hi = read_window(T0, end, service.max_gap_ns)
        series = [
            await service.series(
                m, lo, hi, known=known, before=await service.values_before([m], lo, known)
            )
            for m in meters
        ]

        async def compute_only() -> None:
            for s in series:
                compute_energy(s, analytics.calendar, T0, end)

        rows["energy compute only (series already read)"] = await timed(compute_only, args.repeats)
        ((_, _, _, a),) = await service.energy(meters, T0, end, "none")
        job = EnergyJob(service, SECTION.oee, clock=clock)
        started = time.perf_counter()
        hours = await job.step()
        rows["job catch-up: store every hour (once)"] = (time.perf_counter() - started) * 1000
        print(f"the job stored {hours:,} machine-hours")
        for group in ("none", "day", "shift"):

            async def stored(group: str = group) -> None:
                await service.energy(meters, T0, end, group)

            rows[f"energy from stored hours, group={group}"] = await timed(stored, args.repeats)
        ((_, _, _, b),) = await service.energy(meters, T0, end, "none")
        for key, value in a.items():  # stored hours give the on-demand answer
            if isinstance(value, float):
                assert abs(value - b[key]) <= 1e-9 * max(1.0, abs(value)), key
        assert abs(a["kwh"] - expected) <= 1e-9 * expected, (a["kwh"], expected)
        print(
            f"month: {a['kwh']:,.0f} kWh (the meters counted {expected:,.0f}), "
            f"{a['kwh_per_good_part']:.3f} kWh per good part"
        )
    finally:
        await analytics.close()
        await h.close()
    report(rows, args)


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
