"""The platform's MQTT ingest with real processes: ``shopfloor edge`` over MQTT end to
end, and a platform that stays away longer than the broker queues for it.

Exact counts at the end: lost = durably accepted − stored, duplicated = stored − unique.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import duckdb
import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.edge.buffer import DurableOutbox, SegmentLog
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor, IngestResult
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.wire import encode_arrow

from .mqtt_helpers import (
    EDGE,
    POINTS,
    counts,
    durable,
    spawn,
    start_broker,
    start_platform,
    start_writer,
    write_edge_config,
)

pytestmark = pytest.mark.system


class Stuck(Ingestor):
    """The real ingestor, except that no batch ever finishes (a platform that hangs or
    dies mid-commit, as far as the broker can tell)."""

    async def ingest(self, batch: PointBatch, **kwargs: Any) -> IngestResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _batch(seq: int) -> PointBatch:
    return PointBatch.from_points(
        [("t/a/b", 1_764_000_000_000_000_000 + seq * 100 + i, seq, 0) for i in range(5)]
    )


async def test_the_broker_keeps_batches_until_the_platform_committed_them(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """No edge re-sends here: only the broker can deliver the batches a second time, and
    it does so only because the PUBACK waits for the commit. And it sends no more than
    Receive Maximum (``max_inflight``) unacknowledged batches at a time."""
    historian = DuckDBHistorian(tmp_path / "history.duckdb", flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=8)
    settings = MqttIngestSection(
        enabled=True,
        port=mosquitto.port,
        max_inflight=2,
        drain_timeout="200ms",
        reconnect_max="200ms",
    )

    def consumer(ingestor: Ingestor) -> MqttIngest:
        return MqttIngest(ingestor, settings, register_tags=historian.register_tags)

    first = consumer(Stuck(historian, live))
    try:
        await first.start()
        assert await first.wait_connected(10)
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as publisher:
            for seq in range(1, 7):
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = [("seq", str(seq)), ("edge", EDGE)]
                await publisher.publish(
                    settings.topic(EDGE, "batches"),
                    encode_arrow(_batch(seq), edge=EDGE, seq=seq),
                    qos=1,
                    properties=properties,
                )
        async with asyncio.timeout(10):
            while first.stats().in_flight < 2:  # noqa: ASYNC110 - observable state
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # room for the broker to send more, were it to
        handed_over = first.stats().received + first.stats().waiting
        assert handed_over == 2, "the broker kept to Receive Maximum"
    finally:
        await first.stop()  # no commit finished: no PUBACK went out
    assert first.stats().committed == 0

    second = consumer(Ingestor(historian, live))
    try:
        await second.start()
        async with asyncio.timeout(10):
            while second.stats().committed < 6:  # noqa: ASYNC110 - observable state
                await asyncio.sleep(0.02)
    finally:
        await second.stop()
        await historian.flush()
        table = await historian.read_raw("t/a/b", 0, 2**62)
        await historian.close()
    assert second.stats().duplicates == 0
    values = table.column("value").to_numpy()
    assert np.array_equal(np.sort(values), np.repeat(np.arange(1, 7, dtype=float), 5))


def _outbox_state(folder: Path) -> tuple[int, int]:
    """(batches ever appended, batches still waiting) of the edge's outbox on disk."""

    async def read() -> tuple[int, int]:
        outbox = DurableOutbox(SegmentLog(folder), max_bytes=1 << 30)
        await outbox.open()
        try:
            stats = outbox.stats()
            return stats.next_seq - 1, stats.batches
        finally:
            await outbox.close()

    return asyncio.run(read())


def test_shopfloor_edge_process_sends_over_mqtt_exactly_once(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    try:
        platform = start_platform(tmp_path, broker, "platform")
        edge_dir = tmp_path / "edge"
        edge_dir.mkdir()
        (edge_dir / "edge.toml").write_text(
            f'[edge]\nid = "{EDGE}"\n'
            '[uplink]\ntransport = "mqtt"\ntimeout = "3s"\n'
            f"[uplink.mqtt]\nport = {broker.port}\n"
            '[health]\nport = 0\nstatus_interval = "1s"\n'
            '[[connectors]]\nkind = "simulator"\nname = "sim"\nbackfill = "2m"\nspeed = 60\n'
        )
        edge = spawn(
            ["-m", "shopfloor", "edge", "--config", "edge.toml"],
            edge_dir / "edge.log",
            cwd=edge_dir,
        )
        try:
            edge.wait_for("MQTT uplink: connected")
            time.sleep(3.0)
        finally:
            edge_code = edge.stop(signal.SIGINT)  # stops reading, drains up to 2 s, exits
        assert edge_code == 0, edge.log()
        assert "Traceback" not in edge.log()
        assert platform.stop(signal.SIGTERM) == 0, platform.log()
    finally:
        broker.stop()
    report = json.loads(platform.log().strip().splitlines()[-1])
    assert report["edges"] == {EDGE: True}, "the edge's status reports arrived over MQTT"
    assert report["tags_messages"] >= 1

    appended, waiting = _outbox_state(edge_dir / "edge-data" / "outbox")
    with duckdb.connect(str(tmp_path / "history.duckdb"), read_only=True) as con:
        mine = "SELECT seq FROM ingest_ledger WHERE split_part(edge, '/', 1) = ?"
        seqs = [r[0] for r in con.execute(mine, [EDGE]).fetchall()]
        ledger_points = con.execute(
            "SELECT sum(points) FROM ingest_ledger WHERE split_part(edge, '/', 1) = ?", [EDGE]
        ).fetchone()
        rows, unique = con.execute(
            "SELECT count(*), count(DISTINCT (tag_id, ts)) FROM points"
        ).fetchone() or (0, 0)
        units = dict(con.execute("SELECT path, unit FROM tags").fetchall())
    assert appended > 10, "the edge read for a while"
    assert waiting == 0, "and drained on exit"
    # every batch the edge ever appended is in the ledger exactly once: none lost, none twice
    assert sorted(seqs) == list(range(1, appended + 1))
    assert ledger_points is not None
    assert rows == ledger_points[0]
    assert rows == unique, "a point stored twice"
    assert any(path.endswith("spindle_temp") and unit for path, unit in units.items())


def test_platform_away_longer_than_the_broker_queues_loses_nothing(tmp_path: Path) -> None:
    # The broker keeps at most 2 messages for an absent client and drops the rest: the
    # edge gets no answer for those and sends them again.
    broker = start_broker(tmp_path / "broker", extra=["max_queued_messages 2"])
    db = tmp_path / "history.duckdb"
    count = 150
    try:
        write_edge_config(tmp_path, broker)
        platform = start_platform(tmp_path, broker, "platform-0")
        writer = start_writer(tmp_path, 3, count)
        try:
            time.sleep(0.3)
            assert platform.stop(signal.SIGTERM) == 0, platform.log()
            delivered = counts(db, durable(tmp_path)).ledger_batches
            deadline = time.monotonic() + 30
            while "dropped" not in broker.log():
                assert time.monotonic() < deadline, broker.log()
                time.sleep(0.1)
            time.sleep(2.5)  # past the edge's timeout: it waits for answers that never come
            platform = start_platform(tmp_path, broker, "platform-1")
            assert writer.popen.wait(60) == 0, writer.log()
        finally:
            writer.stop(signal.SIGKILL)
            assert platform.stop(signal.SIGTERM) == 0, platform.log()
    finally:
        broker.stop()
    assert 0 < delivered < count, "the platform went away mid-stream"
    final = counts(db, durable(tmp_path))
    assert (final.lost, final.duplicated, final.never_appended) == (0, 0, 0)
    assert final.stored_points == count * POINTS
    assert final.ledger_batches == count
