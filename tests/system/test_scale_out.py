"""Ingest scaled out (issue 9): Mosquitto, PostgreSQL, two `shopfloor ingest` workers and two
`shopfloor server` API processes, all real; `shopfloor loadgen` plays simulated edges through
the broker; one worker is killed with SIGKILL mid-run.

Every acknowledged point must be stored exactly once, the surviving worker must take over,
and both API servers must serve what the workers wrote.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest

from shopfloor.loadgen import tag_path
from shopfloor.model import now_ns
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.postgres import PostgresServer, server_for_tests
from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system

EDGES, TAGS, SAMPLES = 4, 50, 10
WINDOW = 2  # batches of each edge awaiting their answer: the workers always have some
DURATION_S = 8.0
KILL_AFTER_BATCHES = 40
"""Batches committed before a worker is killed: the load is flowing by then."""
ANSWER_TIMEOUT_S = 3.0  # the edges' wait for an answer before sending a batch again


def _config(folder: Path, *, dsn: str, broker: int, port: int) -> Path:
    path = folder / f"platform-{port}.toml"
    path.write_text(
        f'[server]\nport = {port}\ndata_dir = "data-{port}"\n'
        f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n'
        "flush_interval_s = 0.2\n"
        # the API servers do not consume; `shopfloor ingest` always does
        f"[ingest.mqtt]\nenabled = false\nport = {broker}\n"
        'shared_group = "ingest"\nsession_expiry = "0s"\nmax_inflight = 8\n'
    )
    return path


@contextmanager
def _worker(folder: Path, config: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "ingest", "--config", str(config)],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while "taking batches from" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _wait_for_commits(dsn: str, *, at_least: int, timeout_s: float = 30.0) -> None:
    """Wait until the workers have committed ``at_least`` batches (the ingest ledger)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as con:
            row = con.execute("SELECT count(*) FROM shopfloor.ingest_ledger").fetchone()
            if row is not None and row[0] >= at_least:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} batches committed in {timeout_s} s")
        time.sleep(0.05)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = server_for_tests()
    try:
        yield server
    finally:
        server.stop()


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    dsn = postgres.create_database("scale")
    with ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(tmp_path / "broker"))
        worker_config = _config(tmp_path, dsn=dsn, broker=broker.port, port=free_port())
        one = stack.enter_context(_worker(tmp_path, worker_config, "worker-1"))
        two = stack.enter_context(_worker(tmp_path, worker_config, "worker-2"))
        apis = []
        for name in ("api-1", "api-2"):
            port = free_port()
            folder = tmp_path / name
            folder.mkdir()
            config = _config(folder, dsn=dsn, broker=broker.port, port=port)
            apis.append(
                stack.enter_context(
                    shopfloor_process(
                        ["server", "--config", str(config)], port=port, workdir=folder
                    )
                )
            )
        report_file = tmp_path / "loadgen.json"
        with (tmp_path / "loadgen.log").open("wb") as log:
            options = {
                "broker": f"127.0.0.1:{broker.port}",
                "edges": EDGES,
                "tags": TAGS,
                "samples": SAMPLES,
                "window": WINDOW,
                "duration": DURATION_S,
                "timeout": ANSWER_TIMEOUT_S,
                "drain": 30,
                "json": report_file,
            }
            loadgen = subprocess.Popen(
                [sys.executable, "-m", "shopfloor", "loadgen"]
                + [arg for k, v in options.items() for arg in (f"--{k}", str(v))],
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            # mid-run: once the load flows (both workers committing), not after a fixed
            # time, which a busy machine spends starting the load generator
            _wait_for_commits(dsn, at_least=KILL_AFTER_BATCHES)
            one.send_signal(signal.SIGKILL)  # batches in flight
            one.wait(10)
            killed_ns = now_ns()
            code = loadgen.wait(DURATION_S + 60)
        finally:
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait(10)
        loadgen_log = (tmp_path / "loadgen.log").read_text()
        assert code == 0, loadgen_log
        report = json.loads(report_file.read_text())
        assert report["unacknowledged"] == 0, report
        assert report["refused"] == 0, report

        # every acknowledged point stored exactly once
        with psycopg.connect(dsn) as con:
            stored, unique = con.execute(
                "SELECT count(*), count(DISTINCT (tag_id, ts)) FROM shopfloor.points"
            ).fetchone() or (0, 0)
            (of_tag,) = con.execute(
                "SELECT count(*) FROM shopfloor.points AS p JOIN shopfloor.tags AS t "
                "ON t.id = p.tag_id WHERE t.path = %s",
                [tag_path(1, 7)],
            ).fetchone() or (0,)
            after_kill = con.execute(
                "SELECT count(*) FROM shopfloor.ingest_ledger WHERE committed_at > %s",
                [killed_ns],
            ).fetchone()
        acknowledged = report["acknowledged_points"]
        assert acknowledged == report["points"] > 10 * EDGES * TAGS * SAMPLES, report
        # Batches in flight to the killed worker are dropped with its session
        # (session_expiry 0) and sent again by their edges after the answer timeout, so
        # `resends` is usually above 0; it is not asserted: with only 8 batches
        # outstanding the killed worker may hold none at the instant of the kill (seen
        # on a busy machine). What must hold either way is below.
        assert (acknowledged - stored, stored - unique) == (0, 0), (report, stored, unique)
        # the survivor took over: batches kept being committed after the kill
        assert after_kill is not None
        assert after_kill[0] > 0

        # both API servers serve what the workers wrote
        path = tag_path(1, 7)
        for api in apis:
            series = api.get(
                f"/api/v1/tags/{path}/series",
                params={"start": "-10m", "end": "now", "limit": 100_000},
                timeout=30,
            )
            assert series.status_code == 200, series.text
            assert len(series.json()["columns"]["value"]) == of_tag > 0

        # the survivor stops gracefully on SIGTERM
        two.send_signal(signal.SIGTERM)
        assert two.wait(30) == 0, (tmp_path / "worker-2.log").read_text()
        assert "batches committed" in (tmp_path / "worker-2.log").read_text()
