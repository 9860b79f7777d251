"""The platform as a Sparkplug B edge node through a real Mosquitto, read back by a plain
MQTT subscriber that decodes every message with the Sparkplug codec."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiomqtt

from shopfloor.config.sparkplug_node import SparkplugNodeSection
from shopfloor.model import DataType, LiveBatch, PointBatch, Quality, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.server.sparkplug_node import PlatformSparkplugNode, device_ids
from shopfloor.sparkplug import (
    REBIRTH,
    MessageType,
    add_metric,
    decode_payload,
    metric_value,
    new_payload,
    parse_topic,
    property_values,
    topic_for,
)
from shopfloor.sparkplug import DataType as SpType
from shopfloor.testing.mosquitto import Mosquitto

S = 10**9
CNC = "acme/p1/machining/line-1/cell-1/cnc-01"
TEMP, STATE = f"{CNC}/spindle_temp", f"{CNC}/state"
METAS = [
    TagMeta(TEMP, unit="degC", description="Spindle", eng_low=0.0, eng_high=120.0),
    TagMeta(STATE, data_type=DataType.INT),
]


async def metadata() -> list[TagMeta]:
    return METAS


def test_devices_are_equipment_names_unless_two_share_one() -> None:
    ids = device_ids(["acme/p1/a/l1/c1/pump", "acme/p1/b/l2/c1/pump", "acme/p1/a/l1/c1/fan"])
    assert ids == {
        "acme/p1/a/l1/c1/pump": "a.l1.c1.pump",
        "acme/p1/b/l2/c1/pump": "b.l2.c1.pump",
        "acme/p1/a/l1/c1/fan": "fan",
    }


async def until(messages: list[tuple[Any, Any]], kind: MessageType, count: int = 1) -> None:
    deadline = time.monotonic() + 15
    while sum(1 for t, _ in messages if t.message_type is kind) < count:
        assert time.monotonic() < deadline, [t.message_type for t, _ in messages]
        await asyncio.sleep(0.05)


async def test_births_data_rebirth_and_death(mosquitto: Mosquitto) -> None:
    live: Channel[LiveBatch] = Channel("live")
    settings = SparkplugNodeSection(port=mosquitto.port, group_id="acme", node_id="p1")
    node = PlatformSparkplugNode(settings, live, metadata)
    messages: list[tuple[Any, Any]] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="host") as host:
        await host.subscribe("spBv1.0/acme/#")

        async def read() -> None:
            async for message in host.messages:
                topic = parse_topic(str(message.topic))
                messages.append((topic, decode_payload(bytes(message.payload))))  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        task = asyncio.create_task(node.run())
        try:
            await until(messages, MessageType.DBIRTH)
            (birth,) = [p for t, p in messages if t.message_type is MessageType.DBIRTH]
            assert [t.device for t, _ in messages if t.message_type is MessageType.DBIRTH] == [
                "cnc-01"
            ]
            born = {m.name: m for m in birth.metrics}
            assert set(born) == {"spindle_temp", "state"}
            props = property_values(born["spindle_temp"].properties)
            assert (props["engUnit"], props["engHigh"]) == ("degC", 120.0)
            assert born["state"].datatype == SpType.INT64

            t0 = time.time_ns()
            live.publish(
                LiveBatch(
                    PointBatch.from_points(
                        [(TEMP, t0 + S, 61.5, 0), (TEMP, t0, 60.0, 0), (STATE, t0, 1.0, 0)]
                    )
                )
            )
            live.publish(
                LiveBatch(PointBatch.from_points([(TEMP, t0 - S, 1.0, 0)]), historical=True)
            )
            await until(messages, MessageType.DDATA)
            (data,) = [p for t, p in messages if t.message_type is MessageType.DDATA]
            by_alias = {m.alias: m for m in data.metrics}
            temp = by_alias[born["spindle_temp"].alias]
            assert metric_value(temp, SpType.DOUBLE) == 61.5  # the newest point
            assert temp.timestamp == (t0 + S) // 10**6
            # a Bad point goes out with the Quality property 0 (bad); unchanged ones not at all
            live.publish(
                LiveBatch(PointBatch.from_points([(STATE, t0 + 2 * S, 1.0, int(Quality.BAD))]))
            )
            await until(messages, MessageType.DDATA, 2)
            (bad,) = [p for t, p in messages if t.message_type is MessageType.DDATA][1].metrics
            assert property_values(bad.properties)["Quality"] == 0

            command = new_payload(timestamp_ms=t0 // 10**6)
            add_metric(command, name=REBIRTH, datatype=SpType.BOOLEAN, value=True)
            await host.publish(
                topic_for("acme", MessageType.NCMD, "p1"), command.SerializeToString()
            )
            await until(messages, MessageType.NBIRTH, 2)
            assert node.rebirth_requests == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await until(messages, MessageType.NDEATH)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
