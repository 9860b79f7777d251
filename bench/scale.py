"""Ingest scaled out (issue 9): sustained points/s and latency with 1 and 2 `shopfloor ingest`
workers, beside the raw PostgreSQL binary COPY rate of the same points, in one run.

Everything is real and on this machine: one Mosquitto, one PostgreSQL (its default
durability: fsync and synchronous commit on, as a plant's server would run), N
`shopfloor ingest` worker processes sharing the subscription `$share/ingest/...` and the
historian (`historian.shared = true`), and `shopfloor loadgen` playing ``--edges`` simulated
edges × ``--tags`` tags, ``--samples`` values per tag per batch, each edge keeping
``--window`` batches awaiting their answer (a closed loop: as fast as the platform answers;
the default 8 × 16 outstanding batches is more than one worker takes at once, so the
figures are the workers' capacity, and the latencies include the wait in the broker).

* **points/s**: points acknowledged by the platform (answer published after the commit)
  per second of the run, as the edges count them.
* **answer p50/p95/p99**: per batch, its newest value produced → the platform's answer,
  which is published after the commit: an upper bound of *produced → queryable*.
* **e2e p50/p95/p99**: *value produced → queryable*, measured from the outside: a
  client polls PostgreSQL every 10 ms for the newest ``ts`` of one tag per edge (its
  batch's newest value, stamped when the batch was made) in the historian's ``latest``
  table, which the commit moves in the same transaction as the points; each new ``ts``
  seen gives one latency (now − ts; the polling adds 0–10 ms, 5 on average).
* **CPU s per M points**: CPU seconds (user + system, from ``/proc``) the load generator,
  the workers, PostgreSQL (all its processes) and Mosquitto spent per million acknowledged
  points during the run; **cores busy** is their sum over the run's wall time. It shows
  where the machine's cores go, and so what another worker can and cannot buy here.
* **baselines**: the same number of points (same tags, same timestamps' shape) copied by
  one client with binary COPY — into narrow rows ``(ts, value, tag_id, quality, text)``
  without an index, and into the historian's own ``points_recent`` rows (its blocks
  layout, which is what the workers write) — 100,000 points per transaction. What
  PostgreSQL alone takes on this machine: the ceiling for the pipeline.

The third setup is 2 workers with partitioned alarms on (``alarms.partitions = 8``, an
H rule on one tag per edge, crossed about every 11th value): the cost of the
committed-points feed and of the partition owners.

Each cell is the median of ``--rounds`` runs; every run gets a fresh database. The host's
core count is printed: on 2 cores the loadgen, the workers, Mosquitto and PostgreSQL
share them, so a second worker can only help as far as a core is idle.

With ``--rate`` the edges offer that many points per second together instead of a closed
loop: below the workers' capacity the latencies are the pipeline's own, not the wait in
the broker of an overload.

Run: ``.venv/bin/python bench/scale.py [--rounds 3] [--duration 10] [--edges 8] [--rate 0]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from shopfloor.loadgen import tag_path
from shopfloor.model import now_ns
from shopfloor.server.historian import pg_blocks, pg_schema
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.postgres import PostgresServer

COPY_CHUNK = 100_000


def _config(folder: Path, *, dsn: str, broker: int, alarm_edges: int = 0) -> Path:
    path = folder / "worker.toml"
    alarms = (
        "[alarms]\npartitions = 8\n"
        + "".join(
            f'[[alarms.rules]]\ntag = "{tag_path(e, 0)}"\nkind = "H"\nlimit = 0.9\n'
            for e in range(alarm_edges)
        )
        if alarm_edges
        else ""
    )
    path.write_text(
        f'[server]\ndata_dir = "data"\n'
        f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n'
        f"[ingest.mqtt]\nport = {broker}\n"
        'shared_group = "ingest"\nsession_expiry = "0s"\n' + alarms
    )
    return path


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _cpu(pids: set[int], *, with_children: bool = False) -> float:
    """CPU seconds of ``pids`` (and, with ``with_children``, of their child processes)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and (int(entry.name) in pids or (with_children and stat[0] in pids)):
            total += stat[1]
    return total


def _pid_of(cmdline_part: str) -> int:
    """The pid of the one process whose command line contains ``cmdline_part``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline_part in cmdline:
                return int(entry.name)
    raise RuntimeError(f"no process runs {cmdline_part}")


@dataclass
class _Processes:
    """The pids whose CPU time is counted: workers, PostgreSQL's postmaster, Mosquitto."""

    workers: set[int]
    postmaster: int
    mosquitto: int

    def cpu(self) -> dict[str, float]:
        return {
            "workers": _cpu(self.workers),
            "postgres": _cpu({self.postmaster}, with_children=True),
            "mosquitto": _cpu({self.mosquitto}),
        }


@contextmanager
def _workers(folder: Path, config: Path, count: int) -> Iterator[set[int]]:
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(count):
            log_path = folder / f"worker-{n}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "shopfloor", "ingest", "--config", str(config)],
                    cwd=folder,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            procs.append((proc, log_path))
        deadline = time.monotonic() + 60
        for proc, log_path in procs:
            while "taking batches from" not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield {proc.pid for proc, _ in procs}
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class _Queryable:
    """Polls the newest ``ts`` of ``paths`` in ``latest`` every 10 ms on its own thread;
    each new one seen is a produced → queryable latency."""

    def __init__(self, dsn: str, paths: list[str]) -> None:
        self.latencies_ms: list[float] = []
        self._dsn = dsn
        self._paths = paths
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-queryable")

    def __enter__(self) -> _Queryable:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seen: dict[str, int] = {}
        with psycopg.connect(self._dsn, autocommit=True) as con:
            while not self._stop.wait(0.01):
                try:
                    rows = con.execute(
                        "SELECT t.path, l.ts FROM shopfloor.latest AS l JOIN shopfloor.tags "
                        "AS t ON t.id = l.tag_id WHERE t.path = ANY(%s)",
                        [self._paths],
                    ).fetchall()
                except psycopg.Error:
                    continue  # the schema is made by the first worker
                now = now_ns()
                for path, ts in rows:
                    if ts > seen.get(path, 0):
                        if path in seen:  # the first one seen may be old: not timed
                            self.latencies_ms.append((now - int(ts)) / 1e6)
                        seen[path] = int(ts)


def _pipeline_run(
    args: argparse.Namespace,
    pg: PostgresServer,
    broker: Mosquitto,
    workers: int,
    tag: str,
    *,
    alarms: bool = False,
) -> dict[str, Any]:
    dsn = pg.create_database(f"scale_{tag}")
    folder = Path(tempfile.mkdtemp(prefix=f"bench-scale-{tag}-"))
    config = _config(folder, dsn=dsn, broker=broker.port, alarm_edges=args.edges if alarms else 0)
    report_file = folder / "loadgen.json"
    options = {
        "broker": f"127.0.0.1:{broker.port}",
        "edges": args.edges,
        "tags": args.tags,
        "samples": args.samples,
        "window": args.window,
        "rate": args.rate,
        "duration": args.duration,
        "prefix": f"b{tag}",  # a fresh edge identity per run: its seqs start at 1 again
        "json": report_file,
    }
    command = [sys.executable, "-m", "shopfloor", "loadgen"]
    command += [a for k, v in options.items() for a in (f"--{k}", str(v))]
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    mosquitto = _pid_of(str(broker.workdir))
    probe = [tag_path(e, 0) for e in range(args.edges)]
    with _workers(folder, config, workers) as pids, _Queryable(dsn, probe) as queryable:
        processes = _Processes(pids, postmaster, mosquitto)
        before = processes.cpu()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, check=False, timeout=600)
        wall = time.monotonic() - started
        after = processes.cpu()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stdout.decode() + done.stderr.decode())
    report: dict[str, Any] = json.loads(report_file.read_text())
    cpu = {name: after[name] - before[name] for name in after}
    cpu["loadgen"] = (children_after.ru_utime + children_after.ru_stime) - (
        children.ru_utime + children.ru_stime
    )
    report["cpu"] = cpu
    report["cores_busy"] = sum(cpu.values()) / wall
    report["queryable"] = queryable.latencies_ms
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT count(*) FROM shopfloor.points").fetchone()
        report["stored"] = int(row[0]) if row else 0
        if alarms:  # wait for the owners to catch up, then count what they journaled
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                left = con.execute("SELECT count(*) FROM shopfloor.point_feed").fetchone()
                if left is not None and left[0] == 0:
                    break
                time.sleep(0.2)
            row = con.execute("SELECT count(*) FROM shopfloor.alarm_journal").fetchone()
            report["alarm_transitions"] = int(row[0]) if row else 0
    return report


def _points(total: int, tags: int, samples: int) -> tuple[np.ndarray, ...]:
    """``total`` points shaped like loadgen's: tags × samples per batch, ts 1 ns apart."""
    batches = max(1, total // (tags * samples))
    tag_id = np.tile(np.repeat(np.arange(1, tags + 1, dtype=np.int32), samples), batches)
    base = now_ns() + np.repeat(np.arange(batches, dtype=np.int64) * 10_000_000, tags * samples)
    ts = base + np.tile(np.arange(samples, dtype=np.int64), tags * batches)
    value = np.random.default_rng(1).random(len(ts))
    quality = np.zeros(len(ts), dtype=np.uint32)
    return tag_id, ts, value, quality


def _copy_run(pg: PostgresServer, total: int, args: argparse.Namespace, *, blocks: bool) -> float:
    """Points per second of one client's binary COPY, ``COPY_CHUNK`` points a transaction."""
    dsn = pg.create_database()
    tag_id, ts, value, quality = _points(total, args.tags, args.samples)
    with psycopg.connect(dsn, autocommit=True) as con:
        if blocks:
            con.execute(
                "CREATE TABLE points_recent(tag_id integer NOT NULL, block bigint NOT NULL, "
                "ts bigint[] NOT NULL, value float8[] NOT NULL, quality integer[] NOT NULL, "
                "text text[])"
            )
            con.execute("CREATE INDEX ON points_recent(tag_id, block)")
        else:
            con.execute(f"CREATE TABLE points({pg_schema.POINTS_COLUMNS})")
        started = time.perf_counter()
        for lo in range(0, len(ts), COPY_CHUNK):
            hi = min(lo + COPY_CHUNK, len(ts))
            order = np.lexsort((ts[lo:hi], tag_id[lo:hi]))  # the writer sorts its commits
            t, v = ts[lo:hi][order], value[lo:hi][order]
            i, q = tag_id[lo:hi][order], quality[lo:hi][order]
            if blocks:
                sql, stream = pg_blocks.COPY_RECENT, pg_blocks.encode_segments(i, t, v, q, None)
            else:
                sql, stream = pg_schema.COPY_POINTS, pg_schema.encode_points(t, v, i, q, None)
            with con.transaction(), con.cursor() as cur, cur.copy(sql) as copy:
                copy.write(stream)
        return len(ts) / (time.perf_counter() - started)


def _loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (the machine may be shared)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--edges", type=int, default=8)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="points/s offered by all edges together (0: a closed loop, as fast as answered); "
        "below the capacity, the latencies are those of an unloaded pipeline",
    )
    args = parser.parse_args()
    load_before = _loadavg()

    setups = {"1 ingest worker": (1, False), "2 ingest workers": (2, False)}
    setups["2 workers, alarms on"] = (2, True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    copies: dict[str, list[float]] = {"narrow": [], "blocks": []}
    with ExitStack() as stack:
        pg = stack.enter_context(PostgresServer(durable=True))
        broker = stack.enter_context(Mosquitto(Path(tempfile.mkdtemp(prefix="bench-scale-mq-"))))
        for r in range(args.rounds):
            for s, (name, (workers, alarms)) in enumerate(setups.items()):
                report = _pipeline_run(args, pg, broker, workers, f"r{r}s{s}", alarms=alarms)
                runs[name].append(report)
                print(
                    f"round {r + 1}, {name}: {report['points_per_s']:,.0f} points/s, "
                    f"p50 {report['latency_ms']['p50']:.0f} ms, "
                    f"{report.get('alarm_transitions', 0)} alarm transitions",
                    file=sys.stderr,
                )
            first = runs["1 ingest worker"]
            total = int(statistics.median(rep["acknowledged_points"] for rep in first))
            for kind, rates in copies.items():
                rates.append(_copy_run(pg, total, args, blocks=kind == "blocks"))

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    print()
    print(
        f"host: {os.cpu_count()} cores; PostgreSQL durable (fsync, synchronous_commit on); "
        f"load: {args.edges} edges × {args.tags} tags × {args.samples} values per batch "
        f"({args.tags * args.samples:,} points), window {args.window}, "
        f"{f'offered {args.rate:,.0f} points/s' if args.rate else 'closed loop'}, "
        f"{args.duration:g} s; "
        f"medians of {args.rounds} rounds; load average before: {load_before}, after: "
        f"{_loadavg()}"
    )
    header = (
        "setup", "points/s", "answer p50 ms", "p95 ms", "p99 ms", "e2e p50 ms", "e2e p95 ms",
        "e2e p99 ms",
        "resends", "stored = acked", "CPU s/M pts: loadgen", "workers", "postgres",
        "mosquitto", "cores busy",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for kind, label in (("narrow", "narrow rows"), ("blocks", "historian blocks")):
        copy = f"{med(copies[kind]):,.0f}"
        rows.append((f"baseline: binary COPY, {label}", copy, *("-",) * 13))
    for name, reports in runs.items():
        lat = {q: med([rep["latency_ms"][q] for rep in reports]) for q in ("p50", "p95", "p99")}
        e2e = [rep["queryable"] for rep in reports if rep["queryable"]]
        rows.append(
            (
                name,
                f"{med([rep['points_per_s'] for rep in reports]):,.0f}",
                f"{lat['p50']:,.0f}",
                f"{lat['p95']:,.0f}",
                f"{lat['p99']:,.0f}",
                *(f"{med([float(np.percentile(e, q)) for e in e2e]):,.0f}" for q in (50, 95, 99)),
                f"{med([rep['resends'] for rep in reports]):,.0f}",
                "yes"
                if all(rep["stored"] == rep["acknowledged_points"] for rep in reports)
                else "NO",
                *(
                    f"{med([r['cpu'][k] / r['acknowledged_points'] * 1e6 for r in reports]):.1f}"
                    for k in ("loadgen", "workers", "postgres", "mosquitto")
                ),
                f"{med([rep['cores_busy'] for rep in reports]):.2f}",
            )
        )
    print_table(header, rows)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A Markdown table, right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
