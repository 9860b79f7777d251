"""The formats of ``GET /api/v1/history`` (what the trend explorer downloads) side by side:
the encoding the route runs for JSON (the default, the baseline), CSV, Parquet and Arrow IPC,
on the same long table in the same run.

Data: ``--tags`` random walks at 1 Hz (sensor resolution 0.01, 0.1 % Bad points), ``--rows``
points in all, as :func:`read_history` hands them to the route (``ts`` int64 ns, ``path``
dictionary-encoded, ``value``, ``quality``, ``text``). Each encoding runs ``--repeats``
times after a warm-up, interleaved; the table shows the median, the ratio to JSON, the
size of the answer and its bytes per point. A second table does the same for 20,000 rows,
the most the route encodes on the event loop rather than in a thread.

Run: ``.venv/bin/python bench/history_formats.py [--tags N] [--rows N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from shopfloor.server.api.convert import arrow_response
from shopfloor.server.api.flat import csv_bytes, json_rows_bytes
from shopfloor.server.api.routes.history import parquet_bytes, with_time, with_timestamp

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def long_table(tags: int, rows: int, seed: int = 7) -> pa.Table:
    """``rows`` points over ``tags`` tags, sorted by time then tag, as the route reads them."""
    rng = np.random.default_rng(seed)
    per_tag = rows // tags
    ts = np.repeat(T0 + np.arange(per_tag, dtype=np.int64) * 10**9, tags)
    tag = np.tile(np.arange(tags, dtype=np.int32), per_tag)
    walk = np.cumsum(rng.normal(0, 0.2, (per_tag, tags)), axis=0) + 50
    value = np.round(walk.reshape(-1), 2)
    quality = np.where(rng.random(len(ts)) < 0.001, 0x80000000, 0).astype(np.uint32)
    paths = [f"acme/plant-1/line-{i // 10}/machine-{i}/temp" for i in range(tags)]
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()),
            "path": pa.DictionaryArray.from_arrays(pa.array(tag), pa.array(paths)),
            "value": pa.array(value, pa.float64()),
            "quality": pa.array(quality, pa.uint32()),
            "text": pa.nulls(len(ts), pa.string()),
        }
    )


def encoders(table: pa.Table) -> dict[str, Callable[[], bytes]]:
    """What the route does per format, from the long table to the answer's bytes."""
    return {
        "json (baseline)": lambda: json_rows_bytes(with_time(table, "iso")),
        "csv": lambda: csv_bytes(with_time(table, "iso")),
        "parquet": lambda: parquet_bytes(with_timestamp(table)),
        "arrow ipc": lambda: bytes(
            arrow_response(with_timestamp(table), metadata={"start": "", "end": ""}).body
        ),
    }


def measure(table: pa.Table, repeats: int) -> list[tuple[str, float, int]]:
    runs = encoders(table)
    sizes = {name: len(encode()) for name, encode in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, encode in runs.items():
            start = time.perf_counter()
            encode()
            times[name].append(time.perf_counter() - start)
    return [(name, statistics.median(times[name]) * 1000, sizes[name]) for name in runs]


def show(title: str, rows: int, results: list[tuple[str, float, int]]) -> None:
    base = results[0][1]
    print(f"\n{title}: {rows:,} points")
    head = f"{'format':18}{'median ms':>12}{'x json':>9}{'bytes':>14}{'B/point':>9}"
    print(head)
    print("-" * len(head))
    for name, ms, size in results:
        print(f"{name:18}{ms:12.1f}{ms / base:9.3f}{size:14,}{size / rows:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    big = long_table(args.tags, args.rows)
    show("one answer", big.num_rows, measure(big, args.repeats))
    small = long_table(args.tags, 20_000)
    show("inline limit", small.num_rows, measure(small, args.repeats * 4))


if __name__ == "__main__":
    main()
