"""Writes to equipment through the API of a single-box platform (``run_platform`` with a
``[[connectors]]`` Modbus section) against a real pymodbus TCP server on 127.0.0.1.

What reached the device is checked with an independent Modbus client and the server's
own request trace; what was audited through ``/api/v1/audit``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.demo import run_platform
from shopfloor.testing.auth import provision
from shopfloor.testing.clock import ManualClock
from shopfloor.testing.modbus_device import ModbusDevice as Device
from shopfloor.testing.processes import free_port

ASSET = "acme/p1/press-1"
TEMP = f"{ASSET}/temp_sp"
MODE = f"{ASSET}/mode"
RUN = f"{ASSET}/run"
LIMIT = f"{ASSET}/limit"
ADA: dict[str, str] = {}
"""The token of the admin ``ada`` of the platform under test (filled by ``platform``)."""
BOB: dict[str, str] = {}
"""The token of the admin ``bob``."""
TAGS: list[dict[str, Any]] = [
    # engineering = raw × 0.1 − 50: 21.5 °C is raw 715 (the inversion a write must undo)
    {"name": "temp_sp", "address": "hr:10", "data_type": "int16", "scale": 0.1,
     "offset": -50.0, "eng_low": -20.0, "eng_high": 120.0, "unit": "degC", "writable": True},
    {"name": "mode", "address": "hr:20", "data_type": "uint16", "writable": True,
     "states": {"0": "AUTO", "1": "MANUAL"}},
    {"name": "run", "address": "co:3", "writable": True},
    {"name": "limit", "address": "hr:30", "data_type": "uint16"},
]  # fmt: skip


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = Device(hr={10: 700, 30: 9})  # temp_sp 20.0 degC
    await dev.start()
    yield dev
    await dev.stop()


@asynccontextmanager
async def platform(
    data_dir: Path, device: Device, clock: ManualClock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The single-box platform reading ``device``; its API client."""
    port = free_port()
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": port, "data_dir": str(data_dir)},
            "historian": {"flush_interval_s": 0.05},
            "connectors": [
                {
                    "kind": "modbus",
                    "name": "press",
                    "host": "127.0.0.1",
                    "port": device.port,
                    "asset": ASSET,
                    "timeout": "1s",
                    "allow_writes": True,
                    "tags": TAGS,
                },
                {  # the same kind of tag, but its section does not allow writes
                    "kind": "modbus",
                    "name": "oven",
                    "host": "127.0.0.1",
                    "port": device.port,
                    "asset": "acme/p1/oven-1",
                    "timeout": "1s",
                    "tags": [{"name": "sp", "address": "hr:40", "writable": True}],
                },
            ],
        }
    ).resolve_paths(data_dir)
    for name, headers in (("ada", ADA), ("bob", BOB)):
        headers.clear()
        headers.update(provision(data_dir, role="admin", user=name).headers)
    stop = asyncio.Event()
    options: dict[str, Any] = {} if clock is None else {"monotonic": clock.monotonic}
    running = asyncio.create_task(run_platform(config, stop=stop, **options))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=dict(ADA)
        ) as client:
            async with asyncio.timeout(30):
                while True:
                    if running.done():
                        running.result()  # raises why it did not start
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            yield client
    finally:
        stop.set()
        await running


async def ask(
    client: httpx.AsyncClient, path: str, value: Any, headers: dict[str, str] = ADA
) -> httpx.Response:
    return await client.post("/api/v1/writes", json={"path": path, "value": value}, headers=headers)


async def confirm(
    client: httpx.AsyncClient, confirmation: str, headers: dict[str, str] = ADA
) -> httpx.Response:
    return await client.post("/api/v1/writes", json={"confirmation": confirmation}, headers=headers)


async def enable(client: httpx.AsyncClient, on: bool = True) -> None:
    answer = await client.put("/api/v1/connectors/press/writes", json={"enabled": on}, headers=ADA)
    assert answer.status_code == 200, answer.text


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


def error(answer: httpx.Response) -> tuple[int, str, str | None]:
    body = answer.json()["error"]
    return answer.status_code, body["code"], body["field"]


async def test_write_is_off_until_enabled_then_asked_confirmed_read_back_and_audited(
    tmp_path: Path, device: Device
) -> None:
    data = tmp_path / "data"
    async with platform(data, device) as client:
        refused = await ask(client, TEMP, 21.5)
        assert error(refused)[:2] == (409, "writes_disabled"), refused.text
        listed = (await client.get("/api/v1/writes")).json()
        assert listed["connectors"] == [{"connector": "press", "enabled": False, "was": None}]
        assert {t["path"] for t in listed["tags"]} == {TEMP, MODE, RUN}  # not `limit`

        switched = await client.put(
            "/api/v1/connectors/press/writes", json={"enabled": True}, headers=ADA
        )
        assert switched.json() == {"connector": "press", "enabled": True, "was": False}

        asked = await ask(client, TEMP, 21.5)
        assert asked.status_code == 200, asked.text
        ticket = asked.json()
        assert ticket["status"] == "confirm"
        assert (ticket["old"], ticket["new"], ticket["unit"]) == (20.0, 21.5, "degC")
        assert ticket["expires_in_s"] == 60
        assert device.writes == 0  # asking writes nothing
        assert await device.registers(10) == [700]

        done = await confirm(client, ticket["confirmation"])
        assert done.status_code == 200, done.text
        assert done.json() == {
            "status": "written",
            "path": TEMP,
            "connector": "press",
            "unit": "degC",
            "old": 20.0,
            "requested": 21.5,
            "new": 21.5,
        }
        assert await device.registers(10) == [715]  # (21.5 + 50) / 0.1
        assert device.writes == 1

        replay = await confirm(client, ticket["confirmation"])
        assert error(replay) == (409, "confirmation_used", "confirmation")
        assert device.writes == 1

        for path, value, expected in ((MODE, 1, "MANUAL"), (RUN, True, True)):
            asked = await ask(client, path, value)
            assert asked.json()["new"] == expected  # a state's number shows as its label
            done = await client.post(
                "/api/v1/writes",
                json={"confirmation": asked.json()["confirmation"], "value": value},
                headers=ADA,
            )  # confirmed with the value as asked
            assert done.status_code == 200, done.text
            assert done.json()["new"] == expected
        assert await device.registers(20) == [1]
        assert await device.coil(3) is True

        entries = await audit(client, action="equipment.write", target=TEMP)
        steps = [
            (e["outcome"], e["user"], e["detail"].get("step"), e["detail"].get("old"),
             e["detail"].get("new"))
            for e in entries
        ]  # fmt: skip
        assert steps == [
            ("rejected", "ada", "request", 20.0, 21.5),  # writes were off
            ("ok", "ada", "request", 20.0, 21.5),
            ("ok", "ada", "confirm", 20.0, 21.5),
            ("rejected", "ada", "confirm", None, None),  # the replay
        ]
        assert entries[0]["detail"]["error"]["code"] == "writes_disabled"
        assert entries[1]["detail"]["ref"] == entries[2]["detail"]["ref"]  # one write
        assert ticket["confirmation"] not in json.dumps(entries)  # the id itself is not kept
        switch = await audit(client, action="connector.writes")
        assert [(e["target"], e["detail"]["old"], e["detail"]["new"]) for e in switch] == [
            ("press", False, True)
        ]

    async with platform(data, device) as client:  # the switch survives a restart
        listed = (await client.get("/api/v1/writes")).json()
        assert listed["connectors"][0]["enabled"] is True
        await enable(client, on=False)
        refused = await ask(client, TEMP, 30.0)
        assert error(refused)[:2] == (409, "writes_disabled")
    assert device.writes == 3


async def test_refused_values_and_malformed_bodies_name_the_field_and_reach_nothing(
    tmp_path: Path, device: Device
) -> None:
    async with platform(tmp_path / "data", device) as client:
        await enable(client)
        cases: list[tuple[Any, tuple[int, str, str | None]]] = [
            ({"path": LIMIT, "value": 3}, (422, "invalid_parameter", "path")),  # not writable
            ({"path": f"{ASSET}/nothing", "value": 3}, (404, "unknown_tag", "path")),
            ({"path": TEMP, "value": 121.0}, (422, "invalid_parameter", "value")),  # range
            ({"path": TEMP, "value": 21.55}, (422, "invalid_parameter", "value")),  # step 0.1
            ({"path": TEMP, "value": "hot"}, (422, "invalid_parameter", "value")),
            ({"path": TEMP, "value": True}, (422, "invalid_parameter", "value")),
            ({"path": MODE, "value": "JOG"}, (422, "invalid_parameter", "value")),
            ({"path": MODE, "value": 7}, (422, "invalid_parameter", "value")),
            ({"path": RUN, "value": 2}, (422, "invalid_parameter", "value")),
            ({"path": TEMP}, (422, "invalid_parameter", "value")),
            ({"value": 3}, (422, "invalid_parameter", "path")),
            ({"path": TEMP, "value": None}, (422, "invalid_parameter", "value")),
            ({"path": TEMP, "value": [1, 2]}, (422, "invalid_parameter", "value")),
            ({"path": TEMP, "vaule": 3}, (422, "invalid_parameter", "vaule")),
            ({"path": 5, "value": 3}, (422, "invalid_parameter", "path")),
            ([TEMP, 3], (422, "invalid_parameter", "body")),
        ]
        for body, expected in cases:
            answer = await client.post("/api/v1/writes", json=body, headers=ADA)
            assert error(answer) == expected, (body, answer.text)
        json_type = {**ADA, "content-type": "application/json"}
        garbage = await client.post("/api/v1/writes", content=b"{not json", headers=json_type)
        assert garbage.status_code == 422
        nobody = await client.post(
            "/api/v1/writes", json={"path": TEMP, "value": 25.0}, headers={"Authorization": ""}
        )
        assert error(nobody) == (401, "unauthorized", "authorization")
        switch = await client.put(
            "/api/v1/connectors/press/writes", json={"enabled": "yes"}, headers=ADA
        )
        assert error(switch) == (422, "invalid_parameter", "enabled")
        for name in ("nope", "oven"):  # oven: no allow_writes in its section
            unknown = await client.put(
                f"/api/v1/connectors/{name}/writes", json={"enabled": True}, headers=ADA
            )
            assert error(unknown) == (404, "unknown_connector", "name")
            assert "allow_writes = true" in unknown.json()["error"]["message"]
        oven = await ask(client, "acme/p1/oven-1/sp", 3.0)
        assert error(oven) == (404, "unknown_tag", "path")
        assert device.writes == 0
        assert await device.registers(10) == [700]

        entries = await audit(client, action="equipment.write")
        assert len(entries) == len(cases) + 3
        assert all(e["outcome"] == "rejected" for e in entries)
        by_value = {json.dumps(e["detail"].get("new")): e for e in entries if e["target"] == TEMP}
        out_of_range = by_value["121.0"]["detail"]
        assert out_of_range["old"] == 20.0  # read from the device before it was refused
        assert out_of_range["error"]["field"] == "value"
        typo = next(e for e in entries if "vaule" in json.dumps(e["detail"]))
        assert typo["target"] == TEMP  # named from the body the route never saw


async def test_confirmation_expires_belongs_to_its_asker_and_dies_with_the_switch(
    tmp_path: Path, device: Device
) -> None:
    clock = ManualClock()
    async with platform(tmp_path / "data", device, clock) as client:
        await enable(client)

        late = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        clock.advance(61)
        assert error(await confirm(client, late)) == (
            409, "confirmation_expired", "confirmation"
        )  # fmt: skip

        theirs = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        assert error(await confirm(client, theirs, BOB)) == (
            409, "confirmation_mismatch", "confirmation"
        )  # fmt: skip

        pending = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        await enable(client, on=False)
        await enable(client, on=True)
        assert error(await confirm(client, pending))[:2] == (409, "confirmation_unknown")

        other = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        mismatch = await client.post(
            "/api/v1/writes", json={"confirmation": other, "value": 31.0}, headers=ADA
        )
        assert error(mismatch) == (409, "confirmation_mismatch", "value")

        assert device.writes == 0
        assert await device.registers(10) == [700]
        fresh = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        clock.advance(59)
        done = await confirm(client, fresh)
        assert done.json()["new"] == 30.0
        assert await device.registers(10) == [800]


async def test_a_silent_device_is_503_and_audited_as_an_error(
    tmp_path: Path, device: Device
) -> None:
    async with platform(tmp_path / "data", device) as client:
        await enable(client)
        asked = (await ask(client, TEMP, 30.0)).json()["confirmation"]
        await device.stop()
        for answer in (await confirm(client, asked), await ask(client, TEMP, 30.0)):
            assert error(answer)[:2] == (503, "device_unavailable"), answer.text
        entries = await audit(client, action="equipment.write", target=TEMP)
        assert [(e["outcome"], e["detail"]["step"]) for e in entries] == [
            ("ok", "request"),
            ("error", "confirm"),  # may or may not have reached the device
            ("error", "request"),
        ]
