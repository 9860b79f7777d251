"""Ingest scaled out (issue 9): Mosquitto, PostgreSQL, two `shopfloor ingest` workers and two
`shopfloor server` API processes, all real; `shopfloor loadgen` plays simulated edges through
the broker; one worker is killed with SIGKILL mid-run.

Every acknowledged point must be stored exactly once, every alarm transition the stored
points cause must be journaled exactly once (the alarms partitioned across the workers,
the killed one's partitions taken over by the survivor), the surviving worker must take
over, and both API servers must serve what the workers wrote and the alarms they journaled.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import websockets.sync.client

from shopfloor.loadgen import tag_path
from shopfloor.model import now_ns
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.postgres import PostgresServer, server_for_tests
from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system

EDGES, TAGS, SAMPLES = 4, 50, 10
WINDOW = 1
"""Batches of each edge awaiting their answer. One: an edge's batches are then committed in
the order of their values, whichever worker takes them, so the alarm transitions the
stored points cause are known from the points alone (with more, a batch sent again after
the kill commits after a newer one, and alarms ignore points older than they have seen,
as a single server does)."""
ALARM_TAG = 7
LIMIT = 0.9  # H limit on ALARM_TAG of every edge: uniform values cross it ~ every 11th point
PARTITIONS = 8
DURATION_S = 8.0
KILL_AFTER_BATCHES = 40
"""Batches committed before a worker is killed: the load is flowing by then."""
SHARED_KEY = "the-secret-key-every-api-server-of-this-test-shares\n"
ANSWER_TIMEOUT_S = 3.0  # the edges' wait for an answer before sending a batch again


def _config(folder: Path, *, dsn: str, broker: int, port: int) -> Path:
    path = folder / f"platform-{port}.toml"
    key = folder / "shared.key"  # the same key on every API server (docs/scale-out.md)
    key.write_text(SHARED_KEY)
    path.write_text(
        f'[server]\nport = {port}\ndata_dir = "data-{port}"\n'
        f'[security]\nsecret_key_file = "{key}"\n'
        f'[historian]\nkind = "postgres"\ndsn = "{dsn}"\nshared = true\n'
        "flush_interval_s = 0.2\n"
        # the API servers do not consume; `shopfloor ingest` always does
        f"[ingest.mqtt]\nenabled = false\nport = {broker}\n"
        'shared_group = "ingest"\nsession_expiry = "0s"\nmax_inflight = 8\n'
        "live_fanout = true\n"
        f"[alarms]\npartitions = {PARTITIONS}\n"
        + "".join(
            f'[[alarms.rules]]\ntag = "{tag_path(e, ALARM_TAG)}"\nkind = "H"\nlimit = {LIMIT}\n'
            for e in range(EDGES)
        )
    )
    return path


def _alarm_name(edge: int) -> str:
    return f"{tag_path(edge, ALARM_TAG)}.H"


def _expected_transitions(con: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """Per alarm, (activations, clears) its tag's stored points cause in time order."""
    out = {}
    for edge in range(EDGES):
        values = np.array(
            [
                v
                for (v,) in con.execute(
                    "SELECT p.value FROM shopfloor.points AS p JOIN shopfloor.tags AS t "
                    "ON t.id = p.tag_id WHERE t.path = %s ORDER BY p.ts",
                    [tag_path(edge, ALARM_TAG)],
                ).fetchall()
            ]
        )
        on = np.r_[False, values > LIMIT]
        out[_alarm_name(edge)] = (int((on[1:] & ~on[:-1]).sum()), int((~on[1:] & on[:-1]).sum()))
    return out


def _journaled(dsn: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT alarm, count(*) FILTER (WHERE event = 'activated'), "
            "count(*) FILTER (WHERE event = 'cleared') FROM shopfloor.alarm_journal "
            "GROUP BY alarm"
        ).fetchall()
    return {alarm: (int(on), int(off)) for alarm, on, off in rows}


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


@contextmanager
def _worker(folder: Path, config: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `shopfloor ingest` process, started (see :func:`_wait_started`), killed on exit."""
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
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _wait_started(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until a worker takes batches (the processes start side by side: faster on a
    busy machine than one after the other)."""
    deadline = time.monotonic() + 60
    while "taking batches from" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"worker {log_path.name} did not start:\n{log_path.read_text()}")
        time.sleep(0.1)


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


def _check_alarms(dsn: str, apis: list[Any], *, survivor: int, killed_ns: int) -> None:
    """Every alarm transition the stored points cause is journaled exactly once, only the
    survivor evaluated after the kill, and the API servers show what was journaled."""
    with psycopg.connect(dsn) as con:
        expected = _expected_transitions(con)
    assert all(on > 5 for on, _ in expected.values()), expected  # the load crossed the limit
    _wait_for("the alarm journal matches the points", lambda: _journaled(dsn) == expected)
    with psycopg.connect(dsn) as con:
        owners = {
            str(owner)
            for (owner,) in con.execute(
                "SELECT owner FROM shopfloor.alarm_cursor WHERE moved_ns > %s", [killed_ns]
            ).fetchall()
        }
        conditions = dict(
            con.execute("SELECT alarm, condition FROM shopfloor.alarm_status").fetchall()
        )
    # after the kill only the survivor evaluated: the dead one's partitions moved to it
    assert owners, "no alarm journaled after the kill"
    assert all(o.endswith(f"-{survivor}") for o in owners), owners
    assert len(conditions) == EDGES
    for api in apis:

        def shown(api: Any = api) -> dict[str, bool]:
            return {a["name"]: a["condition"] for a in _alarms(api)}

        _wait_for(f"{api.base_url} shows the journaled alarms", lambda: shown() == conditions)
    # an operator acknowledges through one API server; the owning worker applies it and
    # the other API server shows it: no state in the API servers
    name = _alarm_name(0)
    states = {a["name"]: a["state"] for a in _alarms(apis[0])}
    assert states[name] in ("unacknowledged", "returned_unacknowledged"), states
    ack = httpx.post(
        f"{apis[0].base_url}/api/v1/alarms/acknowledge",
        json={"alarm": name, "comment": "seen"},
        headers=apis[0].headers,
        timeout=30,
    )
    assert ack.status_code == 200, ack.text
    after = ack.json()["after"]
    assert after in ("acknowledged", "normal"), ack.json()
    _wait_for(
        "the other API server shows the acknowledgement",
        lambda: {a["name"]: a["state"] for a in _alarms(apis[1])}[name] == after,
    )


def _check_edges(apis: list[Any]) -> None:
    """Both API servers list every edge with what was stored from it, whichever worker
    took its batches (the edges' table in PostgreSQL)."""
    for api in apis:

        def listed(api: Any = api) -> dict[str, int]:
            answer = api.get("/api/v1/edges", timeout=30)
            assert answer.status_code == 200, answer.text
            return {e["edge"]: e["batches"] for e in answer.json()["edges"]}

        _wait_for(
            f"{api.base_url} lists every edge",
            lambda: len(listed()) == EDGES and all(b > 0 for b in listed().values()),
        )


def _start_load(folder: Path, *, broker: int, report: Path) -> subprocess.Popen[bytes]:
    """`shopfloor loadgen` in the background, its report in ``report``."""
    options = {
        "broker": f"127.0.0.1:{broker}",
        "edges": EDGES,
        "tags": TAGS,
        "samples": SAMPLES,
        "window": WINDOW,
        "duration": DURATION_S,
        "timeout": ANSWER_TIMEOUT_S,
        "drain": 30,
        "json": report,
    }
    with (folder / "loadgen.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "loadgen"]
            + [arg for k, v in options.items() for arg in (f"--{k}", str(v))],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _last_alarm_owner(dsn: str) -> str:
    """The member that journaled alarms last ("" before any)."""
    with psycopg.connect(dsn) as con:
        row = con.execute(
            "SELECT owner FROM shopfloor.alarm_cursor ORDER BY moved_ns DESC LIMIT 1"
        ).fetchone()
    return "" if row is None else str(row[0])


def _check_live_values(api: Any) -> None:
    """The API server's websocket pushes the workers' points as they come (fan-out through
    the broker): a "values" frame comes only from the server's live channel, which has no
    ingest of its own; the snapshot alone would come from the database."""
    prefix = tag_path(1, 0).rpartition("/")[0]
    url = api.base_url.replace("http", "ws", 1) + "/api/v1/ws"
    with websockets.sync.client.connect(url, open_timeout=10, additional_headers=api.headers) as ws:
        ws.send(json.dumps({"type": "subscribe", "prefix": prefix}))
        deadline = time.monotonic() + 15
        snapshots = 0  # the first on connect; the second answers the subscription
        while True:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            snapshots += frame["type"] == "snapshot"
            if frame["type"] == "values" and frame["values"] and snapshots >= 2:
                assert all(v["path"].startswith(prefix) for v in frame["values"]), frame
                return


def _api_server(folder: Path, *, dsn: str, broker: int) -> Any:
    """A `shopfloor server` (API only) in ``folder``: a context manager."""
    port = free_port()
    folder.mkdir()
    config = _config(folder, dsn=dsn, broker=broker, port=port)
    return shopfloor_process(["server", "--config", str(config)], port=port, workdir=folder)


def _alarms(api: Any) -> list[dict[str, Any]]:
    """Every alarm as an API server lists it."""
    answer = api.get("/api/v1/alarms", params={"state": "all"}, timeout=30)
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()
    return result


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
        apis = [
            stack.enter_context(_api_server(tmp_path / name, dsn=dsn, broker=broker.port))
            for name in ("api-1", "api-2")
        ]
        for proc, name in ((one, "worker-1"), (two, "worker-2")):
            _wait_started(proc, tmp_path / f"{name}.log")
        report_file = tmp_path / "loadgen.json"
        loadgen = _start_load(tmp_path, broker=broker.port, report=report_file)
        try:
            # mid-run: once the load flows (both workers committing), not after a fixed
            # time, which a busy machine spends starting the load generator
            _wait_for_commits(dsn, at_least=KILL_AFTER_BATCHES)
            _check_live_values(apis[1])
            # the worker that journaled alarms last: it owns alarm partitions now
            survivor_log = "worker-2.log"
            if _last_alarm_owner(dsn).endswith(f"-{two.pid}"):
                one, two, survivor_log = two, one, "worker-1.log"
            one.send_signal(signal.SIGKILL)  # batches in flight, alarm partitions owned
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

        _check_alarms(dsn, apis, survivor=two.pid, killed_ns=killed_ns)

        # users and tokens are shared: the token one API server made at its start works
        # on the other
        for api, other in ((apis[0], apis[1]), (apis[1], apis[0])):
            me = httpx.get(f"{other.base_url}/api/v1/auth/me", headers=api.headers, timeout=30)
            assert me.status_code == 200, me.text

        _check_edges(apis)

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
        assert two.wait(30) == 0, (tmp_path / survivor_log).read_text()
        assert "batches committed" in (tmp_path / survivor_log).read_text()
