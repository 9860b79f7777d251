"""The platform's commands to a remote edge over a real Mosquitto: read and write a tag
of a real pymodbus device through the edge's MQTT uplink, with the edge's own locks
(``allow_writes``, ``writable``), expiry and redelivery refused.

The test plays the platform with a plain MQTT client on the documented topics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from shopfloor.config import ShopfloorConfig
from shopfloor.config.connectors.modbus import ModbusConnectorConfig
from shopfloor.config.edge import UplinkMqttSection
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.commands import CommandHandler, writables
from shopfloor.edge.connectors.registry import create_connector
from shopfloor.edge.uplink.mqtt import MqttTransport
from shopfloor.edge.writes import EquipmentWriter
from shopfloor.model import PointBatch, TagMeta, now_ns
from shopfloor.server.app import Server
from shopfloor.testing.auth import provision
from shopfloor.testing.modbus_device import ModbusDevice
from shopfloor.testing.mosquitto import Mosquitto
from shopfloor.testing.serving import serving

EDGE = "edge-w"
ROOT = "shopfloor/v1"
SP = "acme/p1/press-1/sp"
OVEN = "acme/p1/oven-1/sp"
ADA: dict[str, str] = {}
"""The token of the admin ``ada`` of the platform under test (filled before it starts)."""


class NullUplink:
    """Where the agent's points go: nowhere (this test is about commands)."""

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        pass

    async def send(self, batch: PointBatch) -> None:
        pass


def connector(device: ModbusDevice, name: str, asset: str, *, allow: bool) -> Any:
    return create_connector(
        ModbusConnectorConfig.model_validate(
            {
                "name": name,
                "host": "127.0.0.1",
                "port": device.port,
                "asset": asset,
                "timeout": "1s",
                "period": "1h",  # the polls stay out of the way
                "allow_writes": allow,
                "tags": [
                    {"name": "sp", "address": "hr:10", "data_type": "int16", "scale": 0.5,
                     "writable": True},
                    {"name": "limit", "address": "hr:11", "data_type": "uint16"},
                ],
            }
        )
    )  # fmt: skip


@asynccontextmanager
async def edge(device: ModbusDevice, broker: Mosquitto) -> AsyncIterator[MqttTransport]:
    agent = EdgeAgent(
        [
            connector(device, "press", "acme/p1/press-1", allow=True),
            connector(device, "oven", "acme/p1/oven-1", allow=False),
        ],
        NullUplink(),
    )
    transport = MqttTransport(
        UplinkMqttSection(port=broker.port, reconnect_max="500ms"), edge_id=EDGE, timeout_s=5
    )
    writer = EquipmentWriter(agent)
    transport.serve_commands(CommandHandler(writer).handle, writables=writables(writer))
    await agent.start()
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()
        await agent.stop()


async def send(platform: aiomqtt.Client, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    """Publish a command as the platform would; the edge's result for its id."""
    await platform.publish(f"{ROOT}/cmd/{EDGE}/{verb}", json.dumps(body).encode(), qos=1)
    async with asyncio.timeout(20):
        async for message in platform.messages:
            assert isinstance(message.payload, bytes)
            doc: dict[str, Any] = json.loads(message.payload)
            if doc.get("id") == body.get("id"):
                return doc
    raise AssertionError("no result")


async def until_answered(
    platform: aiomqtt.Client, verb: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            try:
                async with asyncio.timeout(0.5):
                    return await send(platform, verb, body)
            except TimeoutError:
                continue


async def test_the_platform_reads_and_writes_through_the_edge_within_its_locks(
    mosquitto: Mosquitto,
) -> None:
    device = ModbusDevice(hr={10: 40})  # sp = 20.0
    await device.start()
    try:
        async with (
            edge(device, mosquitto),
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="platform") as platform,
        ):
            await platform.subscribe(f"{ROOT}/edges/{EDGE}/results", qos=1)

            async def command(verb: str, **body: Any) -> dict[str, Any]:
                return await send(platform, verb, body)

            # the edge subscribes once it is connected: repeat the first read until it answers
            first = await until_answered(platform, "read", {"id": "r0", "path": SP, "value": 25.5})
            assert first == {"id": "r0", "verb": "read", "ok": True, "old": 20.0, "new": 25.5}

            soon = now_ns() + 60 * 10**9
            done = await command("write", id="w1", path=SP, value=25.5, expires_ns=soon)
            assert done == {
                "id": "w1",
                "verb": "write",
                "ok": True,
                "old": 20.0,
                "requested": 25.5,
                "new": 25.5,
            }
            assert await device.registers(10) == [51]
            writes = device.writes

            again = await command("write", id="w1", path=SP, value=25.5, expires_ns=soon)
            assert again["error"]["code"] == "duplicate"
            late = await command("write", id="w2", path=SP, value=30.0, expires_ns=now_ns() - 1)
            assert late["error"]["code"] == "command_expired"
            locked = await command("write", id="w3", path=OVEN, value=30.0, expires_ns=soon)
            assert (locked["error"]["code"], locked["error"]["field"]) == (
                "invalid_parameter",
                "path",
            )  # the oven's section has no allow_writes
            read_only = await command("write", id="w4", path="acme/p1/press-1/limit",
                                      value=1, expires_ns=soon)  # fmt: skip
            assert "read-only" in read_only["error"]["message"]
            odd = await command("write", id="w5", path=SP, value=25.25, expires_ns=soon)
            assert (odd["error"]["code"], odd["error"]["field"]) == ("invalid_parameter", "value")
            unknown = await command("reboot", id="x1", path=SP)
            assert unknown["error"]["code"] == "invalid_command"
            assert device.writes == writes  # nothing refused reached the device
            assert await device.registers(10) == [51]

            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as reader:
                await reader.subscribe(f"{ROOT}/edges/{EDGE}/writables", qos=1)
                async with asyncio.timeout(10):
                    retained = await anext(aiter(reader.messages))
            assert isinstance(retained.payload, bytes)
            offered = json.loads(retained.payload)
            assert offered["connectors"] == ["press"]  # not the oven
            assert [t["path"] for t in offered["tags"]] == [SP]  # not the read-only limit
    finally:
        await device.stop()


async def test_a_write_through_the_platform_api_reaches_a_remote_edge_device(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    device = ModbusDevice(hr={10: 40})
    await device.start()
    data = tmp_path / "platform"
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data)},
            "historian": {"flush_interval_s": 0.05},
            "ingest": {"mqtt": {"enabled": True, "port": mosquitto.port, "commands": True}},
        }
    ).resolve_paths(data)
    ADA.clear()
    ADA.update(provision(data, role="admin", user="ada").headers)
    async with serving(Server(config)) as server:
        async with (
            edge(device, mosquitto),
            httpx.AsyncClient(base_url=server.url, timeout=30, headers=dict(ADA)) as client,
        ):
            async with asyncio.timeout(20):  # the edge's announcement arrives
                while not (await client.get("/api/v1/writes")).json()["connectors"]:  # noqa: ASYNC110 - polling the API
                    await asyncio.sleep(0.05)
            listed = (await client.get("/api/v1/writes")).json()
            assert listed["connectors"] == [
                {"connector": f"{EDGE}:press", "enabled": False, "was": None}
            ]
            refused = await client.post(
                "/api/v1/writes", json={"path": SP, "value": 22.5}, headers=ADA
            )
            assert refused.json()["error"]["code"] == "writes_disabled"
            switched = await client.put(
                f"/api/v1/connectors/{EDGE}:press/writes", json={"enabled": True}, headers=ADA
            )
            assert switched.status_code == 200, switched.text
            asked = await client.post(
                "/api/v1/writes", json={"path": SP, "value": 22.5}, headers=ADA
            )
            assert asked.status_code == 200, asked.text
            assert (asked.json()["old"], asked.json()["new"]) == (20.0, 22.5)
            done = await client.post(
                "/api/v1/writes", json={"confirmation": asked.json()["confirmation"]}, headers=ADA
            )
            assert done.status_code == 200, done.text
            assert (done.json()["old"], done.json()["new"]) == (20.0, 22.5)
            assert await device.registers(10) == [45]
            odd = await client.post("/api/v1/writes", json={"path": SP, "value": 22.7}, headers=ADA)
            asked_odd = await client.post(
                "/api/v1/writes", json={"confirmation": odd.json()["confirmation"]}, headers=ADA
            )  # the platform cannot know the register's resolution; the edge refuses it
            assert asked_odd.status_code == 422
            assert asked_odd.json()["error"]["field"] == "value"
            assert await device.registers(10) == [45]
        await device.stop()
