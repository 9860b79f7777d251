"""An edge process SIGKILLed again and again while a platform process runs.

Exact counts at the end: lost = durable − stored = 0, duplicated = stored − unique = 0.
"Durable" is what the edge process logged after ``send`` returned.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system

WRITER = Path(__file__).with_name("edge_writer.py")
T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/killed"
POINTS = 50
RUNS = 6


def expected_ts(run: int, k: int) -> np.ndarray:
    return T0 + (run * 1_000_000 + k) * 1000 + np.arange(POINTS, dtype=np.int64)


def edge(tmp_path: Path, url: str, run: int, *extra: str, token: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"edge-{run}.out").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            str(WRITER),
            str(tmp_path / "outbox"),
            url,
            str(tmp_path / "durable.log"),
            str(run),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "EDGE_TOKEN": token},
    )


def appending(log: Path, run: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until run ``run`` logged its first durable batch."""
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and f"\n{run} 0\n" in "\n" + log.read_text()):
        assert proc.poll() is None, f"the edge of run {run} exited"
        assert time.monotonic() < deadline, f"run {run} appended nothing in {timeout_s} s"
        time.sleep(0.05)


def test_sigkilled_edge_loses_nothing_durable_and_duplicates_nothing(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "server.toml").write_text(
        f'[server]\nport = {port}\ndata_dir = "data"\n[historian]\nflush_interval_s = 0.1\n'
    )
    rng = random.Random(4)
    with shopfloor_process(
        ["server", "--config", "server.toml"], port=port, workdir=tmp_path
    ) as server:
        for run in range(RUNS):
            proc = edge(tmp_path, server.base_url, run, token=server.token)
            try:
                appending(tmp_path / "durable.log", run, proc)  # started, however loaded
                time.sleep(rng.uniform(0.2, 1.0))  # mid-append and mid-request, at random
                assert proc.poll() is None, (tmp_path / f"edge-{run}.out").read_text()
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        drain = edge(tmp_path, server.base_url, 99, "--drain", token=server.token)
        assert drain.wait(30) == 0, (tmp_path / "edge-99.out").read_text()
        assert server.stop(signal.SIGINT) == 0, server.log()

    lines = (tmp_path / "durable.log").read_text().split("\n")
    durable = [tuple(map(int, line.split())) for line in lines if line.strip()]
    assert len(durable) > 100, "the edge got going before each kill"
    want = np.concatenate([expected_ts(run, k) for run, k in durable])
    with duckdb.connect(str(tmp_path / "data" / "history.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT p.ts FROM points p JOIN tags t ON t.id = p.tag_id WHERE t.path = ?", [TAG]
        ).fetchall()
    stored = np.array([r[0] for r in rows], dtype=np.int64)
    lost = np.setdiff1d(want, stored)
    duplicated = len(stored) - len(np.unique(stored))
    assert len(lost) == 0, f"{len(lost)} durable points lost"
    assert duplicated == 0, f"{duplicated} points stored twice"
    # Stored beyond the log: at most the one batch per run that was durable when the
    # kill came between send() returning and the log line.
    last = {run: max((k for r, k in durable if r == run), default=-1) for run in range(RUNS)}
    allowed = np.concatenate([expected_ts(run, k + 1) for run, k in last.items()])
    extra = np.setdiff1d(stored, want)
    assert np.isin(extra, allowed).all(), "nothing was stored that was never appended"
