"""Acknowledgement latency of POST /api/v1/ingest beside the flush interval, in one run.

A platform (DuckDB file historian, real uvicorn) runs in a child process; this process
posts 1,000-point Arrow batches at a steady rate (default 20 batches/s, each request
started on schedule, not after the previous answer) and measures per batch:

* ``POST→200``: from sending the request to its answer;
* ``POST→visible``: from sending to the moment ``/api/v1/values/latest`` shows the batch
  (a watcher polls every 20 ms, so add up to 20 ms of resolution; a marker tag
  carries the batch number).

Three ways of sending, one after the other against the same platform:

* ``plain``: no edge/seq (scripts): answered once queued, committed by the writer's
  ``flush_interval`` timer: the baseline, and why an edge cannot use it as an ack;
* ``acknowledged``: edge + seq: answered after the group commit that holds it;
* ``acknowledged, zstd``: the same with ``Content-Encoding: zstd``.

Run: ``.venv/bin/python bench/ingest_ack.py [--rate 20] [--seconds 10] [--flush-interval 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

from shopfloor.model import PointBatch
from shopfloor.wire import ARROW_MEDIA_TYPE, compress, encode_arrow

POINTS = 1000
TAGS = 100
POLL_S = 0.02
"""How often the watcher asks for the latest values (the resolution of ``→visible``)."""
SEC = 10**9

_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import uvicorn
    from shopfloor.runtime.channels import Channel
    from shopfloor.server.api import create_app
    from shopfloor.server.historian.duckdb import DuckDBHistorian
    from shopfloor.server.ingest import Ingestor
    from shopfloor.testing.auth import grant

    async def main(path, flush_interval):
        historian = DuckDBHistorian(Path(path), flush_interval_s=flush_interval)
        await historian.start()
        live = Channel("live", maxsize=256)
        app = create_app(
            historian=historian, ingestor=Ingestor(historian, live), live=live, version="bench"
        )
        token = grant(app, role="engineer")["Authorization"].split()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(server.servers[0].sockets[0].getsockname()[1], flush=True)
        print(token, flush=True)
        await task
        await historian.close()

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    """
)


@dataclass
class Run:
    """Timings of one way of sending (seconds, by batch number)."""

    sent: dict[int, float] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)
    visible: dict[int, float] = field(default_factory=dict)
    failures: int = 0


def make_batch(prefix: str, number: int, t0: int) -> PointBatch:
    """``POINTS`` points over ``TAGS`` tags, plus a marker tag whose value is ``number``."""
    n = POINTS - 1
    ts = t0 + number * SEC + np.arange(n) * (SEC // POINTS)
    tags = [f"{prefix}/eq{t}/pv" for t in range(TAGS)] + [f"{prefix}/marker"]
    index = np.r_[np.arange(n) % TAGS, TAGS]
    values = np.r_[np.random.default_rng(number).random(n), number]
    return PointBatch.from_columns(tags, index, np.r_[ts, ts[-1]], values)


async def watch(
    client: httpx.AsyncClient, prefix: str, run: Run, *, count: int, done: asyncio.Event
) -> None:
    """Note when each batch number first shows as the marker's latest value."""
    marker = f"{prefix}/marker"
    while len(run.visible) < count:
        response = await client.get("/api/v1/values/latest", params={"prefix": prefix})
        now = time.perf_counter()
        for row in response.json()["values"]:
            if row["path"] == marker:
                newest = int(row["value"])
                for number in run.sent:
                    if number <= newest and number not in run.visible:
                        run.visible[number] = now
        await asyncio.sleep(POLL_S)
    done.set()


async def send_all(
    client: httpx.AsyncClient, mode: str, *, rate: float, seconds: float, t0: int
) -> Run:
    prefix = f"bench/{mode.replace(', ', '-')}"
    count = int(rate * seconds)
    bodies = []
    for number in range(1, count + 1):
        batch = make_batch(prefix, number, t0)
        if mode == "plain":
            body = _plain_arrow(batch)
        else:
            body = encode_arrow(batch, edge=prefix.split("/")[1], seq=number)
        headers = {"content-type": ARROW_MEDIA_TYPE}
        if mode.endswith("zstd"):
            body = compress(body, "zstd")
            headers["content-encoding"] = "zstd"
        bodies.append((number, body, headers))
    run = Run()
    all_visible = asyncio.Event()
    watcher = asyncio.create_task(watch(client, prefix, run, count=count, done=all_visible))

    async def one(number: int, body: bytes, headers: dict[str, str]) -> None:
        run.sent[number] = time.perf_counter()
        response = await client.post("/api/v1/ingest", content=body, headers=headers)
        run.answered[number] = time.perf_counter()
        if response.status_code != 200:
            run.failures += 1

    start = time.perf_counter()
    tasks = []
    for i, (number, body, headers) in enumerate(bodies):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(number, body, headers)))
    await asyncio.gather(*tasks)
    try:
        await asyncio.wait_for(all_visible.wait(), 10)
    except TimeoutError:
        watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return run


def _plain_arrow(batch: PointBatch) -> bytes:
    """An Arrow body without edge and seq, as a script would send it."""
    record = batch.to_arrow().replace_schema_metadata({b"version": b"1"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, record.schema) as writer:
        writer.write_batch(record)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def percentiles(run: Run, end: dict[int, float]) -> tuple[float, float]:
    ms = [(end[n] - run.sent[n]) * 1000 for n in run.sent if n in end]
    if not ms:
        return float("nan"), float("nan")
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


async def bench(port: int, args: argparse.Namespace, token: str) -> None:
    t0 = 1_764_000_000 * SEC
    rows = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers
    ) as client:
        for mode in ("plain", "acknowledged", "acknowledged, zstd"):
            before = (await client.get("/healthz")).json()["historian"]["flushes"]
            run = await send_all(client, mode, rate=args.rate, seconds=args.seconds, t0=t0)
            after = (await client.get("/healthz")).json()["historian"]["flushes"]
            rows.append((mode, run, after - before))
    print(
        f"{POINTS}-point Arrow batches at {args.rate:g} batches/s for {args.seconds:g} s each; "
        f"historian flush_interval = {args.flush_interval * 1000:.0f} ms"
    )
    header = (
        f"{'sending':22} {'POST→200 p50':>13} {'p99':>8} {'→visible p50':>13} {'p99':>8} "
        f"{'commits':>8} {'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for mode, run, commits in rows:
        a50, a99 = percentiles(run, run.answered)
        v50, v99 = percentiles(run, run.visible)
        print(
            f"{mode:22} {a50:10.1f} ms {a99:5.1f} ms {v50:10.1f} ms {v99:5.1f} ms "
            f"{commits:8d} {run.failures:7d}"
        )
    print(
        "plain: answered before commit, visible after the flush interval; acknowledged: "
        "answered once committed (group commit), so POST→200 ≈ POST→visible."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="batches per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per way of sending")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="historian, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-") as tmp:
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(Path(tmp) / "h.duckdb"), str(args.flush_interval)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            token = server.stdout.readline().strip()
            asyncio.run(bench(port, args, token))
        finally:
            server.terminate()
            server.wait(timeout=30)
            if server.stdout is not None:
                server.stdout.close()


if __name__ == "__main__":
    main()
