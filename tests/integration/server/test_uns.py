"""The Unified Namespace through a real Mosquitto: values and alarm states as retained JSON
under their ISA-95 paths, read back by a plain MQTT subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt

from shopfloor.config.uns import UnsSection
from shopfloor.model import LiveBatch, PointBatch, Quality, TagMeta
from shopfloor.runtime.channels import Channel
from shopfloor.server.rules.engine import AlarmEngine, AlarmRule
from shopfloor.server.uns import UnsPublisher
from shopfloor.testing.mosquitto import Mosquitto

S = 10**9
TEMP = "acme/p1/press/l1/c1/press-1/oil_temp"
MODE = "acme/p1/press/l1/c1/press-1/mode"


async def metadata() -> list[TagMeta]:
    return [TagMeta(TEMP, unit="degC")]


async def retained(port: int, topics: str, want: int) -> dict[str, Any]:
    """What a new subscriber gets: the retained message of each topic."""
    got: dict[str, Any] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="reader") as client:
        await client.subscribe(topics)
        async with asyncio.timeout(15):
            async for message in client.messages:
                got[str(message.topic)] = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if len(got) >= want:
                    return got
    return got


async def test_values_and_alarm_states_are_retained_under_their_paths(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    live: Channel[LiveBatch] = Channel("live")
    engine = AlarmEngine([AlarmRule("oil.H", TEMP, "H", limit=80.0)], tmp_path / "a.sqlite")
    await engine.start()
    settings = UnsSection(port=mosquitto.port, topic_root="uns")
    publisher = UnsPublisher(
        settings, live, alarms=engine.events, alarm_tag=lambda _: TEMP, metadata=metadata
    )
    task = asyncio.create_task(publisher.run())
    try:
        deadline = time.monotonic() + 15
        while not publisher.stats.connected:
            assert time.monotonic() < deadline, "the publisher never connected"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # subscribed to the channels
        t0 = time.time_ns()
        batch = PointBatch.from_points(
            [
                (TEMP, t0 + S, 85.5, 0),
                (TEMP, t0, 70.0, 0),  # older: published first, so 85.5 stays retained
                (MODE, t0, "auto", int(Quality.UNCERTAIN)),
            ]
        )
        live.publish(LiveBatch(batch))
        live.publish(LiveBatch(PointBatch.from_points([(TEMP, t0 - S, 1.0, 0)]), historical=True))
        await engine.process(LiveBatch(batch))  # the alarm comes in
        while publisher.stats.published < 4:
            assert time.monotonic() < deadline, publisher.stats
            await asyncio.sleep(0.05)
        got = await retained(mosquitto.port, "uns/#", 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
    temp = got[f"uns/{TEMP}"]
    assert (temp["value"], temp["unit"], temp["good"], temp["ts"]) == (85.5, "degC", True, t0 + S)
    mode = got[f"uns/{MODE}"]
    assert (mode["value"], mode["good"], mode["quality"]) == ("auto", False, int(Quality.UNCERTAIN))
    assert set(got) == {
        f"uns/{TEMP}",
        f"uns/{MODE}",
        "uns/acme/p1/press/l1/c1/press-1/_alarms/oil.H",
    }, got
    alarm = got["uns/acme/p1/press/l1/c1/press-1/_alarms/oil.H"]
    assert (alarm["state"], alarm["value"]) == ("unacknowledged", 85.5)
    assert publisher.stats.published == 4  # the historical batch was not published


async def test_a_broker_outage_is_survived(tmp_path: Path, mosquitto: Mosquitto) -> None:
    live: Channel[LiveBatch] = Channel("live")
    publisher = UnsPublisher(UnsSection(port=mosquitto.port), live)
    task = asyncio.create_task(publisher.run())
    try:
        deadline = time.monotonic() + 20
        while not publisher.stats.connected:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.to_thread(mosquitto.stop)
        while publisher.stats.connected:
            live.publish(LiveBatch(PointBatch.from_points([(TEMP, time.time_ns(), 1.0, 0)])))
            assert time.monotonic() < deadline, "the outage was not noticed"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(mosquitto.start)
        while not publisher.stats.connected:
            assert time.monotonic() < deadline, "no reconnect"
            await asyncio.sleep(0.05)
        live.publish(LiveBatch(PointBatch.from_points([(TEMP, time.time_ns(), 42.0, 0)])))
        got = await retained(mosquitto.port, TEMP, 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert got[TEMP]["value"] == 42.0
    assert publisher.stats.reconnects >= 1
