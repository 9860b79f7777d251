"""The edge's MQTT transport against a real Mosquitto and the platform's MQTT ingest.

Exact counts: every durable batch is stored once; nothing leaves the outbox on a broker
PUBACK, only on the platform's answer after its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.config import load_edge_config
from shopfloor.config.edge import UplinkMqttSection
from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.edge.buffer import DurableOutbox, SegmentLog
from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import Quarantine, list_quarantined
from shopfloor.edge.uplink.forwarder import OutboxUplink, build_outbox_uplink
from shopfloor.edge.uplink.framing import frame
from shopfloor.edge.uplink.http import Verdict
from shopfloor.edge.uplink.mqtt import MqttTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.errors import ConfigError, IngestBusy
from shopfloor.model import LiveBatch, PointBatch, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.wire import ledger_stream

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"
EDGE = "edge-q"


def points(k: int, n: int = 50) -> PointBatch:
    """Batch ``k``: ``n`` points with timestamps unique across batches."""
    return PointBatch.from_points([(TAG, T0 + k * 1000 + i, float(k), 0) for i in range(n)])


def want_ts(ks: range | list[int], n: int = 50) -> np.ndarray:
    return np.sort(np.concatenate([T0 + k * 1000 + np.arange(n) for k in ks]))


class BusyAtFirst(Ingestor):
    """The real ingestor, but "busy" for its first ``busy`` admissions."""

    busy = 2

    def admit(self) -> None:
        if self.busy > 0:
            self.busy -= 1
            raise IngestBusy("test: the historian is behind", 0.5)
        super().admit()


@asynccontextmanager
async def platform(
    tmp_path: Path,
    port: int,
    *,
    ingestor: type[Ingestor] = Ingestor,
    start: bool = True,
    **settings: Any,
) -> AsyncIterator[tuple[MqttIngest, DuckDBHistorian, Ingestor]]:
    """The platform's historian, ingestor and MQTT consumer in this process."""
    historian = DuckDBHistorian(tmp_path / "platform" / "history.duckdb", flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=64)
    ing = ingestor(historian, live)
    section = MqttIngestSection(
        enabled=True, port=port, max_inflight=8, reconnect_max="500ms", **settings
    )
    consumer = MqttIngest(ing, section, register_tags=historian.register_tags)
    if start:
        await consumer.start()
        assert await consumer.wait_connected(10), consumer.stats()
    try:
        yield consumer, historian, ing
    finally:
        await consumer.stop()
        await historian.close()


def edge_uplink(
    tmp_path: Path, settings: UplinkMqttSection, *, timeout_s: float = 2.0, **options: Any
) -> OutboxUplink:
    outbox = DurableOutbox(SegmentLog(tmp_path / "outbox"), max_bytes=1 << 30)
    return OutboxUplink(
        outbox,
        MqttTransport(settings, edge_id=EDGE, timeout_s=timeout_s),
        edge_id=EDGE,
        quarantine=Quarantine(tmp_path / "outbox" / "quarantine"),
        options=SenderOptions(**{"retry": (0.05, 0.5), **options}),
    )


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling observable state
            await asyncio.sleep(0.02)


async def stored(historian: DuckDBHistorian) -> np.ndarray:
    await historian.flush()
    table = await historian.read_raw(TAG, 0, 2**62, limit=10**7)
    return np.sort(np.asarray(table.column("ts").cast("int64").to_numpy(), dtype=np.int64))


async def test_round_trip_exactly_once_and_a_puback_is_not_an_ack(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    uplink = edge_uplink(tmp_path, UplinkMqttSection(port=mosquitto.port))
    transport = uplink.transport
    assert isinstance(transport, MqttTransport)
    await uplink.start()
    await uplink.wait_ready()
    await uplink.announce([TagMeta(TAG, unit="degC", eng_low=0, eng_high=150)])
    try:
        async with platform(tmp_path, mosquitto.port):
            pass  # the platform ran once (its session exists on the broker), then stopped
        # The platform is down: the broker PUBACKs and queues, nobody answers.
        for k in range(30):
            await uplink.send(points(k))
        await until(lambda: transport.stats().published >= 10)  # the window, then re-sends
        assert transport.stats().timeouts >= 9
        assert uplink.outbox.stats().batches == 30, "a PUBACK removed a batch"
        assert uplink.sender.stats().acked_batches == 0

        async with platform(tmp_path, mosquitto.port) as (_consumer, historian, ingestor):
            await until(lambda: uplink.outbox.stats().batches == 0)
            got = await stored(historian)
            want = want_ts(range(30))
            lost = len(np.setdiff1d(want, got))
            duplicated = len(got) - len(np.unique(got))
            assert (lost, duplicated, len(got)) == (0, 0, len(want))
            # the batches published while the platform was down waited in the broker and
            # were committed; the copies the sender re-sent (alone or coalesced with
            # others) were found in the ledger and not stored again
            assert ingestor.stats().duplicates >= 1
            assert uplink.sender.stats().acked_batches == 30

            tags = {t.path: t for t in await historian.tags()}
            assert tags[TAG].unit == "degC"
            assert tags[TAG].eng_high == 150

            answer = await uplink.put_status({"edge_time_ns": T0, "buffer": {}, "uplink": {}})
            assert answer.committed, answer
            assert isinstance((answer.body or {}).get("skew_s"), float)
            view = ingestor.edges.view(EDGE)
            assert view is not None
            assert view.status is not None
    finally:
        await uplink.close()


async def test_tls_and_credentials(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_mosquitto(tls=True, users={EDGE: "edge-secret", "platform": "plat-secret"})
    assert broker.tls is not None
    assert broker.tls_port is not None
    monkeypatch.setenv("EDGE_PW", "edge-secret")
    monkeypatch.setenv("PLATFORM_PW", "plat-secret")
    monkeypatch.setenv("WRONG_PW", "nope")
    tls = {"ca_file": broker.tls.ca_file}
    good = UplinkMqttSection(port=broker.tls_port, tls=tls, username=EDGE, password_env="EDGE_PW")
    uplink = edge_uplink(tmp_path, good)
    await uplink.start()
    await uplink.wait_ready()
    try:
        async with platform(
            tmp_path,
            broker.tls_port,
            tls=tls,
            username="platform",
            password_env="PLATFORM_PW",
        ) as (_consumer, historian, _ingestor):
            for k in range(5):
                await uplink.send(points(k))
            await until(lambda: uplink.outbox.stats().batches == 0)
            assert np.array_equal(await stored(historian), want_ts(range(5)))
    finally:
        await uplink.close()

    wrong = MqttTransport(
        good.model_copy(update={"password_env": "WRONG_PW", "client_id": "intruder"}),
        edge_id=EDGE,
        timeout_s=1.0,
    )
    try:
        body = frame(
            [StoredBatch(seq=1, points=1, appended_ns=T0, payload=encode_payload(points(0, 1)))],
            edge=EDGE,
            historical=False,
        )
        answer = await wrong.post_batch(body)
        assert answer.verdict is Verdict.UNAVAILABLE
        assert "not authori" in answer.detail.lower() or "bad user" in answer.detail.lower()
    finally:
        await wrong.close()


async def test_invalid_batch_is_quarantined_and_busy_answers_are_waited_out(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with platform(tmp_path, mosquitto.port, ingestor=BusyAtFirst) as (
        consumer,
        historian,
        _ingestor,
    ):
        uplink = edge_uplink(
            tmp_path, UplinkMqttSection(port=mosquitto.port), max_refusals=2, window=1
        )
        await uplink.start()
        await uplink.wait_ready()
        try:
            await uplink.send(points(0))
            # 1990: a clock that was never set; the platform refuses it (422)
            await uplink.send(PointBatch.from_points([(TAG, 631_152_000_000_000_000, 1.0, 0)]))
            await uplink.send(points(2))
            await until(lambda: uplink.outbox.stats().batches == 0)
        finally:
            await uplink.close()
        assert np.array_equal(await stored(historian), want_ts([0, 2]))
        (refused,) = list_quarantined(tmp_path / "outbox")
        assert (refused.seq, refused.status, refused.refusals) == (2, 422, 2)
        assert "ts" in refused.reason
        assert consumer.stats().busy == 2
        assert uplink.sender.stats().retry_later == 2


async def test_answers_published_while_the_edge_was_away_settle_its_batches(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    settings = UplinkMqttSection(port=mosquitto.port)
    body = frame(
        [StoredBatch(seq=7, points=50, appended_ns=T0, payload=encode_payload(points(7)))],
        edge=EDGE,
        historical=False,
    )
    async with platform(tmp_path, mosquitto.port):
        pass  # the platform's session exists on the broker; the platform is down now
    first = MqttTransport(settings, edge_id=EDGE, timeout_s=0.5)
    try:
        assert (await first.post_batch(body)).verdict is Verdict.UNAVAILABLE  # nobody answers
    finally:
        await first.close()  # the edge goes away; its session stays on the broker

    async with platform(tmp_path, mosquitto.port) as (consumer, historian, _ingestor):
        await until(lambda: consumer.stats().committed == 1)
        again = MqttTransport(settings, edge_id=EDGE, timeout_s=2.0)
        try:
            await again.start()
            await until(lambda: again.stats().late_answers == 1)
            answer = await again.post_batch(body)
            assert answer.committed
            assert (answer.body or {}).get("seq") == 7
            assert again.stats().early_settled == 1
            assert again.stats().published == 0, "settled without sending the batch again"
        finally:
            await again.close()
        assert np.array_equal(await stored(historian), want_ts([7]))


async def test_coalesced_backlog_is_stored_once_per_batch(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with platform(tmp_path, mosquitto.port, start=False) as (consumer, historian, _ing):
        uplink = edge_uplink(
            tmp_path,
            UplinkMqttSection(port=mosquitto.port),
            catch_up_after_s=0.0,
            coalesce_points=400,
            timeout_s=1.0,
        )
        await uplink.start()
        await uplink.wait_ready()
        try:
            for k in range(24):
                await uplink.send(points(k))
            await consumer.start()
            await until(lambda: uplink.outbox.stats().batches == 0)
        finally:
            await uplink.close()
        got = await stored(historian)
        assert np.array_equal(got, want_ts(range(24)))
        ledger = historian.ledger_stats()[ledger_stream(EDGE, uplink.outbox.outbox_id)]
        assert ledger.batches == 24
        assert consumer.stats().committed < 24, "batches travelled together"


def test_edge_file_selects_the_mqtt_transport(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text(
        '[edge]\nid = "edge-f"\n'
        '[uplink]\ntransport = "mqtt"\n'
        '[uplink.mqtt]\nhost = "broker.plant"\ntls = { ca_file = "certs/ca.pem" }\n'
        'topic_root = "plant-7/shopfloor"\n'
    )
    config = load_edge_config(tmp_path / "edge.toml")
    assert config.uplink.target == "mqtts://broker.plant:8883"
    mqtt = config.uplink.mqtt
    assert mqtt.tls is not None
    assert mqtt.tls.ca_file == tmp_path / "certs" / "ca.pem"
    assert mqtt.topic("edge-f", "batches") == "plant-7/shopfloor/edges/edge-f/batches"
    uplink = build_outbox_uplink(config)
    assert isinstance(uplink.transport, MqttTransport)
    assert uplink.transport.client_id == "shopfloor-edge-edge-f"

    (tmp_path / "bad.toml").write_text(
        '[edge]\nid = "e"\n[uplink]\ntransport = "mqtt"\n[uplink.mqtt]\ntopic_root = "a/+/b"\n'
    )
    with pytest.raises(ConfigError, match="topic_root"):
        load_edge_config(tmp_path / "bad.toml")
