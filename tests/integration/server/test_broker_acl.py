"""The broker files of ``shopfloor broker config`` on a real Mosquitto: anonymous clients
are refused, an edge publishes only on its own topics and reads only its own answers,
only the platform answers, and an edge's batches still reach the historian end to end
through the platform's MQTT ingest (also as a shared subscription member)."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiomqtt
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.broker import BrokerFiles, BrokerPlan, edge_user, write_broker_files
from shopfloor.config.edge import UplinkMqttSection
from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.edge.buffer import DurableOutbox, SegmentLog
from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import Quarantine
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.framing import frame
from shopfloor.edge.uplink.http import Verdict
from shopfloor.edge.uplink.mqtt import MqttTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.model import LiveBatch, PointBatch, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.ingest.mqtt import MqttIngest
from shopfloor.testing.mosquitto import Mosquitto

ROOT = "shopfloor/v1"
SERVER = "shopfloor-platform"
T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/temp"
NOT_AUTHORIZED = 0x87


@pytest.fixture
def files(tmp_path: Path) -> BrokerFiles:
    return write_broker_files(tmp_path / "broker", BrokerPlan(edges=["a", "b"]))


@pytest.fixture
def broker(files: BrokerFiles, make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    return make_mosquitto(extra_config=files.conf.read_text().splitlines())


def password(files: BrokerFiles, user: str) -> str:
    return files.credentials[user].read_text().strip()


class Peer:
    """A plain MQTT 5 client that records PUBACK reason codes and received messages."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self.received: queue.Queue[str] = queue.Queue()
        self.pubacks: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()

    def publish(self, topic: str) -> int:
        """Publish with QoS 1 and return the broker's PUBACK reason code."""
        self.client.publish(topic, topic.encode(), qos=1)
        return self.pubacks.get(timeout=10)

    def subscribe(self, *topics: str) -> list[int]:
        self.client.subscribe([(t, 1) for t in topics])
        return self.subacks.get(timeout=10)


@contextmanager
def peer(broker: Mosquitto, user: str, secret: str, client_id: str) -> Iterator[Peer]:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    client.username_pw_set(user, secret)
    p = Peer(client)
    connected: queue.Queue[ReasonCode] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    client.on_message = lambda _c, _u, msg: p.received.put(msg.topic)
    client.on_publish = lambda _c, _u, _mid, rc, _p: p.pubacks.put(rc.value)
    client.on_subscribe = lambda _c, _u, _mid, rcs, _p: p.subacks.put([r.value for r in rcs])
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert not connected.get(timeout=10).is_failure
        yield p
    finally:
        client.disconnect()
        client.loop_stop()


async def test_anonymous_and_unknown_clients_are_refused(
    broker: Mosquitto, files: BrokerFiles
) -> None:
    for username, secret in [(None, None), (edge_user("a"), "guessed"), ("nobody", "x")]:
        with pytest.raises(aiomqtt.MqttError) as refused:
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                username=username,
                password=secret,
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=5,
            ):
                pass
        assert "authori" in str(refused.value).lower() or "bad user" in str(refused.value).lower()
    # the credential the files made does get in
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=edge_user("a"),
        password=password(files, edge_user("a")),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    ):
        pass


def test_an_edge_publishes_only_its_own_topics_and_only_the_platform_answers(
    broker: Mosquitto, files: BrokerFiles
) -> None:
    a, b = edge_user("a"), edge_user("b")
    with (
        peer(broker, SERVER, password(files, SERVER), "platform") as server,
        peer(broker, a, password(files, a), "edge-a") as edge_a,
        peer(broker, b, password(files, b), "edge-b") as edge_b,
    ):
        server.subscribe(*(f"{ROOT}/edges/+/{k}" for k in ("batches", "tags", "status")))
        edge_a.subscribe(f"{ROOT}/edges/a/acks", f"{ROOT}/edges/b/acks")
        edge_b.subscribe(f"{ROOT}/edges/b/acks")

        # edge a on b's topics, and forging answers (its own or b's): refused
        for kind in ("batches", "tags", "status"):
            assert edge_a.publish(f"{ROOT}/edges/b/{kind}") == NOT_AUTHORIZED
        for edge in ("a", "b"):
            assert edge_a.publish(f"{ROOT}/edges/{edge}/acks") == NOT_AUTHORIZED
        assert edge_a.publish("anything/else") == NOT_AUTHORIZED
        # its own: accepted, and the first thing the platform receives (same connection,
        # so a denied message delivered anyway would have arrived before it)
        assert edge_a.publish(f"{ROOT}/edges/a/batches") == 0
        assert server.received.get(timeout=10) == f"{ROOT}/edges/a/batches"

        # only the platform answers; a reads its own answers, never b's
        assert server.publish(f"{ROOT}/edges/b/acks") == 0
        assert server.publish(f"{ROOT}/edges/a/acks") == 0
        assert edge_b.received.get(timeout=10) == f"{ROOT}/edges/b/acks"
        assert edge_a.received.get(timeout=10) == f"{ROOT}/edges/a/acks"
        # b's answer went out before a's on the same connection; a never got it
        assert edge_a.received.empty()
        assert server.received.empty()


def test_only_the_platform_commands_equipment_and_each_edge_hears_only_its_own(
    broker: Mosquitto, files: BrokerFiles
) -> None:
    """Writes to equipment (docs/writes.md): commands under ``{root}/cmd/`` come from the
    platform alone; an edge reads its own, answers on its own ``results`` and announces its
    own ``writables``."""
    a, b = edge_user("a"), edge_user("b")
    with (
        peer(broker, SERVER, password(files, SERVER), "platform") as server,
        peer(broker, a, password(files, a), "edge-a") as edge_a,
        peer(broker, b, password(files, b), "edge-b") as edge_b,
    ):
        server.subscribe(f"{ROOT}/edges/+/results", f"{ROOT}/edges/+/writables")
        edge_a.subscribe(f"{ROOT}/cmd/a/#", f"{ROOT}/cmd/b/#")
        for topic in (f"{ROOT}/cmd/b/write", f"{ROOT}/cmd/a/write"):
            assert edge_a.publish(topic) == NOT_AUTHORIZED
            assert edge_b.publish(topic) == NOT_AUTHORIZED
        for kind in ("results", "writables"):
            assert edge_a.publish(f"{ROOT}/edges/b/{kind}") == NOT_AUTHORIZED
        assert server.publish(f"{ROOT}/cmd/b/write") == 0
        assert server.publish(f"{ROOT}/cmd/a/write") == 0
        assert edge_a.received.get(timeout=10) == f"{ROOT}/cmd/a/write"
        assert edge_a.received.empty()  # b's command went first and never reached a
        assert edge_a.publish(f"{ROOT}/edges/a/results") == 0
        assert edge_a.publish(f"{ROOT}/edges/a/writables") == 0
        assert server.received.get(timeout=10) == f"{ROOT}/edges/a/results"
        assert server.received.get(timeout=10) == f"{ROOT}/edges/a/writables"
        assert server.received.empty()


def _points(k: int) -> PointBatch:
    return PointBatch.from_points([(TAG, T0 + k * 1000 + i, float(k), 0) for i in range(20)])


@pytest.mark.parametrize("shared_group", ["", "ingest"])
async def test_an_edge_batch_is_stored_end_to_end_with_the_generated_credentials(
    tmp_path: Path, broker: Mosquitto, files: BrokerFiles, shared_group: str
) -> None:
    historian = DuckDBHistorian(tmp_path / "history.duckdb", flush_interval_s=0.05)
    await historian.start()
    live: Channel[LiveBatch] = Channel("live", maxsize=64)
    ingestor = Ingestor(historian, live)
    consumer = MqttIngest(
        ingestor,
        MqttIngestSection(
            enabled=True,
            port=broker.port,
            username=SERVER,
            password_file=files.credentials[SERVER],
            shared_group=shared_group,
            reconnect_max="500ms",
        ),
        register_tags=historian.register_tags,
    )
    settings = UplinkMqttSection(
        port=broker.port, username=edge_user("a"), password_file=files.credentials[edge_user("a")]
    )
    outbox = DurableOutbox(SegmentLog(tmp_path / "outbox"), max_bytes=1 << 30)
    uplink = OutboxUplink(
        outbox,
        MqttTransport(settings, edge_id="a", timeout_s=5.0),
        edge_id="a",
        quarantine=Quarantine(tmp_path / "outbox" / "quarantine"),
        options=SenderOptions(retry=(0.05, 0.5)),
    )
    await consumer.start()
    try:
        assert await consumer.wait_connected(10), consumer.stats()
        await uplink.start()
        await uplink.wait_ready()
        for k in range(3):
            await uplink.send(_points(k))
        async with asyncio.timeout(20):
            while outbox.stats().batches:  # noqa: ASYNC110 - polling observable state
                await asyncio.sleep(0.02)
        await historian.flush()
        table = await historian.read_raw(TAG, 0, 2**62, limit=1000)
        got = np.sort(table.column("ts").cast("int64").to_numpy())
        want = np.sort(np.concatenate([T0 + k * 1000 + np.arange(20) for k in range(3)]))
        assert np.array_equal(got, want)
        assert uplink.sender.stats().acked_batches == 3
    finally:
        await uplink.close()
        await consumer.stop()
        await historian.close()


async def test_an_edge_the_acl_refuses_is_told_so_at_once(
    broker: Mosquitto, files: BrokerFiles
) -> None:
    """Edge b's configuration with edge a's credential (a copy-paste slip): the broker
    refuses every batch, and the edge says so instead of waiting for an answer that
    cannot come (without this it would say "no answer from the platform" after 30 s)."""
    settings = UplinkMqttSection(
        port=broker.port,
        username=edge_user("a"),
        password_file=files.credentials[edge_user("a")],
        client_id="slip",
    )
    transport = MqttTransport(settings, edge_id="b", timeout_s=30.0)
    body = frame(
        [StoredBatch(seq=1, points=20, appended_ns=T0, payload=encode_payload(_points(0)))],
        edge="b",
        historical=False,
    )
    try:
        answer = await transport.post_batch(body)
        tags = await transport.put_tags([TagMeta(TAG, unit="degC")])
        status = await transport.put_status({"edge_time_ns": T0, "buffer": {}, "uplink": {}})
    finally:
        await transport.close()
    assert answer.verdict is Verdict.UNAVAILABLE
    assert "the broker refused batch 1 (Not authorized)" in answer.detail
    assert tags.verdict is Verdict.UNAVAILABLE
    assert "the broker refused the tags (Not authorized)" in tags.detail
    assert status.verdict is Verdict.UNAVAILABLE
    assert "the broker refused the status report (Not authorized)" in status.detail
    stats = transport.stats()
    assert stats.refused >= 1
    assert stats.published == 0


def test_the_platform_may_publish_its_namespace_and_be_a_sparkplug_node_edges_may_not(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    files = write_broker_files(
        tmp_path / "broker-uns",
        BrokerPlan(edges=["a"], uns_root="uns/v1", sparkplug_node="acme/plant-1"),
    )
    broker = make_mosquitto(extra_config=files.conf.read_text().splitlines())
    a = edge_user("a")
    with (
        peer(broker, SERVER, password(files, SERVER), "platform") as server,
        peer(broker, a, password(files, a), "edge-a") as edge_a,
    ):
        for topic in (
            "uns/v1/acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp",
            "spBv1.0/acme/NBIRTH/plant-1",
            "spBv1.0/acme/DDATA/plant-1/cnc-01",
        ):
            assert server.publish(topic) < 0x80, topic  # 0 or 0x10 "no matching subscribers"
            assert edge_a.publish(topic) == NOT_AUTHORIZED, topic
        # only its own node: not another node's births, not commands to hosts
        assert server.publish("spBv1.0/acme/NBIRTH/plant-2") == NOT_AUTHORIZED
        assert server.publish("spBv1.0/acme/NCMD/plant-1") == NOT_AUTHORIZED
