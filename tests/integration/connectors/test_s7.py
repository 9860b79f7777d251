"""The S7 connector against python-snap7's own S7 server on 127.0.0.1 (a free port).

The server's memory areas are plain bytearrays: values are packed into them with
``struct`` (S7 is big-endian) and must come back through the ISO-on-TCP stack.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import snap7
from snap7.type import SrvArea

from shopfloor.config.connectors.s7 import S7ConnectorConfig, parse_s7_address
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.registry import create_connector
from shopfloor.edge.connectors.s7 import S7Connector
from shopfloor.edge.sampling import Sampler
from shopfloor.errors import ConnectorError, ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta, is_bad, is_good


class Plc:
    """snap7's server with DB1 (200 bytes), merkers, inputs and outputs."""

    def __init__(self) -> None:
        self.db1 = bytearray(200)
        self.mk = bytearray(64)
        self.pe = bytearray(16)
        self.pa = bytearray(16)
        self.port = 0
        self.reads = 0
        self.server: snap7.Server | None = None

    def _count(self, _event: Any) -> None:
        self.reads += 1

    async def start(self) -> None:
        server = snap7.Server(log=False)
        server.register_area(SrvArea.DB, 1, self.db1)
        server.register_area(SrvArea.MK, 0, self.mk)
        server.register_area(SrvArea.PE, 0, self.pe)
        server.register_area(SrvArea.PA, 0, self.pa)
        server.set_read_events_callback(self._count)
        server.start_to("127.0.0.1", self.port)
        assert server.server_socket is not None
        self.port = server.server_socket.getsockname()[1]
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.to_thread(server.stop)


@pytest.fixture
async def plc() -> AsyncIterator[Plc]:
    device = Plc()
    yield device
    await device.stop()


def make(plc: Plc, tags: Sequence[dict[str, Any]], **kwargs: Any) -> S7Connector:
    config = S7ConnectorConfig.model_validate(
        {
            "kind": "s7",
            "name": "cpu",
            "host": "127.0.0.1",
            "port": plc.port,
            "timeout": "1s",
            "asset": "acme/p1/oven",
            "tags": list(tags),
            **kwargs,
        }
    )
    connector = create_connector(config)
    assert isinstance(connector, S7Connector)
    return connector


def by_name(batch: PointBatch) -> dict[str, tuple[float, int, str | None]]:
    texts = batch.text.to_pylist() if batch.text is not None else [None] * len(batch)
    return {
        str(p).rsplit("/", 1)[-1]: (float(v), int(q), t)
        for p, v, q, t in zip(batch.paths(), batch.value, batch.quality, texts, strict=True)
    }


async def test_areas_and_types(plc: Plc) -> None:
    struct.pack_into(">h", plc.db1, 0, -1234)  # INT
    plc.db1[2] = 0b0000_1000  # bit 3
    struct.pack_into(">f", plc.db1, 4, 21.75)  # REAL
    struct.pack_into(">i", plc.db1, 8, -100_000)  # DINT
    struct.pack_into(">I", plc.db1, 12, 4_000_000_000)  # UDINT
    struct.pack_into(">d", plc.db1, 16, math.pi)  # LREAL
    struct.pack_into(">H", plc.db1, 24, 65000)  # WORD
    plc.db1[26] = 0xF6  # SINT -10 / BYTE 246
    plc.db1[30:37] = bytes([20, 5]) + b"OVEN1"  # STRING[20]: max, used, characters
    struct.pack_into(">f", plc.db1, 60, 12.5)  # word-swapped REAL (CDAB)
    plc.db1[60:64] = plc.db1[62:64] + plc.db1[60:62]
    struct.pack_into(">h", plc.mk, 10, 300)
    plc.pe[0] = 0b10
    plc.pa[0] = 0x5A
    struct.pack_into(">H", plc.pe, 2, 1 << 9)
    await plc.start()
    connector = make(
        plc,
        [
            {"name": "int", "address": "DB1.DBW0"},
            {"name": "flag", "address": "DB1.DBX2.3"},
            {"name": "flag2", "address": "%DB1.DBX2.2"},
            {"name": "real", "address": "DB1.DBD4"},
            {"name": "dint", "address": "DB1.DBD8", "data_type": "int32"},
            {"name": "udint", "address": "DB1.DBD12", "data_type": "uint32"},
            {"name": "lreal", "address": "DB1.DBL16"},
            {"name": "word", "address": "DB1.DBW24", "data_type": "uint16"},
            {"name": "sint", "address": "DB1.DBB26", "data_type": "int16"},
            {"name": "byte", "address": "DB1.DBB26"},
            {"name": "text", "address": "DB1.S30.20"},
            {"name": "swapped", "address": "DB1.DBD60", "word_order": "little"},
            {"name": "mw", "address": "MW10", "scale": 0.1},
            {"name": "input", "address": "I0.1"},
            {"name": "input0", "address": "E0.0"},
            {"name": "iw_bit", "address": "IW2", "data_type": "bool", "bit": 9},
            {"name": "qb", "address": "QB0"},
        ],
    )
    await connector.connect()
    try:
        raw = await connector.read(connector.groups()[0])
    finally:
        await connector.close()
    assert is_good(raw.quality).all()
    got = by_name(raw)
    assert got["int"][0] == -1234
    assert (got["flag"][0], got["flag2"][0]) == (1.0, 0.0)
    assert got["real"][0] == 21.75
    assert got["dint"][0] == -100_000
    assert got["udint"][0] == 4_000_000_000
    assert got["lreal"][0] == math.pi
    assert got["word"][0] == 65000
    assert (got["sint"][0], got["byte"][0]) == (-10, 246)
    assert got["text"][2] == "OVEN1"
    assert got["swapped"][0] == 12.5
    assert (got["input"][0], got["input0"][0], got["iw_bit"][0], got["qb"][0]) == (1, 0, 1, 0x5A)
    scaled = by_name(Sampler(connector.specs()).process(raw))
    assert scaled["mw"][0] == pytest.approx(30.0)
    meta = {m.name: m for m in connector.tags()}
    assert meta["flag"].data_type == "bool"
    assert meta["real"].data_type == "float"
    assert meta["text"].data_type == "string"
    assert meta["int"].data_type == "int"


async def test_reads_are_coalesced_per_area_and_block(plc: Plc) -> None:
    for i in range(40):
        struct.pack_into(">f", plc.db1, 4 * i, i + 0.5)
    await plc.start()
    tags = [{"name": f"r{i}", "address": f"DB1.DBD{4 * i}"} for i in range(40)]
    tags += [{"name": "m", "address": "MW0"}, {"name": "m2", "address": "MW40"}]
    connector = make(plc, tags, max_gap=32)
    await connector.connect()
    group = connector.groups()[0]
    try:
        reads_before = plc.reads
        got = by_name(await connector.read(group))
        sent = plc.reads - reads_before
        plan = connector.plan(group)
    finally:
        await connector.close()
    assert [got[f"r{i}"][0] for i in range(40)] == [i + 0.5 for i in range(40)]
    # 160 contiguous bytes of DB1 fit one PDU; MW0 and MW40 are 38 bytes apart (> 32)
    assert sorted(plan) == [("DB", 1, 0, 160), ("M", 0, 0, 2), ("M", 0, 40, 2)]
    assert sent == 3


async def test_refused_items_are_bad_for_their_tags_only(
    plc: Plc, caplog: pytest.LogCaptureFixture
) -> None:
    struct.pack_into(">h", plc.db1, 0, 7)
    plc.db1[100:104] = bytes([4, 9]) + b"AB"  # header claims 9 characters in a STRING[4]
    await plc.start()
    connector = make(
        plc,
        [
            {"name": "ok", "address": "DB1.DBW0"},
            {"name": "missing_db", "address": "DB7.DBW0"},
            {"name": "past_end", "address": "DB1.DBD198"},
            {"name": "bad_text", "address": "DB1.S100.4"},
        ],
        max_gap=0,
    )
    await connector.connect()
    caplog.set_level(logging.WARNING, logger="shopfloor")
    try:
        first = by_name(await connector.read(connector.groups()[0]))
        second = by_name(await connector.read(connector.groups()[0]))
    finally:
        await connector.close()
    for got in (first, second):
        assert got["ok"] == (7.0, Quality.GOOD, None)
        assert got["missing_db"][1] == Quality.BAD_NOT_FOUND
        assert math.isnan(got["missing_db"][0])
        assert got["past_end"][1] == Quality.BAD_OUT_OF_RANGE
        assert got["bad_text"][1] == Quality.BAD_DECODING_ERROR
        assert got["bad_text"][2] is None
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("shopfloor")]
    assert len(ours) == 3  # once each, not once per poll
    assert any("DB7" in m for m in ours)
    assert any("claims 9" in m for m in ours)


async def test_writes_only_to_writable_tags(plc: Plc) -> None:
    await plc.start()
    connector = make(
        plc,
        [
            {"name": "setpoint", "address": "DB1.DBD20", "scale": 0.5, "writable": True},
            {"name": "recipe", "address": "DB1.S40.8", "writable": True},
            {"name": "locked", "address": "DB1.DBW60", "writable": False},
        ],
    )
    await connector.connect()
    try:
        await connector.write("acme/p1/oven/setpoint", 180.0)
        await connector.write("acme/p1/oven/recipe", "PLA-2")
        with pytest.raises(ConnectorError, match="read-only"):
            await connector.write("acme/p1/oven/locked", 3)
        with pytest.raises(ConnectorError, match="holds 8"):
            await connector.write("acme/p1/oven/recipe", "much too long")
    finally:
        await connector.close()
    assert struct.unpack_from(">f", plc.db1, 20)[0] == 360.0
    assert bytes(plc.db1[40:47]) == bytes([8, 5]) + b"PLA-2"
    assert bytes(plc.db1[60:62]) == b"\x00\x00"


async def test_unreachable_plc_is_unavailable() -> None:
    free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = free.sockets[0].getsockname()[1]
    free.close()
    await free.wait_closed()
    plc = Plc()
    plc.port = port
    connector = make(plc, [{"name": "x", "address": "MW0"}])
    with pytest.raises(ConnectorUnavailable):
        await connector.connect()


class Uplink:
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


async def test_agent_marks_tags_bad_when_the_plc_stops_and_recovers(plc: Plc) -> None:
    struct.pack_into(">f", plc.db1, 0, 55.5)
    await plc.start()
    connector = make(
        plc,
        [{"name": "temp", "address": "DB1.DBD0"}, {"name": "run", "address": "M0.0"}],
        period="100ms",
        timeout="500ms",
        max_silence="0s",
    )
    uplink = Uplink()
    agent = EdgeAgent([connector], uplink, retry=(0.05, 0.2))
    await agent.start()
    try:
        first = await asyncio.wait_for(uplink.wait_for(lambda b: len(b) == 2), 10)
        assert by_name(first)["temp"][:2] == (55.5, Quality.GOOD)
        await plc.stop()
        bad = await asyncio.wait_for(uplink.wait_for(lambda b: is_bad(b.quality).all()), 15)
        assert sorted(by_name(bad)) == ["run", "temp"]
        struct.pack_into(">f", plc.db1, 0, 56.5)
        await plc.start()
        back = await asyncio.wait_for(
            uplink.wait_for(lambda b: "acme/p1/oven/temp" in b.tags and is_good(b.quality).all()),
            15,
        )
        assert by_name(back)["temp"][0] == 56.5
    finally:
        await agent.stop()


def test_address_notation() -> None:
    a = parse_s7_address("DB12.DBX3.7")
    assert (a.area, a.db, a.byte, a.width, a.bit, a.size) == ("DB", 12, 3, "X", 7, 1)
    s = parse_s7_address("db1.s10.20")
    assert (s.width, s.byte, s.max_length, s.size) == ("S", 10, 20, 22)
    assert parse_s7_address("%QW4").area == "Q"
    assert parse_s7_address("AW4").area == "Q"
    assert parse_s7_address("EB1").area == "I"
    assert parse_s7_address("MD8").size == 4
    for bad in ("DB1.DBX2", "DB1.DBW0.1", "M0.8", "DB0.DBW0", "X1", "DB1.S0.300", "T5"):
        with pytest.raises(ValueError, match=r"S7 address|bit|numbered|254|\.bit"):
            parse_s7_address(bad)
    with pytest.raises(ValueError, match="data_type"):
        S7ConnectorConfig.model_validate(
            {
                "name": "c",
                "host": "h",
                "tags": [{"name": "x", "address": "MW0", "data_type": "float32"}],
            }
        )
    with pytest.raises(ValueError, match="bit"):
        S7ConnectorConfig.model_validate(
            {"name": "c", "host": "h", "tags": [{"name": "x", "address": "M0.1", "writable": True}]}
        )
