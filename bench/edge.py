"""Points per second through edge → outbox → HTTP → server → historian, and the drain
after an outage beside the live rate, in one run, with real processes.

Everything is real: `shopfloor server` and `shopfloor edge` run as separate processes
on this machine (127.0.0.1), the edge reads the simulator connector, makes every batch
durable in its outbox (fsync) and sends it over HTTP (zstd) through a
:class:`~shopfloor.testing.faultproxy.FaultProxy`; the server commits to DuckDB before
it answers. Figures come from the server's ``/healthz`` (points committed) and the
edge's ``/healthz`` (points appended, backlog).

1. **sustained**: the simulator back-fills as fast as it can (``--speed``); the table
   shows what the edge appended per second beside what the historian committed per
   second (the baseline: if the chain keeps up, the two match and the backlog stays
   small). Then the same flow through a link that flaps (500 ms up, 100 ms down, every
   connection cut with a FIN): what still gets committed, beside the steady rate.
2. **outage and drain** (``--rounds`` times for each uplink setting): a real-time edge
   (``--period`` per sample of 81 tags) runs live for a while, the proxy drops the link
   for ``--outage`` seconds, then heals it. *live* is the committed rate before the
   outage; *reconnect* is the time from the release to the first commit (the edge's
   retry backoff); *drain* is the committed rate from that commit until the backlog is
   gone (backlog and live together); *latency* is, while draining, how old the newest
   queryable value produced since the release is (now − the newest ``ts`` of
   ``GET /api/v1/values/latest``, or now − the release while there is none yet: value
   produced → queryable, sampled every 0.2 s).

Each cell is the median of its rounds (per-second rates within a phase, rounds across).
Aim (issue 4): drain ≥ 10 × live while live latency stays under 5 s. The rows compare
uplink settings against the same platform: one batch a request with a 10 s live lane (the
defaults before coalescing), today's defaults, and the defaults with a wider window.

Run: ``.venv/bin/python bench/edge.py [--rounds 3] [--outage 20] [--period 50ms]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shopfloor.testing.faultproxy import FaultProxy
from shopfloor.testing.processes import RunningProcess, free_port, shopfloor_process

POLL_S = 0.2
FLAP_UP_MS, FLAP_DOWN_MS = 500, 100


@dataclass
class Edge:
    """A running `shopfloor edge` process."""

    proc: subprocess.Popen[bytes]
    health_url: str

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(self.health_url, timeout=5).json()
        return doc


@contextmanager
def edge_process(folder: Path, config: str) -> Iterator[Edge]:
    """Start an edge with ``config`` (TOML) in ``folder``; stop it (SIGINT) at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "edge.toml").write_text(config + f"[health]\nport = {port}\n")
    with (folder / "edge.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "edge", "--config", "edge.toml"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    edge = Edge(proc, f"http://127.0.0.1:{port}/healthz")
    try:
        wait(lambda: _up(edge), "the edge's /healthz", 30)
        yield edge
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _up(edge: Edge) -> bool:
    if edge.proc.poll() is not None:
        raise RuntimeError(f"the edge exited with {edge.proc.returncode}")
    try:
        return httpx.get(edge.health_url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait(probe: Callable[[], object], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        time.sleep(0.05)


def committed(server: RunningProcess) -> int:
    """Points the platform's historian has committed since it started."""
    doc = httpx.get(f"{server.base_url}/healthz", timeout=5).json()
    return int(doc["historian"]["points_written"])


def newest_ts_ns(server: RunningProcess) -> int | None:
    """The newest source timestamp that can be queried, in UTC ns."""
    rows = server.get("/api/v1/values/latest", timeout=5).json()["values"]
    if not rows:
        return None
    newest = max(dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) for r in rows)
    return int(newest.timestamp() * 1e9)


TOKEN_ENV = "BENCH_EDGE_TOKEN"
"""The variable the edges read their API token from (the server's bootstrap admin token)."""


def edge_config(url: str, *, edge_id: str, speed: float, backfill: str, period: str) -> str:
    return (
        f'[edge]\nid = "{edge_id}"\ndata_dir = "data"\n'
        f'[uplink]\nurl = "{url}"\ntimeout = "2s"\nretry_max = "1s"\n'
        f'token_env = "{TOKEN_ENV}"\n'
        "{uplink}"
        f'[[connectors]]\nkind = "simulator"\nname = "sim"\nperiod = "{period}"\n'
        f'backfill = "{backfill}"\nspeed = {speed}\n'
    )


def rates(samples: list[tuple[float, int]]) -> list[float]:
    """Per-interval rates of a (time, counter) series, over about a second each."""
    out: list[float] = []
    start = samples[0]
    for t, n in samples[1:]:
        if t - start[0] >= 1.0:
            out.append((n - start[1]) / (t - start[0]))
            start = (t, n)
    return out


def sustained(root: Path, server: RunningProcess, proxy: FaultProxy, args: Any) -> dict[str, float]:
    config = edge_config(
        proxy.url, edge_id="bench-sustained", speed=args.speed, backfill="48h", period="1s"
    ).replace("{uplink}", "")
    with edge_process(root / "sustained", config) as edge:
        wait(lambda: edge.health()["uplink"]["acked_batches"] > 5, "first commits", 30)
        time.sleep(2)  # warm-up
        stored: list[tuple[float, int]] = []
        appended: list[tuple[float, int]] = []
        backlog: list[int] = []
        end = time.monotonic() + args.sustain
        while time.monotonic() < end:
            now = time.monotonic()
            doc = edge.health()
            stored.append((now, committed(server)))
            appended.append((now, int(doc["buffer"]["appended_points"])))
            backlog.append(int(doc["buffer"]["points"]))
            time.sleep(POLL_S)
        proxy.flap(FLAP_UP_MS, FLAP_DOWN_MS)  # the same flow through a flapping link
        flapping: list[tuple[float, int]] = []
        end = time.monotonic() + args.sustain
        while time.monotonic() < end:
            flapping.append((time.monotonic(), committed(server)))
            time.sleep(POLL_S)
        proxy.pass_through()
        flaps = proxy.stats().flaps
    return {
        "appended": statistics.median(rates(appended)),
        "stored": statistics.median(rates(stored)),
        "backlog": statistics.median(backlog),
        # over the whole phase: per-second rates of a flapping link say little
        "flapping": (flapping[-1][1] - flapping[0][1]) / (flapping[-1][0] - flapping[0][0]),
        "flaps": flaps,
    }


@dataclass
class Round:
    live: float
    drain: float
    backlog: int
    reconnect_s: float
    drain_s: float
    latency_p50: float
    latency_max: float
    requests_per_s: float
    ack_ms: float


def outage_round(
    edge: Edge, server: RunningProcess, proxy: FaultProxy, *, outage_s: float, live_s: float
) -> Round:
    live: list[tuple[float, int]] = []
    end = time.monotonic() + live_s
    while time.monotonic() < end:
        live.append((time.monotonic(), committed(server)))
        time.sleep(POLL_S)
    proxy.drop()
    time.sleep(outage_s)
    backlog = int(edge.health()["buffer"]["points"])
    released = time.monotonic()
    released_ns = time.time_ns()
    before = committed(server)
    requests = int(edge.health()["uplink"]["requests"])
    proxy.pass_through()
    ages: list[float] = []
    first: tuple[float, int] | None = None  # the first commit after the release
    while True:
        # Live latency of values produced since the release: the newest one's age once
        # one is queryable; until then, at least the time since the release.
        newest = newest_ts_ns(server) or 0
        now_ns = time.time_ns()
        ages.append((now_ns - max(newest, released_ns)) / 1e9)
        if first is None and (n := committed(server)) > before:
            first = (time.monotonic(), n)
        if edge.health()["buffer"]["batches"] <= 2:
            break
        if time.monotonic() - released > 300:
            raise TimeoutError("the backlog did not drain within 300 s")
        time.sleep(POLL_S)
    drained = time.monotonic()
    after = committed(server)
    uplink = edge.health()["uplink"]
    if first is None or drained - first[0] < POLL_S:
        first = (released, before)  # drained within one poll: rate over the whole time
    return Round(
        live=statistics.median(rates(live)),
        drain=(after - first[1]) / (drained - first[0]),
        backlog=backlog,
        reconnect_s=first[0] - released,
        drain_s=drained - released,
        latency_p50=statistics.median(ages),
        latency_max=max(ages),
        requests_per_s=(int(uplink["requests"]) - requests) / (drained - released),
        ack_ms=float(uplink["ack_latency_ms_p50"] or 0.0),
    )


def outages(
    root: Path, server: RunningProcess, *, proxy: FaultProxy, args: Any, name: str, uplink: str
) -> list[Round]:
    config = edge_config(
        proxy.url, edge_id=f"bench-{name}", speed=1, backfill="0s", period=args.period
    ).replace("{uplink}", uplink)
    with edge_process(root / name, config) as edge:
        wait(lambda: edge.health()["uplink"]["acked_batches"] > 5, "first commits", 30)
        time.sleep(2)
        return [
            outage_round(edge, server, proxy, outage_s=args.outage, live_s=args.live)
            for _ in range(args.rounds)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="outages per uplink setting")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the link is down")
    parser.add_argument("--live", type=float, default=5.0, help="seconds of live flow first")
    parser.add_argument("--period", default="50ms", help="sample period of the live edge")
    parser.add_argument("--speed", type=float, default=10000, help="back-fill speed (sustained)")
    parser.add_argument("--sustain", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--dir", type=Path, default=None, help="where the processes run")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-edge-", dir=args.dir))
    port = free_port()
    (root / "server").mkdir()
    (root / "server" / "server.toml").write_text(f'[server]\nport = {port}\ndata_dir = "data"\n')
    settings = {
        "one batch a request, 10 s live lane (the old defaults)": (
            'coalesce_points = 0\ncatch_up_after = "10s"\n'
        ),
        "defaults (coalesce 20k points, 2 s live lane, window 8)": "",
        "defaults, window 32": "window = 32\n",
    }
    try:
        with (
            shopfloor_process(
                ["server", "--config", "server.toml"], port=port, workdir=root / "server"
            ) as server,
            FaultProxy(port) as proxy,
        ):
            os.environ[TOKEN_ENV] = server.token  # inherited by the edge processes
            steady = sustained(root, server, proxy, args)
            results = {
                name: outages(root, server, proxy=proxy, args=args, name=f"edge-{i}", uplink=up)
                for i, (name, up) in enumerate(settings.items())
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        "edge → outbox (fsync) → HTTP (zstd) → server → DuckDB; "
        f"real processes, {os.cpu_count()} cores"
    )
    print()
    print(f"sustained: the simulator back-filling at {args.speed:g}×, {args.sustain:g} s")
    print_table(
        (
            "appended by the edge pts/s",
            "committed by the historian pts/s",
            "backlog pts",
            f"committed, link flapping {FLAP_UP_MS}/{FLAP_DOWN_MS} ms pts/s",
            "flapping/steady",
        ),
        [
            (
                f"{steady['appended']:,.0f}",
                f"{steady['stored']:,.0f}",
                f"{steady['backlog']:,.0f}",
                f"{steady['flapping']:,.0f} ({steady['flaps']:.0f} flaps)",
                f"{steady['flapping'] / steady['stored']:.2f}",
            )
        ],
    )
    print()
    print(
        f"outage of {args.outage:g} s, live edge sampling 81 tags every {args.period}; "
        f"medians of {args.rounds} rounds"
    )
    rows: list[tuple[str, ...]] = []
    for name, rounds in results.items():

        def med(value: Callable[[Round], float], rounds: list[Round] = rounds) -> float:
            return statistics.median(value(r) for r in rounds)

        rows.append(
            (
                name,
                f"{med(lambda r: r.live):,.0f}",
                f"{med(lambda r: r.backlog):,.0f}",
                f"{med(lambda r: r.drain):,.0f}",
                f"{med(lambda r: r.drain / r.live):.1f}×",
                f"{med(lambda r: r.reconnect_s):.1f}",
                f"{med(lambda r: r.drain_s):.1f}",
                f"{med(lambda r: r.requests_per_s):.0f}",
                f"{med(lambda r: r.ack_ms):.0f}",
                f"{med(lambda r: r.latency_p50):.2f}",
                f"{med(lambda r: r.latency_max):.2f}",
            )
        )
    print_table(
        (
            "uplink",
            "live pts/s",
            "backlog pts",
            "drain pts/s",
            "drain/live",
            "reconnect s",
            "drain s",
            "requests/s",
            "ack p50 ms",
            "latency p50 s",
            "latency max s",
        ),
        rows,
    )


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A Markdown table, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
