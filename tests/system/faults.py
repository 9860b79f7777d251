"""The fault tests' shared rig: `shopfloor edge` and `shopfloor server` as real processes,
a fault proxy between them, and the exact counts every test ends with.

Each test runs the edge on the simulator connector (deterministic: the seeded plant
sampled on a 1 s grid from an origin the edge picks) and ends the same way
(:func:`finish`): heal the link, stop the edge, read its outbox and the platform's
historian, and count

* durable = batches the edge ever appended (its next seq − 1) and their points (the
  outbox's persisted counters: acknowledged + waiting + dropped + quarantined);
* stored = rows in ``points``; unique = distinct (tag, ts) among them;
* lost = durable points − unique, duplicated = stored − unique;
* the ledger holds every seq 1 … next seq − 1 exactly once, and its points add up to
  the stored rows (no batch half applied);
* every stored point is the plant's sample at its timestamp (recomputed independently
  from the seed: nothing shifted, rewritten or reordered), and each tag's ``latest``
  value is its newest stored point (order per stream).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import httpx
import numpy as np

from shopfloor.edge.buffer import DurableOutbox, OutboxStats, SegmentLog
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.http import HttpTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.simulator import Plant
from shopfloor.testing.auth import provision
from shopfloor.testing.faultproxy import FaultProxy
from shopfloor.testing.processes import RunningProcess, shopfloor_process
from shopfloor.wire import edge_of_stream

logger = logging.getLogger(__name__)

EDGE_ID = "edge-fault"
SEED = 1
PERIOD_NS = 1_000_000_000
T = TypeVar("T")


# ---------------------------------------------------------------- the processes
def write_server_config(
    folder: Path, port: int, *, ack_delay_s: float = 0.0, mqtt_port: int | None = None
) -> None:
    """`server.toml`: HTTP on ``port``; with ``mqtt_port``, also consuming edge batches
    from the broker there (``[ingest.mqtt]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        f'[server]\nport = {port}\ndata_dir = "data"\n'
        f"[historian]\nflush_interval_s = 0.1\nack_delay_s = {ack_delay_s}\n"
    )
    if mqtt_port is not None:
        text += f"[ingest.mqtt]\nenabled = true\nport = {mqtt_port}\n"
    (folder / "server.toml").write_text(text)


def write_edge_config(
    folder: Path,
    *,
    url: str,
    health_port: int,
    backfill: str = "1h",
    speed: float = 300,
    retry_max: str = "500ms",
    coalesce_points: int = 0,
    connectors: bool = True,
    mqtt_port: int | None = None,
) -> None:
    """`edge.toml`: the simulator, sending to ``url`` over HTTP or, with ``mqtt_port``,
    through the broker there (1 s answer timeout, 1 s keep-alive, fast reconnects)."""
    folder.mkdir(parents=True, exist_ok=True)
    transport = "http" if mqtt_port is None else "mqtt"
    text = (
        f'[edge]\nid = "{EDGE_ID}"\ndata_dir = "data"\n'
        f'[uplink]\ntransport = "{transport}"\nurl = "{url}"\ntimeout = "1s"\n'
        f'retry_max = "{retry_max}"\ncatch_up_after = "2s"\n'
        f"coalesce_points = {coalesce_points}\n"
    )
    if mqtt_port is None:
        text += f'token_env = "{EDGE_TOKEN_ENV}"\n'
    else:
        text += f'[uplink.mqtt]\nport = {mqtt_port}\nkeepalive = "1s"\nreconnect_max = "200ms"\n'
    text += f'[health]\nport = {health_port}\nstatus_interval = "1s"\n'
    if connectors:
        text += (
            f'[[connectors]]\nkind = "simulator"\nname = "sim"\nseed = {SEED}\n'
            f'period = "1s"\nbackfill = "{backfill}"\nspeed = {speed}\n'
        )
    (folder / "edge.toml").write_text(text)


def wait_until(probe: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class EdgeProcess:
    """A `shopfloor edge` process and its health endpoint."""

    proc: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(self.health_url, timeout=5).json()
        return doc

    def rss_kib(self) -> int:
        """Resident memory of the process (VmRSS from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        """SIGINT (a clean, staged stop), then wait; SIGKILL only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


EDGE_TOKEN_ENV = "SHOPFLOOR_TEST_EDGE_TOKEN"
"""The variable the edges of these tests read their API token from (`uplink.token_env`)."""


def edge_token(root: Path) -> str:
    """An ``ingest`` API token in the server's data folder of the rig at ``root``, made
    once (before or while the server runs) and kept in ``root/edge.token``."""
    kept = root / "edge.token"
    if kept.exists():
        return kept.read_text().strip()
    made = provision(root / "server" / "data", role="engineer", user="edge", token_role="ingest")
    kept.write_text(made.token)
    return made.token


@contextmanager
def edge_process(
    folder: Path, health_port: int, *, env: dict[str, str] | None = None
) -> Iterator[EdgeProcess]:
    """Start `shopfloor edge --config edge.toml` in ``folder``; always stopped at the end."""
    log_path = folder / f"edge-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "edge", "--config", "edge.toml"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                EDGE_TOKEN_ENV: edge_token(folder.parent),
                **(env or {}),
            },
        )
    edge = EdgeProcess(proc, f"http://127.0.0.1:{health_port}/healthz", log_path)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"edge exited with {proc.returncode}:\n{edge.log()}")
            try:
                return httpx.get(edge.health_url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "the edge's /healthz")
        yield edge
    finally:
        edge.stop()


@dataclass
class Rig:
    """The folders and ports of one test: a platform, an edge and a proxy between them."""

    root: Path
    server_port: int
    health_port: int

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def edge_dir(self) -> Path:
        return self.root / "edge"

    @property
    def outbox(self) -> Path:
        return self.edge_dir / "data" / "outbox"

    @property
    def db(self) -> Path:
        return self.server_dir / "data" / "history.duckdb"

    @contextmanager
    def server(self) -> Iterator[RunningProcess]:
        with shopfloor_process(
            ["server", "--config", "server.toml"], port=self.server_port, workdir=self.server_dir
        ) as server:
            yield server


# --------------------------------------------------------------------- counting
def outbox_totals(outbox: Path) -> OutboxStats:
    """The outbox's persisted figures, read with the edge stopped."""

    async def read() -> OutboxStats:
        box = DurableOutbox(SegmentLog(outbox), max_bytes=1 << 40)
        await box.open()
        try:
            return box.stats()
        finally:
            await box.close()

    return asyncio.run(read())


def drain_offline(outbox: Path, url: str) -> None:
    """Send what the stopped edge left in its outbox (its own stop drains only 2 s)."""

    async def drain() -> None:
        uplink = OutboxUplink(
            DurableOutbox(SegmentLog(outbox), max_bytes=1 << 40),
            HttpTransport(url, edge_id=EDGE_ID, timeout_s=5, token=edge_token(outbox.parents[2])),
            edge_id=EDGE_ID,
            options=SenderOptions(retry=(0.05, 0.5)),
        )
        await uplink.start()
        await uplink.wait_ready()
        async with asyncio.timeout(60):
            while uplink.outbox.stats().batches:  # noqa: ASYNC110 - acks have no event
                await asyncio.sleep(0.05)
        await uplink.close()

    asyncio.run(drain())


@dataclass
class History:
    """What the platform stored (read from its DuckDB file with the platform stopped)."""

    paths: dict[int, str]
    tag_id: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    ledger: list[tuple[str, int, int]]
    latest: dict[int, tuple[int, float]]


def read_history(db: Path) -> History:
    with duckdb.connect(str(db), read_only=True) as con:
        paths = dict(con.execute("SELECT id, path FROM tags").fetchall())
        table = con.execute("SELECT tag_id, ts, value, quality FROM points").fetchnumpy()
        ledger = con.execute("SELECT edge, seq, points FROM ingest_ledger").fetchall()
        rows = con.execute("SELECT tag_id, ts, value FROM latest").fetchall()
        latest = {int(t): (int(ts), float(v)) for t, ts, v in rows}
    return History(
        paths=paths,
        tag_id=np.asarray(table["tag_id"], dtype=np.int64),
        ts=np.asarray(table["ts"], dtype=np.int64),
        value=np.asarray(table["value"], dtype=np.float64),
        quality=np.asarray(table["quality"], dtype=np.int64),
        ledger=[(e, int(s), int(p)) for e, s, p in ledger],
        latest=latest,
    )


def assert_whole_batches_only(db: Path) -> int:
    """Every ledger row has all its points and no point is without one; return the rows."""
    with duckdb.connect(str(db), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM points").fetchone() or (0,)
        seqs = con.execute(
            "SELECT seq, points FROM ingest_ledger WHERE split_part(edge, '/', 1) = ?", [EDGE_ID]
        ).fetchall()
    assert len(seqs) == len({s for s, _ in seqs}), "a batch is in the ledger twice"
    assert sum(p for _, p in seqs) == rows, "a batch is half applied"
    return len(seqs)


def outbox_identity(outbox: Path) -> list[tuple[str, int]]:
    """Inodes of the outbox's lock and state files: a re-created outbox changes them."""
    return [(name, (outbox / name).stat().st_ino) for name in ("LOCK", "state")]


@dataclass(frozen=True)
class Counts:
    durable_batches: int
    durable_points: int
    stored: int
    unique: int
    platform_view: dict[str, Any] | None = None

    @property
    def lost(self) -> int:
        return self.durable_points - self.unique

    @property
    def duplicated(self) -> int:
        return self.stored - self.unique


def count(
    totals: OutboxStats, history: History, platform_view: dict[str, Any] | None = None
) -> Counts:
    """Check the end state against the edge's outbox and the plant; return the counts."""
    assert totals.batches == 0, "the outbox was drained"
    assert totals.dropped_batches == totals.quarantined_batches == 0
    durable_batches = totals.next_seq - 1
    durable_points = totals.acked_points + totals.points + totals.dropped_points
    pairs = np.stack([history.tag_id, history.ts], axis=1)
    unique = len(np.unique(pairs, axis=0)) if len(pairs) else 0
    counts = Counts(durable_batches, durable_points, len(history.ts), unique, platform_view)
    mine = sorted(s for e, s, _ in history.ledger if edge_of_stream(e) == EDGE_ID)
    assert mine == list(range(1, durable_batches + 1)), (
        f"the ledger holds each of the {durable_batches} durable batches once "
        f"(has {len(mine)}, {len(set(mine))} distinct)"
    )
    ledger_points = sum(p for e, _, p in history.ledger if edge_of_stream(e) == EDGE_ID)
    assert ledger_points == counts.stored, "no batch half applied, no point without its batch"
    assert counts.lost == 0, counts
    assert counts.duplicated == 0, counts
    assert_plant_samples(history)
    assert_latest_is_newest(history)
    logger.info(
        "durable %d batches / %d points; stored %d, unique %d: lost %d, duplicated %d",
        durable_batches,
        durable_points,
        counts.stored,
        unique,
        counts.lost,
        counts.duplicated,
    )
    return counts


def assert_plant_samples(history: History) -> None:
    """Every stored point is the seeded plant's sample at its time (an independent replay)."""
    assert len(history.ts), "something was stored"
    origin = int(history.ts.min())
    steps = int((history.ts.max() - origin) // PERIOD_NS) + 1
    plant = Plant.default(seed=SEED)
    tags = [t.path for t in plant.tags()]
    grid = np.empty((len(tags), steps))
    done = 0
    while done < steps:  # in chunks: an hour of the plant is ~300 000 points
        n = min(3600, steps - done)
        part = plant.advance(start_ns=origin + done * PERIOD_NS, steps=n, period_ns=PERIOD_NS)
        grid[:, done : done + n] = np.asarray(part.value).reshape(len(tags), n)
        done += n
    row = {path: i for i, path in enumerate(tags)}
    tag_rows = np.array([row[history.paths[int(t)]] for t in history.tag_id])
    offset = history.ts - origin
    assert (offset % PERIOD_NS == 0).all(), "every timestamp is on the source's 1 s grid"
    want = grid[tag_rows, offset // PERIOD_NS]
    same = (want == history.value) | (np.isnan(want) & np.isnan(history.value))
    assert same.all(), f"{int((~same).sum())} stored values differ from the source at their time"


def assert_latest_is_newest(history: History) -> None:
    """Each tag's current value is its newest point, whatever order batches arrived in."""
    order = np.lexsort((history.ts, history.tag_id))
    tag_sorted = history.tag_id[order]
    last = np.r_[tag_sorted[1:] != tag_sorted[:-1], True]
    for i in order[last]:
        tid = int(history.tag_id[i])
        ts, value = history.latest[tid]
        assert ts == history.ts[i], f"latest of {history.paths[tid]} is not its newest point"
        assert value == history.value[i] or (np.isnan(value) and np.isnan(history.value[i]))


def finish(rig: Rig, edge: EdgeProcess, server: RunningProcess, proxy: FaultProxy) -> Counts:
    """Heal the link, let the backlog drain, stop everything, count exactly."""
    proxy.pass_through()
    wait_until(
        lambda: edge.health()["buffer"]["batches"] <= 2,
        "the backlog to drain through the healed link",
        timeout_s=90,
    )
    last = edge.health()
    assert edge.stop() == 0, edge.log()
    assert "Traceback" not in edge.log(), edge.log()
    if outbox_totals(rig.outbox).batches:
        drain_offline(rig.outbox, server.base_url)
    totals = outbox_totals(rig.outbox)
    edges = server.get("/api/v1/edges", timeout=5).json()["edges"]
    assert server.stop(signal.SIGINT) == 0, server.log()
    assert totals.next_seq >= last["buffer"]["next_seq"]
    assert totals.acked_points >= last["buffer"]["appended_points"] - last["buffer"]["points"]
    (view,) = [e for e in edges if e["edge"] == EDGE_ID]
    return count(totals, read_history(rig.db), view)


def partition_then_blackhole(
    rig: Rig, edge: EdgeProcess, server: RunningProcess, proxy: FaultProxy
) -> Counts:
    """Live flow; a partition (every connection closed, new ones refused) for 4 s; the
    drain; then a blackhole held 6 s past its detection — nothing crosses, nothing is
    closed, so only the edge's own timeouts (request or keep-alive) can notice — and the
    exact counts after healing."""
    wait_until(lambda: edge.health()["uplink"]["acked_batches"] > 10, "live flow")
    proxy.drop()
    wait_until(lambda: edge.health()["uplink"]["down"], "the edge to see the partition")
    time.sleep(4)
    assert edge.health()["buffer"]["batches"] > 10, "the edge kept reading into its outbox"
    proxy.pass_through()
    wait_until(lambda: not edge.health()["uplink"]["down"], "the edge to reconnect")
    wait_until(lambda: edge.health()["buffer"]["batches"] <= 2, "the backlog to drain")

    proxy.blackhole()
    sent_before = proxy.stats().bytes_up
    wait_until(lambda: edge.health()["uplink"]["down"], "the edge to detect the blackhole")
    time.sleep(6)
    held = proxy.stats()
    assert held.blackholed >= 1, "connections were caught in the hole"
    assert held.swallowed > 0, "requests went into the hole"
    assert held.bytes_up == sent_before
    assert edge.health()["buffer"]["batches"] > 10
    return finish(rig, edge, server, proxy)
