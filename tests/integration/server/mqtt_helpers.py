"""Shared pieces of the MQTT ingest process tests: broker, processes, exact counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from shopfloor.testing.mosquitto import Mosquitto, broker_for_tests

HERE = Path(__file__).parent
PLATFORM = HERE / "mqtt_platform.py"
WRITER = HERE / "mqtt_edge_writer.py"
T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/mqtt"
POINTS = 50
EDGE = "edge-m"


class TestBroker(Mosquitto):
    """The throwaway broker, with persistence (saved on SIGTERM) and extra config lines.

    ``autosave_interval`` is long: a SIGKILL loses everything since the last clean exit,
    which is the harshest case for the edge's re-sends.
    """

    __test__ = False

    def __init__(self, workdir: Path, *, extra: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self._extra = list(extra)

    def _write_config(self) -> Path:
        conf = super()._write_config()
        text = conf.read_text().replace(
            "persistence false\n",
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 3600\n",
        )
        conf.write_text(text + "".join(f"{line}\n" for line in self._extra))
        return conf


def start_broker(workdir: Path, *, extra: Sequence[str] = ()) -> TestBroker:
    """Start a :class:`TestBroker` (skip without the binary, fail under CI)."""
    broker = broker_for_tests(lambda: TestBroker(workdir, extra=extra))
    assert isinstance(broker, TestBroker)
    return broker


@dataclass
class Proc:
    """A child process whose output goes to a log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if self.popen.poll() is not None:
                raise AssertionError(f"exited with {self.popen.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def spawn(args: Sequence[object], log_path: Path, *, cwd: Path | None = None) -> Proc:
    """Start ``python ARGS`` with its output in ``log_path``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, *map(str, args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )
    return Proc(popen, log_path)


def start_platform(tmp_path: Path, broker: Mosquitto, name: str) -> Proc:
    """The MQTT ingest process on ``tmp_path/history.duckdb``; returns once subscribed."""
    proc = spawn(
        [str(PLATFORM), str(tmp_path / "history.duckdb"), str(broker.port)],
        tmp_path / f"{name}.log",
    )
    proc.wait_for("ready")
    return proc


def write_edge_config(tmp_path: Path, broker: Mosquitto, *, timeout: str = "2s") -> Path:
    """An edge file sending over MQTT with short timeouts."""
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[edge]\nid = "{EDGE}"\ndata_dir = "edge-data"\n'
        f'[uplink]\ntransport = "mqtt"\ntimeout = "{timeout}"\nretry_max = "1s"\nwindow = 16\n'
        f'[uplink.mqtt]\nport = {broker.port}\nreconnect_max = "500ms"\nkeepalive = "5s"\n'
        '[buffer]\nsegment_size = "256KiB"\n'
    )
    return path


def start_writer(tmp_path: Path, run: int, count: int, *, pace_s: float = 0.005) -> Proc:
    """The edge process appending ``count`` batches, one per ``pace_s`` at most; returns
    once it appended one."""
    proc = spawn(
        [WRITER, tmp_path / "edge.toml", tmp_path / "durable.log", run, count, pace_s],
        tmp_path / f"writer-{run}.log",
    )
    deadline = time.monotonic() + 30
    while not durable(tmp_path):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the edge did not start appending:\n{proc.log()}")
        time.sleep(0.02)
    return proc


def expected_ts(run: int, k: int) -> np.ndarray:
    return T0 + (run * 1_000_000 + k) * 1000 + np.arange(POINTS, dtype=np.int64)


def durable(tmp_path: Path) -> list[tuple[int, int]]:
    """The batches the edge logged as durable, as ``(run, k)``."""
    try:
        lines = (tmp_path / "durable.log").read_text().split("\n")
    except FileNotFoundError:
        return []
    return [(int(a), int(b)) for a, b in (line.split() for line in lines if line.strip())]


@dataclass(frozen=True)
class Counts:
    """Exact accounting: lost = durable − stored, duplicated = stored − unique."""

    durable_points: int
    stored_points: int
    lost: int
    duplicated: int
    never_appended: int
    ledger_batches: int


def counts(db: Path, accepted: list[tuple[int, int]]) -> Counts:
    """Compare what the historian at ``db`` holds with the batches the edge made durable.

    Also checks that no batch is half-applied: every batch id in the points has all its
    points and exactly one ledger row, and every ledger row has its points.
    """
    want = (
        np.concatenate([expected_ts(run, k) for run, k in accepted])
        if accepted
        else np.empty(0, dtype=np.int64)
    )
    with duckdb.connect(str(db), read_only=True) as con:
        stored = np.array(
            [
                r[0]
                for r in con.execute(
                    "SELECT p.ts FROM points p JOIN tags t ON t.id = p.tag_id WHERE t.path = ?",
                    [TAG],
                ).fetchall()
            ],
            dtype=np.int64,
        )
        per_batch = dict(
            con.execute(
                "SELECT CAST(p.value AS BIGINT), count(*) FROM points p JOIN tags t "
                "ON t.id = p.tag_id WHERE t.path = ? GROUP BY ALL",
                [TAG],
            ).fetchall()
        )
        ledger = con.execute(
            "SELECT seq, points FROM ingest_ledger WHERE split_part(edge, '/', 1) = ?", [EDGE]
        ).fetchall()
    assert all(n == POINTS for n in per_batch.values()), "a batch is half-applied or doubled"
    assert len({s for s, _ in ledger}) == len(ledger), "a seq is twice in the ledger"
    assert all(p == POINTS for _, p in ledger)
    assert len(ledger) == len(per_batch), "points without their ledger row, or the reverse"
    return Counts(
        durable_points=len(want),
        stored_points=len(stored),
        lost=len(np.setdiff1d(want, stored)),
        duplicated=len(stored) - len(np.unique(stored)),
        never_appended=len(np.setdiff1d(stored, want)),
        ledger_batches=len(ledger),
    )
