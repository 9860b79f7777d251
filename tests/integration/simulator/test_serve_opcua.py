"""The simulated plant served over OPC UA, read back through the OPC UA connector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import pytest_asyncio

from shopfloor.edge.connectors.opcua import OpcUaConnector
from shopfloor.edge.connectors.opcua_browse import browse
from shopfloor.model import DataType, PointBatch, Quality
from shopfloor.simulator import Fault, Plant
from shopfloor.simulator.serve.opcua import PlantOpcUaServer, serve_plant
from shopfloor.testing.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 3
PERIOD_S = 0.2
PERIOD_NS = round(PERIOD_S * 1e9)


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _one_worker_thread() -> AsyncIterator[None]:
    """One executor thread, started before any test (the module shares its loop)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opcua-test")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    await loop.run_in_executor(None, lambda: None)
    yield
    executor.shutdown(wait=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant_server() -> AsyncIterator[PlantOpcUaServer]:
    server, _ = await serve_plant(Plant.default(seed=SEED), port=free_port(), period_s=PERIOD_S)
    try:
        yield server
    finally:
        await server.stop()


async def receive(
    connector: OpcUaConnector, *, until: int = 0, bad: bool = False, within_s: float = 10.0
) -> PointBatch:
    """Subscribe until ``until`` points (or a Bad one) arrived; return them as one batch."""
    batches: list[PointBatch] = []

    async def run() -> None:
        stream = connector.subscribe()
        async for item in stream:
            if isinstance(item, PointBatch):
                batches.append(item)
                if bad and (item.quality & 0x80000000).any():
                    break
                if until and sum(len(b) for b in batches) >= until:
                    break
        await stream.aclose()  # type: ignore[attr-defined]

    await connector.connect()
    try:
        await asyncio.wait_for(run(), within_s)
    finally:
        await connector.close()
    return PointBatch.concat(batches)


async def test_served_values_match_an_independent_plant_with_the_same_seed(
    plant_server: PlantOpcUaServer,
) -> None:
    connector = OpcUaConnector.from_config(plant_server.connector_config())
    assert isinstance(connector, OpcUaConnector)
    tags = plant_server.plant.tags()
    got = await receive(connector, until=3 * len(tags))
    assert set(got.tags) == {t.path for t in tags}
    first = plant_server.first_sample_ns
    assert first is not None
    steps = int((got.ts.max() - first) // PERIOD_NS) + 1
    reference = Plant.default(seed=SEED).advance(start_ns=first, steps=steps, period_ns=PERIOD_NS)
    expected = {
        (p, t): (v, q)
        for p, t, v, q in zip(
            reference.paths(),
            reference.ts.tolist(),
            reference.value.tolist(),
            reference.quality.tolist(),
            strict=True,
        )
    }
    kinds = {t.path: t.data_type for t in tags}
    for p, t, v, q in zip(
        got.paths(), got.ts.tolist(), got.value.tolist(), got.quality.tolist(), strict=True
    ):
        want, want_q = expected[(p, t)]
        assert q == want_q, p
        if kinds[p] is DataType.FLOAT:
            assert v == want, p  # a Double crosses OPC UA bit for bit
        else:
            assert v == round(want), p


async def test_connector_metadata_matches_the_plant(plant_server: PlantOpcUaServer) -> None:
    connector = OpcUaConnector.from_config(plant_server.connector_config())
    assert list(connector.tags()) == plant_server.plant.tags()


async def test_a_failed_sensor_reads_bad_through_opc_ua(plant_server: PlantOpcUaServer) -> None:
    plant_server.plant.inject("cnc-01", Fault.sensor_failure("spindle_temp", duration_ns=10**12))
    path = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp"
    config = plant_server.connector_config(
        tags=[t for t in plant_server.plant.tags() if t.path == path]
    )
    connector = OpcUaConnector.from_config(config)
    assert isinstance(connector, OpcUaConnector)
    got = await receive(connector, bad=True)
    assert got.quality[-1] == Quality.BAD_SENSOR_FAILURE
    assert np.isnan(got.value[-1])


async def test_browsing_the_served_plant_finds_its_tags(plant_server: PlantOpcUaServer) -> None:
    imported = {
        t.full_path(""): t for t in await browse(plant_server.endpoint, allow_insecure=True)
    }
    tags = plant_server.plant.tags()
    assert set(imported) == {t.path for t in tags}
    for meta in tags:
        tag = imported[meta.path]
        assert tag.unit == meta.unit, meta.path
        assert (tag.eng_low, tag.eng_high) == (
            (meta.eng_low, meta.eng_high) if meta.eng_high is not None else (None, None)
        ), meta.path
        assert tag.description == meta.description
        expected = {DataType.FLOAT: "float64", DataType.INT: "int32", DataType.BOOL: "bool"}
        assert tag.data_type == expected[meta.data_type], meta.path


async def test_encrypted_plant_server_with_generated_certificates() -> None:
    plant = Plant.default(seed=SEED)
    server = PlantOpcUaServer(plant, port=free_port(), period_s=PERIOD_S, secure=True)
    await server.start()
    try:
        config = server.connector_config()
        assert (config.security_policy, config.security_mode) == (
            "Basic256Sha256",
            "SignAndEncrypt",
        )
        connector = OpcUaConnector.from_config(config)
        assert isinstance(connector, OpcUaConnector)
        got = await receive(connector, until=len(plant.tags()))
        cert_dir = config.certificate.parent if config.certificate else None
    finally:
        await server.stop()
    assert set(got.tags) == {t.path for t in plant.tags()}
    assert cert_dir is not None
    assert not cert_dir.exists()
