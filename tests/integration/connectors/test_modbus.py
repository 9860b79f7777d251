"""The Modbus connector against a real pymodbus TCP server on 127.0.0.1.

Expected values are built independently with ``struct.pack`` and written into the
server's memory; the connector must read them back through the protocol stack.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from shopfloor.config.connectors.modbus import ModbusConnectorConfig
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.registry import create_connector
from shopfloor.edge.sampling import Sampler
from shopfloor.errors import ConnectorError, ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta, is_bad, is_good

HR_SIZE = 4096


def words(fmt: str, value: Any) -> list[int]:
    """Big-endian registers of ``value`` packed with struct (the ABCD layout)."""
    data = struct.pack(">" + fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


class Device:
    """A pymodbus TCP server whose memory, faults and traffic a test controls.

    Units 1 and 2 have their own memory. ``faults`` maps a start address of a holding
    register request to an exception code; ``truncate`` holds start addresses whose
    answers lose their last register (a wrong-length answer).
    """

    def __init__(self, hr: dict[int, int] | None = None, *, holes: range | None = None) -> None:
        self.hr = [0] * HR_SIZE
        for addr, value in (hr or {}).items():
            self.hr[addr] = value
        self.holes = holes
        self.requests: list[tuple[int, int, int, int]] = []  # unit, function, address, count
        self.faults: dict[int, int] = {}
        self.truncate: set[int] = set()
        self.garble: set[int] = set()
        self.server: ModbusTcpServer | None = None
        self.port = 0
        self._last_start = -1
        self.coils = [False] * 64
        self.inputs = [False] * 64

    def _device(self, unit: int) -> SimDevice:
        hr = [self.hr] if unit == 1 else [[unit * 1000 + i for i in range(16)]]
        blocks: list[SimData] = []
        if self.holes is not None and unit == 1:
            lo, hi = self.holes.start, self.holes.stop
            blocks = [
                SimData(0, values=self.hr[:lo], datatype=DataType.REGISTERS),
                SimData(lo, count=hi - lo, datatype=DataType.INVALID),
                SimData(hi, values=self.hr[hi:], datatype=DataType.REGISTERS),
            ]
        else:
            blocks = [SimData(0, values=hr[0], datatype=DataType.REGISTERS)]
        return SimDevice(
            unit,
            simdata=(
                [SimData(0, values=list(self.coils), datatype=DataType.BITS)],
                [SimData(0, values=list(self.inputs), datatype=DataType.BITS)],
                blocks,
                [SimData(0, values=[11, 22, 33, 44], datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )

    async def _action(  # noqa: PLR0917 - pymodbus calls actions positionally
        self,
        function: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function == 3 and address in self.faults:
            return ExcCodes(self.faults[address])
        return None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(
                (pdu.dev_id, pdu.function_code, getattr(pdu, "address", -1), pdu.count)
            )
            self._last_start = getattr(pdu, "address", -1)
        elif pdu.function_code == 3 and self._last_start in self.truncate and pdu.registers:
            pdu.registers = pdu.registers[:-1]
        return pdu

    def _packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self._last_start in self.garble and len(data) > 9:
            return data[:8] + b"\xc8" + data[9:]  # byte count 200, far more than follows
        return data

    async def start(self) -> None:
        self.server = ModbusTcpServer(
            [self._device(1), self._device(2)],
            address=("127.0.0.1", self.port),
            trace_pdu=self._trace,
            trace_packet=self._packet,
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.shutdown()
        self.server = None

    def reads(self) -> list[tuple[int, int, int, int]]:
        return [r for r in self.requests if r[1] in (1, 2, 3, 4)]


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = Device()
    yield dev
    if dev.server is not None:
        await dev.stop()


def make(device: Device, tags: Sequence[dict[str, Any]], **kwargs: Any) -> ModbusConnector:
    config = ModbusConnectorConfig.model_validate(
        {
            "name": "press",
            "host": "127.0.0.1",
            "port": device.port,
            "timeout": "1s",
            "asset": "acme/p1/press-1",
            "tags": list(tags),
            **kwargs,
        }
    )
    connector = create_connector(config)
    assert isinstance(connector, ModbusConnector)
    return connector


def by_name(batch: PointBatch) -> dict[str, tuple[float, int, str | None]]:
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    return {
        str(path).rsplit("/", 1)[-1]: (float(v), int(q), t)
        for path, v, q, t in zip(batch.paths(), batch.value, batch.quality, texts, strict=True)
    }


async def test_types_and_orders(device: Device) -> None:
    cases: list[tuple[str, str, str, str, Any]] = []  # name, type, byte, word, value
    fmts = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
    fmts |= {"int64": "q", "uint64": "Q", "float64": "d"}
    samples = {"int16": -12345, "uint16": 54321, "int32": -1234567890, "uint32": 3456789012}
    samples |= {"float32": -273.15, "int64": -(2**40) - 7, "uint64": 2**52 + 3}
    samples |= {"float64": 6.02214076e23}
    tags: list[dict[str, Any]] = []
    at = 0
    for data_type, fmt in fmts.items():
        for byte_order in ("big", "little"):
            for word_order in ("big", "little"):
                canonical = struct.pack(">" + fmt, samples[data_type])
                pairs = [canonical[i : i + 2] for i in range(0, len(canonical), 2)]
                if word_order == "little":
                    pairs.reverse()
                if byte_order == "little":
                    pairs = [p[::-1] for p in pairs]
                for k, p in enumerate(pairs):
                    device.hr[at + k] = int.from_bytes(p, "big")
                name = f"{data_type}_{byte_order[0]}{word_order[0]}"
                cases.append((name, data_type, byte_order, word_order, samples[data_type]))
                tags.append(
                    {
                        "name": name,
                        "address": f"hr:{at}",
                        "data_type": data_type,
                        "byte_order": byte_order,
                        "word_order": word_order,
                    }
                )
                at += len(pairs) + 1  # one unused register between values
    device.hr[1000:1004] = [int.from_bytes(b"PU", "big"), int.from_bytes(b"MP", "big"), 0x2D37, 0]
    device.hr[1010] = 0b1010_0000_0000_0000
    device.coils[5] = True
    device.inputs[7] = True
    tags += [
        {"name": "label", "address": "hr:1000", "data_type": "string", "length": 8},
        {"name": "bit13", "address": "hr:1010", "data_type": "uint16", "bit": 13},
        {"name": "bit12", "address": "hr:1010", "data_type": "uint16", "bit": 12},
        {"name": "modicon", "address": "41011", "data_type": "int16"},  # = hr:1010
        {"name": "coil5", "address": "co:5"},
        {"name": "coil4", "address": "co:4"},
        {"name": "input7", "address": "di:7"},
        {"name": "ir2", "address": "ir:2", "data_type": "uint16"},
        {"name": "unit2", "address": "hr:3", "data_type": "uint16", "unit_id": 2},
    ]
    await device.start()
    connector = make(device, tags)
    await connector.connect()
    try:
        (group,) = connector.groups()
        batch = await connector.read(group)
    finally:
        await connector.close()
    got = by_name(batch)
    assert is_good(batch.quality).all()
    for name, data_type, _, _, value in cases:
        expected = struct.unpack(">" + fmts[data_type], struct.pack(">" + fmts[data_type], value))
        assert got[name][0] == float(expected[0]), name
    assert got["label"][2] == "PUMP-7"
    assert got["bit13"][0] == 1.0
    assert got["bit12"][0] == 0.0
    assert got["modicon"][0] == float(struct.unpack(">h", struct.pack(">H", 0xA000))[0])
    assert (got["coil5"][0], got["coil4"][0], got["input7"][0]) == (1.0, 0.0, 1.0)
    assert got["ir2"][0] == 33.0
    assert got["unit2"][0] == 2003.0
    meta = {m.name: m for m in connector.tags()}
    assert meta["coil5"].data_type == "bool"
    assert meta["label"].data_type == "string"
    assert isinstance(meta["float32_bb"], TagMeta)
    assert meta["float32_bb"].path.startswith("acme/")


async def test_scaling_through_the_sampler(device: Device) -> None:
    device.hr[0] = struct.unpack(">H", struct.pack(">h", -215))[0]  # raw tenths of a degree
    device.hr[1] = 1234
    await device.start()
    connector = make(
        device,
        [
            {"name": "temp", "address": "hr:0", "data_type": "int16", "scale": 0.1},
            {"name": "flow", "address": "hr:1", "data_type": "uint16", "scale": 0.5, "offset": -10},
        ],
    )
    await connector.connect()
    try:
        batch = await connector.read(connector.groups()[0])
    finally:
        await connector.close()
    out = by_name(Sampler(connector.specs()).process(batch))
    assert out["temp"][0] == pytest.approx(-21.5)
    assert out["flow"][0] == pytest.approx(1234 * 0.5 - 10)


async def test_coalescing_sends_the_fewest_requests(device: Device) -> None:
    for i in range(300):
        device.hr[2 * i : 2 * i + 2] = words("f", i * 0.25)
    await device.start()
    tags = [{"name": f"t{i}", "address": f"hr:{2 * i}", "data_type": "float32"} for i in range(300)]
    tags.append({"name": "far", "address": "hr:3000", "data_type": "uint16"})
    connector = make(device, tags)
    await connector.connect()
    try:
        batch = await connector.read(connector.groups()[0])
    finally:
        await connector.close()
    got = by_name(batch)
    assert [got[f"t{i}"][0] for i in range(300)] == [i * 0.25 for i in range(300)]
    reads = device.reads()
    # 600 registers of whole float32 values: 62 values (124 registers) per request
    assert len(reads) == math.ceil(300 / 62) + 1
    assert all(count <= 125 for *_, count in reads)


async def test_exception_response_is_bad_for_its_request_only(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    device.hr[0], device.hr[500] = 7, 9
    device.faults[500] = ExcCodes.DEVICE_FAILURE
    await device.start()
    connector = make(
        device,
        [
            {"name": "ok", "address": "hr:0", "data_type": "uint16"},
            {"name": "broken", "address": "hr:500", "data_type": "uint16"},
        ],
    )
    await connector.connect()
    group = connector.groups()[0]
    caplog.set_level(logging.INFO, logger="shopfloor")
    try:
        first = by_name(await connector.read(group))
        second = by_name(await connector.read(group))
        device.faults.clear()
        healed = by_name(await connector.read(group))
    finally:
        await connector.close()
    for got in (first, second):
        assert got["ok"] == (7.0, Quality.GOOD, None)
        assert math.isnan(got["broken"][0])
        assert got["broken"][1] == Quality.BAD_DEVICE_FAILURE == 0x808B0000
    assert healed["broken"] == (9.0, Quality.GOOD, None)
    ours = [r for r in caplog.records if r.name.startswith("shopfloor")]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO]
    assert "exception 4" in ours[0].getMessage()
    assert "hr:500" in ours[0].getMessage()
    assert "recovered" in ours[1].getMessage()


async def test_wrong_length_answer_is_bad(device: Device, caplog: pytest.LogCaptureFixture) -> None:
    device.hr[10:14] = words("f", 1.5) + words("f", 2.5)
    device.hr[200] = 5
    device.truncate.add(10)
    await device.start()
    connector = make(
        device,
        [
            {"name": "a", "address": "hr:10"},
            {"name": "b", "address": "hr:12"},
            {"name": "c", "address": "hr:200", "data_type": "uint16"},
        ],
    )
    await connector.connect()
    caplog.set_level(logging.WARNING, logger="shopfloor")
    try:
        got = by_name(await connector.read(connector.groups()[0]))
    finally:
        await connector.close()
    assert got["a"][1] == got["b"][1] == Quality.BAD_DECODING_ERROR
    assert got["c"] == (5.0, Quality.GOOD, None)
    assert any("answered 3 registers for 4" in r.getMessage() for r in caplog.records)


async def test_garbage_answer_is_bad_and_the_connection_survives(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    device.hr[10], device.hr[200] = 4, 5
    device.garble.add(10)
    await device.start()
    connector = make(
        device,
        [
            {"name": "a", "address": "hr:10", "data_type": "uint16"},
            {"name": "c", "address": "hr:200", "data_type": "uint16"},
        ],
    )
    await connector.connect()
    caplog.set_level(logging.WARNING)
    group = connector.groups()[0]
    try:
        got = by_name(await connector.read(group))
        device.garble.clear()
        again = by_name(await connector.read(group))
    finally:
        await connector.close()
    assert got["a"][1] == Quality.BAD_DECODING_ERROR
    assert math.isnan(got["a"][0])
    assert got["c"] == (5.0, Quality.GOOD, None)
    assert again == {"a": (4.0, 0, None), "c": (5.0, 0, None)}
    assert any("byte count 200" in r.getMessage() for r in caplog.records)
    assert not any(r.name == "asyncio" for r in caplog.records)


async def test_refused_gap_is_split_and_read_again(device: Device) -> None:
    device.hr[0], device.hr[9] = 100, 900
    device.holes = range(2, 8)  # the device maps nothing at hr:2…7
    await device.start()
    connector = make(
        device,
        [
            {"name": "lo", "address": "hr:0", "data_type": "uint16"},
            {"name": "hi", "address": "hr:9", "data_type": "uint16"},
        ],
        max_gap=16,
    )
    await connector.connect()
    group = connector.groups()[0]
    try:
        assert connector.plan(group) == [(1, "hr", 0, 10)]
        got = by_name(await connector.read(group))
        assert sorted(connector.plan(group)) == [(1, "hr", 0, 1), (1, "hr", 9, 1)]
    finally:
        await connector.close()
    assert got == {"lo": (100.0, 0, None), "hi": (900.0, 0, None)}
    assert [(a, c) for _, _, a, c in device.reads()] == [(0, 10), (0, 1), (9, 1)]


async def test_writes_only_to_writable_tags(device: Device) -> None:
    await device.start()
    connector = make(
        device,
        [
            {"name": "setpoint", "address": "hr:20", "scale": 0.1, "writable": True},
            {"name": "mode", "address": "hr:30", "data_type": "uint16", "writable": True,
             "states": {"0": "AUTO", "1": "MANUAL"}},
            {"name": "count", "address": "hr:40", "data_type": "int32", "word_order": "little",
             "writable": True},
            {"name": "start", "address": "co:3", "writable": True},
            {"name": "limit", "address": "hr:50", "data_type": "uint16"},
        ],
    )  # fmt: skip
    await connector.connect()
    probe = AsyncModbusTcpClient("127.0.0.1", port=device.port)
    await probe.connect()
    try:
        await connector.write("acme/p1/press-1/setpoint", 72.5)  # raw = 725.0 as float32
        await connector.write("acme/p1/press-1/mode", "MANUAL")
        await connector.write("acme/p1/press-1/count", -70000)
        await connector.write("acme/p1/press-1/start", True)
        writes_before = len(device.requests)
        with pytest.raises(ConnectorError, match="read-only"):
            await connector.write("acme/p1/press-1/limit", 1)
        with pytest.raises(ConnectorError, match="no tag"):
            await connector.write("acme/p1/press-1/nothing", 1)
        with pytest.raises(ConnectorError, match="range"):
            await connector.write("acme/p1/press-1/mode", 70000)
        assert len(device.requests) == writes_before  # nothing refused reached the device
        regs = (await probe.read_holding_registers(20, count=31, device_id=1)).registers
        coils = (await probe.read_coils(0, count=8, device_id=1)).bits
    finally:
        probe.close()
        await connector.close()
    assert regs[0:2] == words("f", 725.0)
    assert regs[10] == 1
    assert regs[20:22] == list(reversed(words("i", -70000)))
    assert coils[3] is True
    assert regs[30] == 0


async def test_unreachable_and_silent_devices_are_unavailable() -> None:
    # a port nobody listens on
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    silent.close()
    await silent.wait_closed()
    connector = make(Device(), [{"name": "x", "address": "hr:0"}], port=port)
    with pytest.raises(ConnectorUnavailable):
        await connector.connect()
    # a device that accepts the connection and never answers
    held: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = make(Device(), [{"name": "x", "address": "hr:0"}], port=port, timeout="200ms")
    try:
        await connector.connect()
        with pytest.raises(ConnectorUnavailable, match="no answer"):
            await connector.read(connector.groups()[0])
    finally:
        await connector.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


class Uplink:
    """Collects what the agent sends and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.batches: list[PointBatch] = []
        self.changed = asyncio.Condition()

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        pass

    async def send(self, batch: PointBatch) -> None:
        async with self.changed:
            self.batches.append(batch)
            self.changed.notify_all()

    async def wait_for(self, predicate: Any) -> PointBatch:
        async with self.changed:
            while True:
                for batch in self.batches:
                    if predicate(batch):
                        self.batches.clear()
                        return batch
                self.batches.clear()
                await self.changed.wait()


async def test_agent_marks_tags_bad_when_the_server_stops_and_recovers(device: Device) -> None:
    device.hr[0:2] = words("f", 42.0)
    await device.start()
    connector = make(
        device,
        [{"name": "temp", "address": "hr:0"}, {"name": "on", "address": "co:1"}],
        period="100ms",
        timeout="500ms",
        max_silence="0s",
    )
    uplink = Uplink()
    agent = EdgeAgent([connector], uplink, retry=(0.05, 0.2))
    await agent.start()
    try:
        first = await asyncio.wait_for(uplink.wait_for(lambda b: len(b) == 2), 10)
        assert by_name(first)["temp"][:2] == (42.0, Quality.GOOD)
        await device.stop()
        bad = await asyncio.wait_for(uplink.wait_for(lambda b: is_bad(b.quality).all()), 10)
        assert sorted(by_name(bad)) == ["on", "temp"]
        assert agent.health["press"].state == "degraded"
        device.hr[0:2] = words("f", 43.0)
        await device.start()  # same port
        back = await asyncio.wait_for(
            uplink.wait_for(
                lambda b: "acme/p1/press-1/temp" in b.tags and is_good(b.quality).all()
            ),
            10,
        )
        assert by_name(back)["temp"][0] == 43.0
        assert agent.health["press"].state == "active"
    finally:
        await agent.stop()


def test_values_decode_in_bulk_like_struct() -> None:
    # guards the test helper itself: words() must be the ABCD layout
    assert words("f", 1.0) == [0x3F80, 0x0000]
    assert np.array(words("i", -2), dtype=np.uint16).tolist() == [0xFFFF, 0xFFFE]
