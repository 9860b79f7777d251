"""Alarm latency at ingest rates: from a batch's arrival at ingest to its alarms being
raised (journaled and published), beside its commit to the historian in the same run.

In one process, as the server wires them: a DuckDB historian (``--flush-interval``), the
ingestor, the live channel and the alarm engine with ``--rules`` H-limit rules, one per
tag (journal on the same disk, ``synchronous=FULL``). Every ``1/--rate`` s an edge batch
(edge + seq, so its answer means committed) of one point per tag arrives, started on
schedule rather than after the previous answer: ``--rules`` points per batch, 10 batches
a second = 100,000 points/s by default. In each batch ``--crossings`` tags go above their
limit and the ones above go back below: twice that many alarm transitions per batch.

Per batch: ``ingest→alarm`` is from calling ``Ingestor.ingest`` to the moment its last
transition comes out of ``AlarmEngine.events`` (after the journal's fsync);
``ingest→committed`` from the same call to its answer (the group commit that holds it).
Medians and tails over ``--seconds`` after a 1 s warm-up.

Then a flood (``--flood``, default 10,000): every rule crosses its limit in one batch,
and back in the next: the time until all alarms are journaled and published, and the
journal's size, beside a bare SQLite insert of as many journal rows in one transaction
(WAL, ``synchronous=FULL``) in the same run; median of 3.

Run: ``.venv/bin/python bench/alarms.py [--rules 10000] [--rate 10] [--seconds 15]
[--crossings 20] [--flush-interval 1.0] [--flood 10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from shopfloor.model import LiveBatch, PointBatch, now_ns
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.rules.engine import AlarmEngine, AlarmRule

LIMIT = 100.0
STEP_NS = 100_000_000
"""Point timestamps advance by this per batch (any step works: batches map back by it)."""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def make_batches(
    tags: list[str], count: int, crossings: int, t0: int
) -> tuple[list[PointBatch], list[int]]:
    """The batches, and per batch how many transitions it causes (ups and downs)."""
    rng = np.random.default_rng(1)
    high = np.zeros(len(tags), np.bool_)
    batches, expected = [], []
    for b in range(count):
        values = rng.uniform(0, LIMIT - 10, len(tags))
        going_up = rng.choice(np.flatnonzero(~high), crossings, replace=False)
        values[going_up] = LIMIT + 10
        expected.append(crossings + int(high.sum()))
        high[:] = False
        high[going_up] = True
        ts = np.full(len(tags), t0 + b * STEP_NS, np.int64)
        batches.append(PointBatch.from_columns(tags, np.arange(len(tags)), ts, values))
    return batches, expected


async def run(args: argparse.Namespace, tmp: Path) -> tuple[list[float], list[float], float]:
    """Per batch after the warm-up: ingest→alarm and ingest→committed (ms); the seconds."""
    tags = [f"acme/p1/area/line/cell/m{i // 10:04d}/t{i % 10}" for i in range(args.rules)]
    rules = [AlarmRule(f"{t}.H", t, "H", limit=LIMIT, deadband=1.0) for t in tags]
    historian = DuckDBHistorian(tmp / "history.duckdb", flush_interval_s=args.flush_interval)
    live: Channel[LiveBatch] = Channel("live", maxsize=256)
    ingestor = Ingestor(historian, live)
    engine = AlarmEngine(rules, tmp / "alarms.sqlite")
    count = int(args.seconds * args.rate)
    t0 = now_ns()
    batches, expected = make_batches(tags, count, args.crossings, t0)
    started: dict[int, float] = {}
    committed: dict[int, float] = {}
    raised: dict[int, float] = {}
    all_raised = asyncio.Event()

    async def watch() -> None:
        seen = [0] * count
        async with engine.events.subscribe("bench") as events:
            async for t in events:
                b = (t.ts_ns - t0) // STEP_NS
                seen[b] += 1
                if seen[b] == expected[b]:
                    raised[b] = time.perf_counter()
                    if len(raised) == count:
                        all_raised.set()

    async def send(b: int) -> None:
        started[b] = time.perf_counter()
        await ingestor.ingest(batches[b], source="bench", edge="bench-edge", seq=b + 1)
        committed[b] = time.perf_counter()

    await historian.start()
    await engine.start()
    async with asyncio.TaskGroup() as tasks:
        engine_task = tasks.create_task(engine.run(live), name="alarms")
        watcher = tasks.create_task(watch(), name="watch")
        await asyncio.sleep(0.1)  # both subscribed
        begin = time.perf_counter()
        sends = []
        for b in range(count):
            await asyncio.sleep(max(0.0, begin + b / args.rate - time.perf_counter()))
            sends.append(tasks.create_task(send(b)))
        await asyncio.gather(*sends)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_raised.wait(), 10)
        elapsed = time.perf_counter() - begin
        watcher.cancel()
        engine_task.cancel()
    await engine.close()
    await historian.close()
    warm = int(args.rate)  # the first second warms caches and the journal
    alarm_ms = [(raised[b] - started[b]) * 1000 for b in range(warm, count) if b in raised]
    commit_ms = [(committed[b] - started[b]) * 1000 for b in range(warm, count)]
    if len(raised) < count:
        print(f"batches whose alarms never all came: {count - len(raised)}")
    return alarm_ms, commit_ms, elapsed


def report(
    args: argparse.Namespace, alarm_ms: list[float], commit_ms: list[float], s: float
) -> None:
    count = int(args.seconds * args.rate)
    print(
        f"{args.rules:,} H-limit rules, one per tag; {count} batches of {args.rules:,} points "
        f"at {args.rate:g}/s ({count * args.rules / s:,.0f} points/s offered and taken in "
        f"{s:.1f} s); {2 * args.crossings} transitions per batch; historian flush_interval "
        f"{args.flush_interval:g} s"
    )
    print(f"{'':28}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}{'batches':>10}")
    for name, values in (("ingest→alarm (journaled)", alarm_ms), ("ingest→committed", commit_ms)):
        print(
            f"{name:28}{statistics.median(values):10.1f}{percentile(values, 90):10.1f}"
            f"{percentile(values, 99):10.1f}{max(values):10.1f}{len(values):10}"
        )
    ratio = statistics.median(alarm_ms) / statistics.median(commit_ms)
    print(f"alarm / commit, medians: {ratio:.2f}")


async def flood(rules: int, tmp: Path) -> tuple[float, float, int]:
    """Every rule crosses its limit in one batch: seconds until all are journaled and
    published, seconds to clear them again, and the journal's bytes."""
    tags = [f"acme/p1/area/line/cell/m{i // 10:04d}/t{i % 10}" for i in range(rules)]
    engine = AlarmEngine(
        [AlarmRule(f"{t}.H", t, "H", limit=LIMIT) for t in tags], tmp / "flood.sqlite"
    )
    await engine.start()
    t0 = now_ns()
    up = PointBatch.from_columns(
        tags, np.arange(rules), np.full(rules, t0), np.full(rules, LIMIT + 1)
    )
    down = PointBatch.from_columns(
        tags, np.arange(rules), np.full(rules, t0 + STEP_NS), np.full(rules, LIMIT - 1)
    )
    started = time.perf_counter()
    came = await engine.process(LiveBatch(up))
    raised = time.perf_counter() - started
    started = time.perf_counter()
    went = await engine.process(LiveBatch(down))
    cleared = time.perf_counter() - started
    await engine.close()
    assert len(came) == len(went) == rules
    return raised, cleared, journal_bytes(tmp)


def journal_bytes(tmp: Path) -> int:
    """The journal's files (database and WAL)."""
    return sum(f.stat().st_size for f in tmp.glob("flood.sqlite*"))


def bare_sqlite(rules: int, tmp: Path) -> float:
    """The floor: the same number of journal rows in one SQLite transaction (WAL, FULL)."""
    con = sqlite3.connect(tmp / "bare.sqlite", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY, alarm TEXT, event TEXT, ts_ns INTEGER, "
        "before TEXT, after TEXT, user TEXT, comment TEXT, value REAL)"
    )
    rows = [
        (f"a{i}.H", "activated", i, "normal", "unacknowledged", "", "", 101.0) for i in range(rules)
    ]
    started = time.perf_counter()
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO journal (alarm, event, ts_ns, before, after, user, comment, value) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.execute("COMMIT")
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def report_flood(rules: int, raised: float, cleared: float, size: int, bare: float) -> None:
    print(f"\nflood: all {rules:,} rules cross in one batch (median of 3)")
    print(f"{'':34}{'seconds':>10}{'per alarm':>12}")
    print(f"{'raised, journaled, published':34}{raised:10.3f}{raised / rules * 1e6:10.1f} us")
    print(f"{'cleared again':34}{cleared:10.3f}{cleared / rules * 1e6:10.1f} us")
    print(f"{'bare SQLite insert (baseline)':34}{bare:10.3f}{bare / rules * 1e6:10.1f} us")
    print(
        f"journal: {size / 1e6:.1f} MB for {2 * rules:,} transitions "
        f"({size / (2 * rules):.0f} B each); raised / bare: {raised / bare:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--crossings", type=int, default=20)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--flood", type=int, default=10_000, help="0: skip the flood")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-alarms-") as tmp:
        alarm_ms, commit_ms, seconds = asyncio.run(run(args, Path(tmp)))
    report(args, alarm_ms, commit_ms, seconds)
    if args.flood:
        runs = []
        for _ in range(3):
            with tempfile.TemporaryDirectory(prefix="shopfloor-bench-flood-") as tmp:
                runs.append(
                    (*asyncio.run(flood(args.flood, Path(tmp))), bare_sqlite(args.flood, Path(tmp)))
                )
        raised, cleared, size, bare = (statistics.median(r[i] for r in runs) for i in range(4))
        report_flood(args.flood, raised, cleared, int(size), bare)


if __name__ == "__main__":
    main()
