"""The simulated plant as a Sparkplug B edge node, observed on the wire of a real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest

from shopfloor.simulator import Plant
from shopfloor.simulator.serve.sparkplug import PlantSparkplugNode, serve_plant
from shopfloor.sparkplug import (
    BD_SEQ,
    REBIRTH,
    DataType,
    MessageType,
    add_metric,
    decode_payload,
    metric_value,
    new_payload,
    parse_topic,
    property_values,
    topic_for,
)
from shopfloor.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(30)


class Wire:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[MessageType, str | None, Any]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for m in self.client.messages:
            topic = parse_topic(m.topic.value)
            assert topic is not None
            assert isinstance(m.payload, bytes)
            if topic.message_type in (MessageType.NCMD, MessageType.STATE):
                continue  # only what the node says
            self.messages.append((topic.message_type, topic.device, decode_payload(m.payload)))

    def of(self, kind: MessageType) -> list[tuple[str | None, Any]]:
        return [(d, p) for k, d, p in self.messages if k is kind]

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling what a task collects
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def wire(broker: Mosquitto) -> AsyncIterator[Wire]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("spBv1.0/#", qos=1)
        w = Wire(client)
        try:
            yield w
        finally:
            w.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.task


def named(payload: Any) -> dict[str, Any]:
    return {m.name: m for m in payload.metrics}


async def test_births_carry_every_tag_with_alias_type_and_properties(mosquitto: Mosquitto) -> None:
    plant = Plant.default(seed=2)
    async with wire(mosquitto) as w:
        node, config = await serve_plant(
            plant, port=mosquitto.port, period_s=0.2, primary_host_id=None
        )
        try:
            machines = [m.id for m in plant.layout.machines]
            await w.until(lambda: len(w.of(MessageType.DBIRTH)) >= len(machines))
            ((_, nbirth),) = w.of(MessageType.NBIRTH)
            assert nbirth.seq == 0
            assert metric_value(named(nbirth)[BD_SEQ], DataType.INT64) == 0
            assert metric_value(named(nbirth)[REBIRTH], DataType.BOOLEAN) is False
            dbirths = dict(w.of(MessageType.DBIRTH))
            assert list(dbirths) == machines
            aliases = [m.alias for p in dbirths.values() for m in p.metrics]
            assert len(aliases) == len(set(aliases)) == len(plant.tags())
            by_path = {m.path: m for m in plant.tags()}
            for machine in plant.layout.machines:
                prefix = plant.layout.equipment_path(machine)
                metrics = named(dbirths[machine.id])
                assert {f"{prefix}/{n}" for n in metrics} == {
                    p for p in by_path if p.startswith(prefix + "/")
                }
                for name, metric in metrics.items():
                    meta = by_path[f"{prefix}/{name}"]
                    props = property_values(metric.properties)
                    assert props.get("engUnit", "") == meta.unit
                    assert props.get("engHigh") == meta.eng_high
                    assert props.get("Documentation", "") == meta.description
            # then data by exception, on a real schedule
            await w.until(lambda: len(w.of(MessageType.DDATA)) >= 3)
            assert config.port == mosquitto.port
            assert config.groups == ["shopfloor"]
        finally:
            await node.stop()
        await w.until(lambda: len(w.of(MessageType.NDEATH)) == 1)
        ((_, ndeath),) = w.of(MessageType.NDEATH)
        assert metric_value(named(ndeath)[BD_SEQ], DataType.INT64) == 0


async def test_rebirth_command_and_reconnect_with_a_new_bdseq(mosquitto: Mosquitto) -> None:
    node = PlantSparkplugNode(Plant.default(seed=2), port=mosquitto.port)
    async with wire(mosquitto) as w, aiomqtt.Client(mosquitto.host, mosquitto.port) as host:
        await node.start(refresh=False)
        try:
            await node.wait_connected()
            await w.until(lambda: len(w.of(MessageType.NBIRTH)) == 1)
            command = new_payload(timestamp_ms=1)
            add_metric(command, name=REBIRTH, datatype=DataType.BOOLEAN, value=True)
            ncmd = topic_for("shopfloor", MessageType.NCMD, "plant-sim")
            await host.publish(ncmd, b"\x00garbage\xff")  # ignored
            await host.publish(ncmd, command.SerializeToString())
            await w.until(lambda: len(w.of(MessageType.NBIRTH)) == 2)
            second = w.of(MessageType.NBIRTH)[1][1]
            assert second.seq == 0
            assert metric_value(named(second)[BD_SEQ], DataType.INT64) == 0

            # the connection drops: the broker sends the will, the node comes back bdSeq 1
            async with aiomqtt.Client(mosquitto.host, mosquitto.port,
                                      identifier="sparkplug-shopfloor-plant-sim"):  # fmt: skip
                pass
            # a session taken over mid-write can leave paho hung until its keep-alive
            # notices (seen under load): allow for that detection
            await w.until(lambda: len(w.of(MessageType.NBIRTH)) == 3, timeout_s=40)
            ((_, will),) = w.of(MessageType.NDEATH)
            assert metric_value(named(will)[BD_SEQ], DataType.INT64) == 0
            third = w.of(MessageType.NBIRTH)[2][1]
            assert metric_value(named(third)[BD_SEQ], DataType.INT64) == 1
            seqs = [p.seq for k, _, p in w.messages if k is not MessageType.NDEATH]
            restarts = [i for i, s in enumerate(seqs) if s == 0]
            for a, b in zip(restarts, [*restarts[1:], len(seqs)], strict=True):
                assert seqs[a:b] == list(range(b - a))  # 0, 1, 2 … after every birth
        finally:
            await node.stop()


async def test_with_a_primary_host_births_wait_for_its_state(mosquitto: Mosquitto) -> None:
    async with wire(mosquitto) as w, aiomqtt.Client(mosquitto.host, mosquitto.port) as host:
        node, config = await serve_plant(Plant.default(seed=2), port=mosquitto.port)
        try:
            assert config.state_host_id == "shopfloor"
            await asyncio.sleep(0.5)
            assert w.of(MessageType.NBIRTH) == []  # the host is not online yet
            state = "spBv1.0/STATE/shopfloor"
            await host.publish(state, b'{"online": true, "timestamp": 1}', qos=1, retain=True)
            await w.until(lambda: len(w.of(MessageType.NBIRTH)) == 1)
            await w.until(lambda: len(w.of(MessageType.DDATA)) >= 1)
            await host.publish(state, b'{"online": false, "timestamp": 1}', qos=1, retain=True)
            await host.publish(state, b'{"online": true, "timestamp": 2}', qos=1, retain=True)
            await w.until(lambda: len(w.of(MessageType.NBIRTH)) == 2)  # a new host session
        finally:
            await node.stop()
