"""The simulated plant served over Modbus TCP, read back through the Modbus connector."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.sampling import Sampler
from shopfloor.model import PointBatch, is_good
from shopfloor.simulator import Plant
from shopfloor.simulator.serve.modbus import PlantModbusServer, register_map, serve_plant

T0 = 1_790_000_000 * 10**9  # a whole second, UTC ns


@pytest.fixture
async def served() -> AsyncIterator[PlantModbusServer]:
    server = PlantModbusServer(Plant.default(seed=3), period_s=1.0)
    await server.start(refresh=False)
    yield server
    await server.stop()


async def read_all(server: PlantModbusServer) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for config in server.connector_configs(timeout="2s"):
        connector = ModbusConnector.from_config(config)
        await connector.connect()
        try:
            (group,) = connector.groups()
            batch = Sampler(connector.specs()).process(await connector.read(group))
        finally:
            await connector.close()
        for path, v, q in zip(batch.paths(), batch.value, batch.quality, strict=True):
            out[str(path)] = (float(v), int(q))
    return out


def expected_from_twin(calls: list[int]) -> PointBatch:
    """The same plant (same seed), advanced by the same calls, without any server."""
    twin = Plant.default(seed=3)
    batch = PointBatch.empty()
    for t in calls:
        batch = twin.advance(start_ns=t, steps=1, period_ns=10**9)
    return batch


async def test_values_read_through_modbus_match_the_plant(served: PlantModbusServer) -> None:
    start_ts = served.last_ts_ns
    assert start_ts is not None
    t = start_ts + 3600 * 10**9  # an hour later: counters and energy have moved on
    served.refresh(t)
    got = await read_all(served)
    plant = expected_from_twin([start_ts, t])
    metas = {m.path: m for m in Plant.default(seed=3).tags()}
    assert set(got) == set(metas)
    assert all(q == 0 for _, q in got.values())
    checked = {"float": 0, "int": 0, "bool": 0}
    for path, v in zip(plant.paths(), plant.value, strict=True):
        meta = metas[str(path)]
        value, _ = got[str(path)]
        if meta.data_type == "float":
            expected = struct.unpack(">f", struct.pack(">f", v))[0]
        else:
            expected = float(round(v))
        assert value == expected, path
        checked[str(meta.data_type)] += 1
    assert checked["float"] > 40
    assert checked["int"] > 20
    assert checked["bool"] == 2


async def test_connector_configs_describe_the_plant(served: PlantModbusServer) -> None:
    configs = served.connector_configs()
    assert len(configs) == 10
    tags = [m for c in configs for m in ModbusConnector.from_config(c).tags()]
    plant_tags = Plant.default(seed=3).tags()
    assert [t.path for t in tags] == [t.path for t in plant_tags]
    assert [t.data_type for t in tags] == [t.data_type for t in plant_tags]
    assert [t.states for t in tags] == [t.states for t in plant_tags]
    entries = register_map(Plant.default(seed=3))
    cnc = [e for e in entries if e.machine == "cnc-01"]
    assert (cnc[0].unit_id, cnc[0].address, cnc[0].data_type) == (1, "hr:0", "uint16")
    assert [e.register for e in cnc] == list(range(0, 2 * len(cnc), 2))
    assert {e.data_type for e in entries} == {"float32", "uint32", "uint16", "bool"}


async def test_the_plant_is_read_only(served: PlantModbusServer) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=served.port)
    await client.connect()
    try:
        before = (await client.read_holding_registers(0, count=4, device_id=1)).registers
        answer = await client.write_register(0, 4, device_id=1)
        after = (await client.read_holding_registers(0, count=4, device_id=1)).registers
    finally:
        client.close()
    assert answer.isError()
    assert answer.exception_code == 2
    assert before == after


async def test_values_refresh_in_real_time() -> None:
    plant = Plant.default(seed=5)
    server, configs = await serve_plant(plant, period_s=0.1, poll="100ms")
    connector = ModbusConnector.from_config(configs[-1])  # the main energy meter
    await connector.connect()
    try:
        (group,) = connector.groups()
        first_ts = server.last_ts_ns
        first = await connector.read(group)
        second = first
        for _ in range(100):  # guard only: the plant refreshes every 0.1 s
            await asyncio.sleep(0.05)
            if server.last_ts_ns != first_ts:
                second = await connector.read(group)
                if not np.array_equal(second.value, first.value):
                    break
    finally:
        await connector.close()
        await server.stop()
    assert is_good(second.quality).all()
    assert server.last_ts_ns is not None
    assert first_ts is not None
    assert server.last_ts_ns > first_ts
    assert not np.array_equal(second.value, first.value)
