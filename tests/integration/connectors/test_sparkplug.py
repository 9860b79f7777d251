"""The Sparkplug B host against a real Mosquitto, fed by the simulated plant as edge node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest

from shopfloor.edge.connectors.sparkplug import SparkplugConnector
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import DataType as TagType
from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.simulator import Plant
from shopfloor.simulator.serve.sparkplug import PlantSparkplugNode
from shopfloor.sparkplug import (
    BD_SEQ,
    REBIRTH,
    DataType,
    MessageType,
    add_metric,
    decode_payload,
    metric_value,
    new_payload,
    parse_state,
    parse_topic,
    topic_for,
)
from shopfloor.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(30)
PERIOD_NS = 1_000_000_000


class Host:
    """Runs the host connector's subscription in a task and keeps what it yields."""

    def __init__(self, connector: SparkplugConnector) -> None:
        self.connector = connector
        self.batches: list[PointBatch] = []
        self.tags: list[TagMeta] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.connector.subscribe():
                if isinstance(item, PointBatch):
                    self.batches.append(item)
                else:
                    self.tags.extend(item)
        except ConnectorUnavailable as err:
            self.error = err

    def points(self) -> list[tuple[str, int, Any, int]]:
        out = []
        for b in self.batches:
            texts = b.text.to_pylist() if b.text is not None else [None] * len(b)
            for p, ts, v, q, t in zip(b.paths(), b.ts, b.value, b.quality, texts, strict=True):
                out.append((str(p), int(ts), t if t is not None else float(v), int(q)))
        return out

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                if self.task.done():
                    raise AssertionError(f"subscription ended: {self.error!r}")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.connector.close()


class Sniffer:
    """A plain MQTT client that records every message on ``spBv1.0/#``."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, bytes, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for m in self.client.messages:
            assert isinstance(m.payload, bytes)
            self.messages.append((m.topic.value, m.payload, m.retain))

    def of(self, kind: MessageType) -> list[tuple[str, bytes, bool]]:
        return [m for m in self.messages if (t := parse_topic(m[0])) and t.message_type is kind]

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling what a task collects
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def sniffer(broker: Mosquitto, topic: str = "spBv1.0/#") -> AsyncIterator[Sniffer]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        s = Sniffer(client)
        try:
            yield s
        finally:
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.task


async def kick(broker: Mosquitto, client_id: str) -> None:
    """Take over ``client_id``'s session: the broker drops it and publishes its will."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id):
        pass


def aligned_now() -> int:
    now = time.time_ns()
    return now - now % PERIOD_NS


@contextlib.asynccontextmanager
async def plant_and_host(
    broker: Mosquitto, **host_config: Any
) -> AsyncIterator[tuple[PlantSparkplugNode, Host]]:
    node = PlantSparkplugNode(Plant.default(seed=3), port=broker.port, period_s=1.0)
    cfg = node.connector_config(name="scada").model_copy(update=host_config)
    connector = SparkplugConnector.from_config(cfg)
    await connector.connect()
    host = Host(connector)
    await node.start(refresh=False)
    try:
        await node.wait_connected()
        yield node, host
    finally:
        await node.stop()
        await host.stop()


def expected_values(node: PlantSparkplugNode, batch: PointBatch) -> dict[str, tuple[int, Any]]:
    """What the host should see for a plant batch: ints rounded, bools 0/1, ms stamps."""
    metas = {m.path: m for m in node.plant.tags()}
    out = {}
    for path, ts, raw in zip(batch.paths(), batch.ts, batch.value, strict=True):
        meta = metas[str(path)]
        value = float(raw)
        if meta.data_type is TagType.INT:
            value = float(round(value))
        elif meta.data_type is TagType.BOOL:
            value = float(bool(value))
        out[str(path)] = (int(ts) // 1_000_000 * 1_000_000, value)
    return out


async def test_births_data_and_aliases_end_to_end(mosquitto: Mosquitto) -> None:
    async with sniffer(mosquitto) as wire, plant_and_host(mosquitto) as (node, host):
        plant_tags = {m.path: m for m in node.plant.tags()}
        await host.until(lambda: len(host.points()) >= len(plant_tags))
        # every tag announced with the plant's own metadata, and its value from the births
        assert {m.path: m for m in host.connector.tags()} == plant_tags
        births = {p: (ts, v, q) for p, ts, v, q in host.points()}
        assert set(births) == set(plant_tags)
        assert all(q == Quality.GOOD for _, _, q in births.values())
        # the same seed sampled at the same time by a second plant gives the same values
        (birth_ns,) = {ts for ts, _, _ in births.values()}
        twin = Plant.default(seed=3)
        expected = expected_values(node, twin.advance(start_ns=birth_ns, steps=1))
        assert {p: (ts, v) for p, (ts, v, _) in births.items()} == expected

        t0 = aligned_now() + PERIOD_NS
        previous = {p: v for p, (_, v) in expected.items()}
        for k in range(3):
            sample = expected_values(node, await node.refresh(t0 + k * PERIOD_NS))
            stamp = t0 + k * PERIOD_NS
            changed = {p for p, (_, v) in sample.items() if v != previous[p]}
            assert changed  # the plant moves every second
            # report by exception: exactly the changed metrics arrive, with their values
            await host.until(lambda s=stamp, c=changed: len(  # type: ignore[misc]
                [p for p, ts, _, _ in host.points() if ts == s]) >= len(c))  # fmt: skip
            await asyncio.sleep(0.05)  # anything more would arrive now
            got = {p: v for p, ts, v, _ in host.points() if ts == stamp}
            assert got == {p: sample[p][1] for p in changed}
            previous = {p: v for p, (_, v) in sample.items()}

        ddata = [decode_payload(m[1]) for m in wire.of(MessageType.DDATA)]
        assert ddata
        assert all(m.HasField("alias") and not m.name for p in ddata for m in p.metrics)
        seqs = [
            decode_payload(m[1]).seq for m in wire.messages if "BIRTH" in m[0] or "DATA" in m[0]
        ]
        assert seqs == [i % 256 for i in range(len(seqs))]


async def test_sequence_gap_makes_the_host_ask_for_a_rebirth_and_recover(
    mosquitto: Mosquitto,
) -> None:
    async with sniffer(mosquitto) as wire, plant_and_host(mosquitto) as (node, host):
        n = len(node.plant.tags())
        await host.until(lambda: len(host.points()) >= n)
        t = aligned_now() + PERIOD_NS
        node.skip_seq()
        await node.refresh(t)  # arrives with a gap: ignored, rebirth requested
        await wire.until(lambda: len(wire.of(MessageType.NCMD)) >= 1)
        (ncmd,) = wire.of(MessageType.NCMD)
        assert ncmd[0] == "spBv1.0/shopfloor/NCMD/plant-sim"
        (metric,) = decode_payload(ncmd[1]).metrics
        assert metric.name == REBIRTH
        assert metric_value(metric, metric.datatype) is True
        await host.until(lambda: len(host.points()) >= 2 * n)  # the new births
        assert node.births == 2
        assert node.rebirth_requests == 1
        assert host.connector.rebirths_sent == 1
        second = await node.refresh(t + PERIOD_NS)
        expected = expected_values(node, second)
        await host.until(lambda: any(ts == max(e[0] for e in expected.values())
                                     for _, ts, _, _ in host.points()))  # fmt: skip


async def test_node_and_device_deaths_turn_their_metrics_bad_once(mosquitto: Mosquitto) -> None:
    async with plant_and_host(mosquitto) as (node, host):
        paths = [m.path for m in node.plant.tags()]
        await host.until(lambda: len(host.points()) >= len(paths))
        cnc = [e.meta.path for e in node.entries if e.device == "cnc-01"]
        await node.publish_device_death("cnc-01")
        await host.until(lambda: any(q == Quality.BAD_NOT_CONNECTED for *_, q in host.points()))
        bad = {p for p, _, _, q in host.points() if q == Quality.BAD_NOT_CONNECTED}
        assert bad == set(cnc)

        # the node's connection drops: the broker publishes its NDEATH will
        mark = len(host.points())
        await kick(mosquitto, "sparkplug-shopfloor-plant-sim")
        await host.until(
            lambda: (
                sum(q == Quality.BAD_NOT_CONNECTED for *_, q in host.points()[mark:])
                >= len(paths) - len(cnc)
            )
        )
        dead = [p for p, _, _, q in host.points()[mark:] if q == Quality.BAD_NOT_CONNECTED]
        assert sorted(dead) == sorted(set(paths) - set(cnc))  # once each; cnc-01 was dead
        # the node reconnects with a new bdSeq and is born again: everything Good
        await host.until(lambda: node.births >= 2 and len(host.points()) >= mark + 2 * len(paths)
                         - len(cnc))  # fmt: skip
        latest = {p: q for p, _, _, q in host.points()}
        assert all(latest[p] == Quality.GOOD for p in paths)


async def test_unknown_alias_and_garbage_are_logged_and_survived(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.connectors.sparkplug")
    async with (
        plant_and_host(mosquitto) as (node, host),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as rogue,
    ):
        n = len(node.plant.tags())
        await host.until(lambda: len(host.points()) >= n)
        birth = new_payload(timestamp_ms=1, seq=0)
        add_metric(birth, name=BD_SEQ, datatype=DataType.INT64, value=0)
        add_metric(birth, name="Temp", alias=1, datatype=DataType.DOUBLE, value=20.0)
        await rogue.publish(topic_for("shopfloor", MessageType.NBIRTH, "rogue"),
                            birth.SerializeToString(), qos=1)  # fmt: skip
        data = new_payload(timestamp_ms=2, seq=1)
        add_metric(data, alias=77, value=1.0)
        add_metric(data, alias=1, value=21.0)
        await rogue.publish(topic_for("shopfloor", MessageType.NDATA, "rogue"),
                            data.SerializeToString(), qos=1)  # fmt: skip
        await rogue.publish(topic_for("shopfloor", MessageType.NDATA, "rogue"), b"\xff" * 64)
        await host.until(lambda: ("shopfloor/rogue/temp", 2_000_000, 21.0, 0) in host.points())
        await host.until(lambda: "undecodable" in caplog.text)
        assert caplog.text.count("unknown alias 77") == 1
        assert not host.task.done()


async def test_state_is_retained_online_and_offline_on_close_and_as_will(
    mosquitto: Mosquitto,
) -> None:
    node = PlantSparkplugNode(Plant.default(seed=1), port=mosquitto.port)
    cfg = node.connector_config(name="scada", host_id="scada-1")
    connector = SparkplugConnector.from_config(cfg)

    async def retained_state() -> tuple[bool, int] | None:
        async with sniffer(mosquitto, "spBv1.0/STATE/+") as s:
            await s.until(lambda: bool(s.messages))
            topic, payload, retained = s.messages[0]
            assert topic == "spBv1.0/STATE/scada-1"
            assert retained
            return parse_state(payload)

    before = time.time_ns() // 1_000_000
    await connector.connect()
    online = await retained_state()
    assert online is not None
    assert online[0] is True
    assert online[1] >= before
    await connector.close()
    assert await retained_state() == (False, online[1])  # the will's timestamp

    await connector.connect()
    host = Host(connector)
    try:
        state = await retained_state()
        assert state is not None
        assert state[0] is True
        await kick(mosquitto, cfg.mqtt_client_id)  # the connection drops: the will
        assert await retained_state() == (False, state[1])
        async with asyncio.timeout(10):
            await host.task
        assert isinstance(host.error, ConnectorUnavailable)
    finally:
        await host.stop()


def test_connector_config_reads_the_plant_back_under_its_own_paths() -> None:
    plant = Plant.default(seed=1)
    node = PlantSparkplugNode(plant, port=1)
    cfg = node.connector_config(name="sp")
    connector = SparkplugConnector.from_config(cfg)
    assert list(connector.tags()) == plant.tags()
    assert cfg.devices["shopfloor/plant-sim/cnc-01"] == plant.layout.equipment_path(
        plant.layout.machine("cnc-01")
    )
    assert type(cfg).model_validate(cfg.model_dump()) == cfg  # it survives a config file
