"""Outbox appends per second for 1,000-point batches: segment log vs SQLite, fsync vs none.

In one run, on the same disk, rounds alternating between the contenders:

* baseline: ``os.write`` of the same bytes to one file, plus ``fdatasync`` per batch in
  the fsync rows (the floor any durable store pays on this disk);
* segments: :class:`SegmentLog` behind :class:`DurableOutbox` (what the edge runs);
* sqlite: :class:`SqliteLog` (WAL; ``synchronous=FULL`` or ``OFF``) behind the same;
* ×8 rows: eight concurrent appenders (eight poll loops) to show group commit.

Each cell is the median of ``--rounds`` rounds. appends/s and MB/s count payload bytes;
"vs base" is the row's median over the baseline's of the same durability mode.

Run: ``.venv/bin/python bench/outbox.py [--rounds 5] [--fsync-appends 200] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shopfloor.edge.buffer import Durability, DurableOutbox, LogStore, SegmentLog, SqliteLog
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.model import PointBatch

POINTS = 1000


def _payload() -> bytes:
    rng = np.random.default_rng(1)
    tags = [f"acme/plant/area/line/cell/machine-{i}/signal" for i in range(50)]
    batch = PointBatch.from_columns(
        tags,
        rng.integers(0, 50, POINTS),
        1_764_000_000_000_000_000 + np.arange(POINTS) * 1_000_000,
        rng.normal(50, 5, POINTS),
        np.zeros(POINTS),
    )
    return encode_payload(batch)


def _baseline(directory: Path, payload: bytes, n: int, sync: bool) -> float:
    path = directory / "baseline.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    for _ in range(n):
        os.write(fd, payload)
        if sync:
            os.fdatasync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    path.unlink()
    return n / elapsed


async def _outbox(
    make: Callable[[Path], LogStore], directory: Path, payload: bytes, n: int, writers: int
) -> float:
    outbox = DurableOutbox(make(directory), max_bytes=1 << 40)
    await outbox.open()
    await outbox.append(payload, points=POINTS)  # open files, reserve seqs: not timed

    async def writer(count: int) -> None:
        for _ in range(count):
            await outbox.append(payload, points=POINTS)

    start = time.perf_counter()
    await asyncio.gather(*(writer(n // writers) for _ in range(writers)))
    elapsed = time.perf_counter() - start
    await outbox.close()
    return (n // writers) * writers / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fsync-appends", type=int, default=200)
    parser.add_argument("--none-appends", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a real disk)")
    args = parser.parse_args()
    payload = _payload()
    root = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    stores: dict[str, Callable[[Durability], Callable[[Path], LogStore]]] = {
        "segments": lambda d: lambda p: SegmentLog(p, durability=d),
        "sqlite": lambda d: lambda p: SqliteLog(p, durability=d),
    }
    rows: dict[tuple[str, str], list[float]] = {}
    try:
        for _round in range(args.rounds):
            for mode in (Durability.FSYNC, Durability.NONE):
                n = args.fsync_appends if mode is Durability.FSYNC else args.none_appends
                sync = mode is Durability.FSYNC
                rows.setdefault(
                    ("baseline (write+fdatasync)" if sync else "baseline (write)", mode), []
                ).append(_baseline(root, payload, n, sync))
                for name, factory in stores.items():
                    for writers in (1, 8):
                        target = root / f"{name}-{mode}-{writers}-{_round}"
                        rate = asyncio.run(_outbox(factory(mode), target, payload, n, writers))
                        shutil.rmtree(target)
                        label = name if writers == 1 else f"{name} ×{writers}"
                        rows.setdefault((label, mode), []).append(rate)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"payload: {len(payload):,} bytes per {POINTS:,}-point batch; "
        f"medians of {args.rounds} rounds; disk: {args.dir or tempfile.gettempdir()}"
    )
    print(
        f"{'store':<30} {'durability':<10} {'appends/s':>10} {'MB/s':>8} {'points/s':>12} "
        f"{'vs base':>8}"
    )
    for mode in (Durability.FSYNC, Durability.NONE):
        base = next(
            statistics.median(v)
            for (label, m), v in rows.items()
            if m is mode and label.startswith("baseline")
        )
        for (label, m), values in rows.items():
            if m is not mode:
                continue
            rate = statistics.median(values)
            print(
                f"{label:<30} {mode.value:<10} {rate:>10,.0f} "
                f"{rate * len(payload) / 1e6:>8.1f} {rate * POINTS:>12,.0f} {rate / base:>8.2f}"
            )


if __name__ == "__main__":
    main()
