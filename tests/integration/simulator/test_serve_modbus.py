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


SP = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_speed_sp"
SPEED = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_speed"


async def test_a_set_point_written_through_the_connector_is_what_the_machine_runs_at(
    served: PlantModbusServer,
) -> None:
    configs = served.connector_configs(timeout="2s", allow_writes=True)
    cnc = next(c for c in configs if c.name == "modbus-cnc-01")
    assert cnc.allow_writes
    assert [t.name for t in cnc.tags if t.writable] == ["spindle_speed_sp"]
    assert not any(c.allow_writes for c in configs if not c.name.startswith("modbus-cnc"))
    connector = ModbusConnector.from_config(cnc)
    await connector.connect()
    try:
        await connector.write(SP, 9100.0)
        (group,) = connector.groups()
        now = Sampler(connector.specs()).process(await connector.read(group))
        values = dict(zip(map(str, now.paths()), now.value, strict=True))
        assert values[SP] == 9100.0  # read back at once, before the next sample
        # from the next sample on the plant follows it: running, the speed is near it
        assert served.last_ts_ns is not None
        for _ in range(600):  # guard only: a stop ends within minutes of plant time
            served.refresh(served.last_ts_ns + 10**9)
            now = Sampler(connector.specs()).process(await connector.read(group))
            values = dict(zip(map(str, now.paths()), now.value, strict=True))
            assert values[SP] == 9100.0
            if values[SPEED] > 0:
                break
        assert values[SPEED] == pytest.approx(9100.0, rel=0.02)
    finally:
        await connector.close()


async def test_a_set_point_beyond_its_range_is_clamped_and_other_writes_refused(
    served: PlantModbusServer,
) -> None:
    (entry,) = [e for e in served.entries if e.path == SP]
    client = AsyncModbusTcpClient("127.0.0.1", port=served.port)
    await client.connect()
    try:
        words = np.array([20000.0], dtype=">f4").view(">u2").tolist()
        ok = await client.write_registers(entry.register, words, device_id=entry.unit_id)
        held = (await client.read_holding_registers(entry.register, count=2, device_id=1)).registers
        half = await client.write_register(entry.register, 1, device_id=entry.unit_id)
        other = await client.write_registers(0, [1, 0], device_id=entry.unit_id)
    finally:
        client.close()
    assert not ok.isError()
    assert np.array(held, dtype=">u2").view(">f4")[0] == 15000.0  # clamped like a drive
    assert half.isError()
    assert half.exception_code == 2  # half a float is never taken
    assert other.isError()
    assert other.exception_code == 2  # the state is not a set point
