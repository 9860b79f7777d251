"""The OPC UA connector against a real asyncua server on 127.0.0.1 (no security).

One server is shared by the module (asyncua servers take about a second to start);
each test writes the values it checks, so the tests do not depend on each other.
Tests that stop and restart a server use their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.server.server import Server

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.opcua import OpcUaConnector, OpcUaPollConnector
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.simulator.serve.opcua import create_server
from shopfloor.testing.processes import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "urn:test:line1"
BAD_TYPE_MISMATCH = 0x80740000
BAD_NODE_ID_UNKNOWN = 0x80340000
BAD_SENSOR_FAILURE = int(Quality.BAD_SENSOR_FAILURE)
UNCERTAIN_LAST_USABLE = 0x40900000

# name → (initial value, variant type)
VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "Temp": (20.0, ua.VariantType.Double),
    "Count": (0, ua.VariantType.Int32),
    "Running": (False, ua.VariantType.Boolean),
    "Recipe": ("none", ua.VariantType.String),
    "Status": (0, ua.VariantType.UInt16),
    "Pressure": (1.0, ua.VariantType.Float),
    "Total": (0, ua.VariantType.UInt64),
    "Profile": ([1.0, 2.0, 3.0], ua.VariantType.Double),
    "Blob": (b"\x00\x01", ua.VariantType.ByteString),
    "Stamp": (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), ua.VariantType.DateTime),
}


class Plc:
    """A live asyncua server and what a test needs to drive it."""

    def __init__(self, server: Server, endpoint: str, index: int) -> None:
        self.server = server
        self.endpoint = endpoint
        self.index = index

    def node(self, name: str) -> ua.NodeId:
        return ua.NodeId(f"Line1.{name}", self.index)

    async def write(
        self,
        name: str,
        value: Any,
        *,
        status: int = 0,
        source: dt.datetime | None = None,
    ) -> None:
        variant = VARIABLES[name][1]
        await self.server.write_attribute_value(
            self.node(name),
            ua.DataValue(
                ua.Variant(value, variant),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=source or dt.datetime.now(dt.UTC),
                ServerTimestamp=dt.datetime.now(dt.UTC),
            ),
        )


async def start_plc(port: int) -> Plc:
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    server = await create_server(endpoint, clock=False)
    index = await server.register_namespace(NS)
    line = await server.nodes.objects.add_object(ua.NodeId("Line1", index), "Line1")
    for name, (value, variant) in VARIABLES.items():
        await line.add_variable(ua.NodeId(f"Line1.{name}", index), name, ua.Variant(value, variant))
    await server.start()
    return Plc(server, endpoint, index)


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _one_worker_thread() -> AsyncIterator[None]:
    """asyncua and the connector use ``asyncio.to_thread``: keep that to one thread, started
    before any test, so the module's shared loop does not look like it leaks threads."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opcua-test")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    await loop.run_in_executor(None, lambda: None)
    yield
    executor.shutdown(wait=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plc() -> AsyncIterator[Plc]:
    running = await start_plc(free_port())
    try:
        yield running
    finally:
        await running.server.stop()


def config(endpoint: str, names: Sequence[str], **settings: Any) -> OpcUaConnectorConfig:
    tags = [
        {"name": n.lower(), "address": f"nsu={NS};s=Line1.{n}", **settings.pop(n, {})}
        for n in names
    ]
    return OpcUaConnectorConfig.model_validate(
        {
            "name": "line1",
            "endpoint": endpoint,
            "security_policy": "None",
            "allow_insecure": True,
            "asset": "acme/p1/line1",
            "publishing_interval": "50ms",
            "sampling_interval": "0ms",
            "timeout": "1s",
            "tags": tags,
            **settings,
        }
    )


def path(name: str) -> str:
    return f"acme/p1/line1/{name.lower()}"


class Collector:
    """Keeps the latest point of every tag a subscription yields."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, float, int, str | None]] = {}
        self.batches = 0

    def add(self, batch: PointBatch) -> None:
        self.batches += 1
        texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
        for p, ts, v, q, t in zip(
            batch.paths(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            texts,
            strict=True,
        ):
            self.latest[p] = (ts, v, q, t)


async def collect_until(
    items: AsyncIterator[PointBatch | Sequence[TagMeta]],
    collector: Collector,
    done: Any,
    *,
    within_s: float = 5.0,
) -> None:
    async def run() -> None:
        async for item in items:
            if isinstance(item, PointBatch):
                collector.add(item)
                if done(collector.latest):
                    return

    await asyncio.wait_for(run(), within_s)


def ns_of(stamp: dt.datetime) -> int:
    return (stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000


async def test_subscription_keeps_values_types_source_timestamps_and_status(plc: Plc) -> None:
    stamp = dt.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
    names = ["Temp", "Count", "Running", "Recipe", "Total", "Pressure"]
    connector = OpcUaConnector.from_config(config(plc.endpoint, names))
    assert isinstance(connector, OpcUaConnector)
    await connector.connect()
    try:
        stream = connector.subscribe()
        seen = Collector()
        await collect_until(stream, seen, lambda latest: len(latest) == len(names))
        await plc.write("Temp", 21.5, source=stamp)
        await plc.write("Count", 7, source=stamp)
        await plc.write("Running", True, source=stamp)
        await plc.write("Recipe", "PA6-black", source=stamp)
        await plc.write("Total", 2**40 + 3, source=stamp)
        await plc.write("Pressure", 4.5, status=UNCERTAIN_LAST_USABLE, source=stamp)
        await collect_until(
            stream,
            seen,
            lambda latest: all(latest[path(n)][0] == ns_of(stamp) for n in names),
        )
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await connector.close()
    latest = seen.latest
    assert latest[path("Temp")] == (ns_of(stamp), 21.5, 0, None)
    assert latest[path("Count")] == (ns_of(stamp), 7.0, 0, None)
    assert latest[path("Running")] == (ns_of(stamp), 1.0, 0, None)
    ts, value, quality, text = latest[path("Recipe")]
    assert (ts, quality, text) == (ns_of(stamp), 0, "PA6-black")
    assert np.isnan(value)
    assert latest[path("Total")] == (ns_of(stamp), float(2**40 + 3), 0, None)
    # an Uncertain status travels as the point's quality, the value kept
    assert latest[path("Pressure")] == (ns_of(stamp), 4.5, UNCERTAIN_LAST_USABLE, None)
    # several values per publish response come as one batch, not one batch per value
    assert seen.batches < 6


async def test_a_bad_status_set_on_the_server_reaches_the_point(plc: Plc) -> None:
    connector = OpcUaConnector.from_config(config(plc.endpoint, ["Pressure"]))
    await connector.connect()
    try:
        stream = connector.subscribe()
        seen = Collector()
        await plc.write("Pressure", 2.0)
        await collect_until(
            stream, seen, lambda latest: latest.get(path("Pressure"), (0, 0, 1))[2] == 0
        )
        await plc.write("Pressure", 0.0, status=BAD_SENSOR_FAILURE)
        await collect_until(
            stream, seen, lambda latest: latest[path("Pressure")][2] == BAD_SENSOR_FAILURE
        )
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await connector.close()
    assert np.isnan(seen.latest[path("Pressure")][1])  # a Bad value carries no number


async def test_poll_mode_reads_each_period_group_in_one_request(plc: Plc) -> None:
    stamp = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    cfg = config(
        plc.endpoint,
        ["Temp", "Count", "Status", "Recipe"],
        mode="poll",
        period="1s",
        Status={"period": "200ms", "bit": 3},
    )
    connector = OpcUaConnector.from_config(cfg)
    assert isinstance(connector, OpcUaPollConnector)
    groups = {g.name: g for g in connector.groups()}
    assert {g.period_s: set(g.paths) for g in groups.values()} == {
        0.2: {path("Status")},
        1.0: {path("Temp"), path("Count"), path("Recipe")},
    }
    await plc.write("Temp", -3.25, source=stamp)
    await plc.write("Count", 123456, source=stamp)
    await plc.write("Status", 0b1000, source=stamp)
    await plc.write("Recipe", "PP-white", source=stamp)
    await connector.connect()
    try:
        slow = await connector.read(groups["1s"])
        fast = await connector.read(groups["0.2s"])
        await plc.write("Status", 0b0111, source=stamp)
        fast_again = await connector.read(groups["0.2s"])
    finally:
        await connector.close()
    got = dict(
        zip(slow.paths(), zip(slow.ts.tolist(), slow.value.tolist(), strict=True), strict=True)
    )
    assert got[path("Temp")] == (ns_of(stamp), -3.25)
    assert got[path("Count")] == (ns_of(stamp), 123456.0)
    assert slow.text is not None
    assert slow.text.to_pylist()[list(slow.paths()).index(path("Recipe"))] == "PP-white"
    assert fast.paths().tolist() == [path("Status")]
    assert fast.value.tolist() == [1.0]  # bit 3 of 0b1000
    assert fast_again.value.tolist() == [0.0]  # bit 3 of 0b0111


async def test_unsupported_values_turn_bad_logged_once_without_stopping_the_rest(
    plc: Plc, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["Profile", "Blob", "Stamp", "Temp"]
    connector = OpcUaConnector.from_config(config(plc.endpoint, names))
    caplog.set_level(logging.WARNING, logger="shopfloor.edge.connectors.opcua")
    await connector.connect()
    try:
        stream = connector.subscribe()
        seen = Collector()
        await collect_until(stream, seen, lambda latest: len(latest) == len(names))
        await plc.write("Profile", [4.0, 5.0])
        await plc.write("Temp", 30.5)
        await collect_until(stream, seen, lambda latest: latest[path("Temp")][1] == 30.5)
        await plc.write("Profile", [6.0])
        await plc.write("Temp", 31.5)
        await collect_until(stream, seen, lambda latest: latest[path("Temp")][1] == 31.5)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await connector.close()
    for name in ("Profile", "Blob", "Stamp"):
        _ts, value, quality, _ = seen.latest[path(name)]
        assert quality == BAD_TYPE_MISMATCH, name
        assert np.isnan(value), name
    warnings = [r.getMessage() for r in caplog.records if path("Profile") in r.getMessage()]
    assert len(warnings) == 1
    assert "array" in warnings[0]
    assert seen.latest[path("Temp")][2] == 0


async def test_unknown_nodes_and_namespaces_are_bad_not_fatal(plc: Plc) -> None:
    cfg = OpcUaConnectorConfig.model_validate(
        {
            "name": "line1",
            "endpoint": plc.endpoint,
            "security_policy": "None",
            "allow_insecure": True,
            "tags": [
                {"name": "temp", "address": f"ns={plc.index};s=Line1.Temp"},
                {"name": "ghost", "address": f"ns={plc.index};s=Line1.Ghost"},
                {"name": "elsewhere", "address": "nsu=urn:nowhere;i=5"},
            ],
        }
    )
    subscriber = OpcUaConnector.from_config(cfg)
    poller = OpcUaConnector.from_config(cfg.model_copy(update={"mode": "poll"}))
    assert isinstance(poller, OpcUaPollConnector)
    await subscriber.connect()
    await poller.connect()
    try:
        seen = Collector()
        stream = subscriber.subscribe()
        await collect_until(stream, seen, lambda latest: len(latest) == 3)
        await stream.aclose()  # type: ignore[attr-defined]
        polled = await poller.read(poller.groups()[0])
    finally:
        await subscriber.close()
        await poller.close()
    assert seen.latest["ghost"][2] == BAD_NODE_ID_UNKNOWN
    assert seen.latest["elsewhere"][2] == BAD_NODE_ID_UNKNOWN
    assert seen.latest["temp"][2] == 0
    by_path = dict(zip(polled.paths(), polled.quality.tolist(), strict=True))
    assert by_path == {"temp": 0, "ghost": BAD_NODE_ID_UNKNOWN, "elsewhere": BAD_NODE_ID_UNKNOWN}


async def test_server_stop_ends_the_subscription_promptly() -> None:
    plc = await start_plc(free_port())
    connector = OpcUaConnector.from_config(config(plc.endpoint, ["Temp"]))
    await connector.connect()
    try:
        stream = connector.subscribe()
        seen = Collector()
        await collect_until(stream, seen, lambda latest: len(latest) == 1)
        await plc.server.stop()
        with pytest.raises(ConnectorUnavailable):
            await collect_until(stream, seen, lambda latest: False, within_s=5.0)
    finally:
        await connector.close()


class RecordingUplink:
    def __init__(self) -> None:
        self.batches: list[PointBatch] = []
        self.changed = asyncio.Event()

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        pass

    async def send(self, batch: PointBatch) -> None:
        self.batches.append(batch)
        self.changed.set()

    def points(self, tag: str) -> list[tuple[float, int]]:
        out = []
        for b in self.batches:
            mask = b.paths() == tag
            out += list(zip(b.value[mask].tolist(), b.quality[mask].tolist(), strict=True))
        return out

    async def wait_for(self, test: Any, within_s: float = 10.0) -> None:
        async def loop() -> None:
            while not test():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within_s)


async def test_agent_marks_bad_on_server_stop_then_resubscribes_after_restart() -> None:
    port = free_port()
    plc = await start_plc(port)
    connector = OpcUaConnector.from_config(config(plc.endpoint, ["Temp"]))
    uplink = RecordingUplink()
    agent = EdgeAgent([connector], uplink, retry=(0.1, 0.3))  # type: ignore[list-item]
    temp = path("Temp")
    await agent.start()
    try:
        await plc.write("Temp", 11.0)
        await uplink.wait_for(lambda: (11.0, 0) in uplink.points(temp))
        await plc.server.stop()
        await uplink.wait_for(lambda: uplink.points(temp)[-1][1] == Quality.BAD_COMMUNICATION_ERROR)
        plc = await start_plc(port)  # a fresh server: the old session and subscription are gone
        await plc.write("Temp", 12.5)
        await uplink.wait_for(lambda: (12.5, 0) in uplink.points(temp))
    finally:
        await agent.stop()
        await plc.server.stop()
    assert agent.health["line1"].reconnects >= 1
