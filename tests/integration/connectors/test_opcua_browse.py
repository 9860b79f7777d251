"""Browse and import of a generated OPC UA address space (real asyncua server)."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.edge.connectors.opcua import OpcUaConnector, OpcUaPollConnector
from shopfloor.edge.connectors.opcua_browse import browse, render_toml
from shopfloor.errors import ConfigError
from shopfloor.simulator.serve.opcua import create_server
from shopfloor.testing.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "urn:test:browse"
GENERATED_LINES = 4
GENERATED_PER_LINE = 25


@dataclass
class Space:
    server: Server
    endpoint: str
    index: int


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _one_worker_thread() -> AsyncIterator[None]:
    """One executor thread, started before any test (the module shares its loop)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opcua-test")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    await loop.run_in_executor(None, lambda: None)
    yield
    executor.shutdown(wait=True)


async def describe(node: Node, text: str) -> None:
    await node.write_attribute(
        ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(text)))
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def space() -> AsyncIterator[Space]:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    server = await create_server(endpoint, clock=False)
    i = await server.register_namespace(NS)
    rpm = await server.get_node(ua.NodeId(ua.ObjectIds.Double)).add_data_type(
        ua.NodeId("Rpm", i), "Rpm"
    )
    fast_rpm = await rpm.add_data_type(ua.NodeId("FastRpm", i), "FastRpm")
    plant = await server.nodes.objects.add_object(ua.NodeId("Plant", i), "Plant")
    line = await plant.add_object(ua.NodeId("Plant.Line1", i), "Line 1")
    oven = await line.add_object(ua.NodeId("Plant.Line1.Oven", i), "Oven")
    temp = await oven.add_variable(ua.NodeId("Oven.Temp", i), "Temp", 180.0)
    await describe(temp, "Oven air temperature")
    await temp.add_property(
        ua.NodeId("Oven.Temp.EURange", i), "EURange", ua.Range(Low=0.0, High=250.0)
    )
    await temp.add_property(
        ua.NodeId("Oven.Temp.Units", i),
        "EngineeringUnits",
        ua.EUInformation(DisplayName=ua.LocalizedText("°C"), UnitId=4408652),
    )
    await oven.add_variable(
        ua.NodeId("Oven.SetPoint", i), "SetPoint", ua.Variant(175.5, ua.VariantType.Float)
    )
    await oven.add_variable(ua.NodeId("Oven.Running", i), "Running", True)
    await oven.add_variable(ua.NodeId("Oven.BatchId", i), "BatchId", "B-0042")
    await oven.add_variable(ua.NodeId(1001, i), "CycleCount", ua.Variant(7, ua.VariantType.UInt32))
    await oven.add_variable(
        ua.NodeId("Oven.Fan", i),
        "Fan Speed (rpm)",
        ua.Variant(1450.0, ua.VariantType.Double),
        datatype=rpm.nodeid,
    )
    await oven.add_variable(
        ua.NodeId("Oven.Blower", i),
        "BlowerSpeed",
        ua.Variant(2900.0, ua.VariantType.Double),
        datatype=fast_rpm.nodeid,
    )
    await oven.add_variable(ua.NodeId("Oven.Profile", i), "Profile", [1.0, 2.0])
    await oven.add_variable(
        ua.NodeId("Oven.StartedAt", i), "StartedAt", ua.Variant(None, ua.VariantType.DateTime)
    )
    status = await oven.add_variable(
        ua.NodeId("Oven.Status", i), "Status", ua.Variant(3, ua.VariantType.Int16)
    )
    await status.add_variable(
        ua.NodeId("Oven.Status.Code", i), "Code", ua.Variant(12, ua.VariantType.Int64)
    )
    await oven.add_variable(ua.NodeId("Oven.Temp2", i), "Temp.", 1.0)  # same segment as Temp
    for n in range(GENERATED_LINES):
        folder = await plant.add_object(ua.NodeId(f"Gen{n}", i), f"Gen{n}")
        for k in range(GENERATED_PER_LINE):
            await folder.add_variable(ua.NodeId(f"Gen{n}.V{k}", i), f"V{k}", float(n * 100 + k))
    await server.start()
    try:
        yield Space(server, endpoint, i)
    finally:
        await server.stop()


EXPECTED_OVEN = {
    # path → (address identifier, data type)
    "plant/line_1/oven/temp": ("s=Oven.Temp", "float64"),
    "plant/line_1/oven/set_point": ("s=Oven.SetPoint", "float32"),
    "plant/line_1/oven/running": ("s=Oven.Running", "bool"),
    "plant/line_1/oven/batch_id": ("s=Oven.BatchId", "string"),
    "plant/line_1/oven/cycle_count": ("i=1001", "uint32"),
    "plant/line_1/oven/fan_speed_rpm": ("s=Oven.Fan", "float64"),
    "plant/line_1/oven/blower_speed": ("s=Oven.Blower", "float64"),
    "plant/line_1/oven/status": ("s=Oven.Status", "int16"),
    "plant/line_1/oven/status/code": ("s=Oven.Status.Code", "int64"),
    "plant/line_1/oven/temp_2": ("s=Oven.Temp2", "float64"),
}


async def test_browse_imports_every_scalar_variable_with_types_and_metadata(space: Space) -> None:
    tags = await browse(space.endpoint, allow_insecure=True)
    by_path = {t.full_path(""): t for t in tags}
    generated = {
        f"plant/gen{n}/v{k}" for n in range(GENERATED_LINES) for k in range(GENERATED_PER_LINE)
    }
    assert set(by_path) == set(EXPECTED_OVEN) | generated  # no array, DateTime or ns=0 node
    for path, (identifier, data_type) in EXPECTED_OVEN.items():
        assert by_path[path].address == f"ns={space.index};{identifier}", path
        assert by_path[path].data_type == data_type, path
    temp = by_path["plant/line_1/oven/temp"]
    assert (temp.eng_low, temp.eng_high, temp.unit) == (0.0, 250.0, "°C")
    assert temp.description == "Oven air temperature"
    assert temp.name == "temp"


async def test_imported_configuration_reads_every_tag(space: Space) -> None:
    tags = await browse(space.endpoint, allow_insecure=True, namespace_uris=True, asset="acme/p1")
    assert all(t.address.startswith(f"nsu={NS};") for t in tags)
    section = OpcUaConnectorConfig(
        name="imported",
        endpoint=space.endpoint,
        security_policy="None",
        allow_insecure=True,
        mode="poll",
        asset="acme/p1",
    )
    text = render_toml(section, tags)
    loaded = OpcUaConnectorConfig.model_validate(tomllib.loads(text)["connectors"][0])
    assert loaded.tags == tags
    connector = OpcUaConnector.from_config(loaded)
    assert isinstance(connector, OpcUaPollConnector)
    await connector.connect()
    try:
        batch = await connector.read(connector.groups()[0])
    finally:
        await connector.close()
    assert batch.quality.tolist() == [0] * len(tags)
    values = dict(zip(batch.paths(), batch.value.tolist(), strict=True))
    assert values["acme/p1/plant/gen3/v24"] == 324.0
    assert values["acme/p1/plant/line_1/oven/fan_speed_rpm"] == 1450.0
    assert values["acme/p1/plant/line_1/oven/cycle_count"] == 7.0


async def test_browse_limits_depth_nodes_and_root(
    space: Space, caplog: pytest.LogCaptureFixture
) -> None:
    shallow = await browse(space.endpoint, allow_insecure=True, max_depth=3)
    assert {t.full_path("") for t in shallow} == {
        f"plant/gen{n}/v{k}" for n in range(GENERATED_LINES) for k in range(GENERATED_PER_LINE)
    }
    caplog.set_level(logging.WARNING)
    few = await browse(space.endpoint, allow_insecure=True, max_nodes=20)
    assert 0 < len(few) < 20
    assert any("max_nodes" in r.getMessage() for r in caplog.records)
    oven = await browse(space.endpoint, root=f"nsu={NS};s=Plant.Line1.Oven", allow_insecure=True)
    assert {t.full_path("") for t in oven} == {
        p.removeprefix("plant/line_1/oven/") for p in EXPECTED_OVEN
    }


async def test_browse_without_security_must_be_asked_for(space: Space) -> None:
    with pytest.raises(ConfigError, match="allow_insecure"):
        await browse(space.endpoint)
