"""Store and forward over MQTT under faults, with real processes: an edge process, the
platform's MQTT ingest process, and a throwaway Mosquitto.

Each test ends with exact counts — lost = durably accepted − stored, duplicated =
stored − unique — and checks that no batch is half-applied (every batch has all its
points and one ledger row, or nothing).
"""

from __future__ import annotations

import itertools
import random
import signal
import time
from pathlib import Path

import pytest

from .mqtt_helpers import (
    POINTS,
    counts,
    durable,
    start_broker,
    start_platform,
    start_writer,
    write_edge_config,
)

pytestmark = pytest.mark.system

COUNT = 400


def test_platform_sigkilled_mid_commit_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    broker = start_broker(tmp_path / "broker")
    db = tmp_path / "history.duckdb"
    rng = random.Random(4)
    try:
        write_edge_config(tmp_path, broker)
        platform = start_platform(tmp_path, broker, "platform-0")
        writer = start_writer(tmp_path, 1, COUNT, pace_s=0.02)
        try:
            committed: list[int] = []
            for run in range(3):
                time.sleep(rng.uniform(0.6, 1.4))  # mid-commit: 8 batches in flight
                platform.stop(signal.SIGKILL)
                # with the platform dead: nothing half-applied, nothing twice
                now = counts(db, durable(tmp_path))
                assert (now.duplicated, now.never_appended) == (0, 0)
                committed.append(now.ledger_batches)
                platform = start_platform(tmp_path, broker, f"platform-{run + 1}")
            assert writer.popen.wait(60) == 0, writer.log()
        finally:
            writer.stop(signal.SIGKILL)
            platform_code = platform.stop(signal.SIGTERM)
        assert platform_code == 0, platform.log()
    finally:
        broker.stop()
    assert committed[0] > 0, "killed while batches flowed"
    assert all(a < b for a, b in itertools.pairwise(committed)), "each run committed some"
    assert committed[-1] < COUNT, "the last kill came before the end of the stream"
    accepted = durable(tmp_path)
    assert len(accepted) == COUNT
    final = counts(db, accepted)
    assert (final.lost, final.duplicated, final.never_appended) == (0, 0, 0)
    assert final.stored_points == COUNT * POINTS == final.durable_points
    assert final.ledger_batches == COUNT


def test_broker_restarted_with_sigterm_then_sigkill_mid_stream(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    db = tmp_path / "history.duckdb"
    try:
        write_edge_config(tmp_path, broker)
        platform = start_platform(tmp_path, broker, "platform")
        writer = start_writer(tmp_path, 2, COUNT, pace_s=0.02)
        try:
            time.sleep(1.0)
            at_sigterm = len(durable(tmp_path))
            broker.restart()  # SIGTERM: Mosquitto saves sessions and queues, then exits
            time.sleep(1.0)
            at_sigkill = len(durable(tmp_path))
            broker.kill()  # SIGKILL: whatever it held since is gone; the edge re-sends
            broker.start()
            assert writer.popen.wait(60) == 0, writer.log()
        finally:
            writer.stop(signal.SIGKILL)
            platform_code = platform.stop(signal.SIGTERM)
        assert platform_code == 0, platform.log()
        assert "Saving in-memory database" in broker.log(), "persistence was on"
    finally:
        broker.stop()
    assert 0 < at_sigterm < at_sigkill < COUNT, "both restarts came mid-stream"
    final = counts(db, durable(tmp_path))
    assert (final.lost, final.duplicated, final.never_appended) == (0, 0, 0)
    assert final.stored_points == COUNT * POINTS
    assert final.ledger_batches == COUNT
