"""Modbus RTU over a serial line: a pymodbus serial server and the connector on two
pseudo-terminals joined by a small thread, like a null-modem cable.
"""

from __future__ import annotations

import asyncio
import math
import os
import pty
import select
import struct
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from shopfloor.config.connectors.modbus import ModbusConnectorConfig
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import Quality


class NullModem:
    """Two pty pairs whose master ends a thread copies into each other."""

    def __init__(self) -> None:
        self.m1, s1 = pty.openpty()
        self.m2, s2 = pty.openpty()
        self._slaves = (s1, s2)
        for fd in self._slaves:
            tty.setraw(fd)
        self.a, self.b = os.ttyname(s1), os.ttyname(s2)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="null-modem", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pairs = ((self.m1, self.m2), (self.m2, self.m1))
        while True:
            ready, _, _ = select.select([self.m1, self.m2, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for src, dst in pairs:
                if src in ready:
                    try:
                        os.write(dst, os.read(src, 4096))
                    except OSError:
                        return

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self.m1, self.m2, *self._slaves, self._stop_r, self._stop_w):
            os.close(fd)


@pytest.fixture
def modem() -> Iterator[NullModem]:
    line = NullModem()
    yield line
    line.close()


def registers(fmt: str, value: Any) -> list[int]:
    data = struct.pack(">" + fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


class Line:
    """Two RTU devices (units 3 and 4) on one serial server."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.server: ModbusSerialServer | None = None

    async def start(self) -> None:
        async def refuse(  # noqa: PLR0917 - pymodbus calls actions positionally
            function: int, start: int, address: int, count: int, regs: list[int], values: Any
        ) -> ExcCodes | None:
            return ExcCodes.ILLEGAL_ADDRESS if address == 50 else None

        unit3 = registers("f", 21.5) + registers("I", 123456) + [0] * 60
        unit4 = registers("h", -7) + [0] * 60
        self.server = ModbusSerialServer(
            [
                SimDevice(3, simdata=[SimData(0, values=unit3, datatype=DataType.REGISTERS)],
                          action=refuse),
                SimDevice(4, simdata=[SimData(0, values=unit4, datatype=DataType.REGISTERS)]),
            ],
            port=self.port,
            baudrate=115200,
            parity="N",  # Linux pseudo-terminals refuse parity settings (EINVAL)
        )  # fmt: skip
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest.fixture
async def line(modem: NullModem) -> AsyncIterator[Line]:
    server = Line(modem.a)
    await server.start()
    yield server
    await server.stop()


async def test_rtu_reads_two_units_and_reports_exceptions(line: Line, modem: NullModem) -> None:
    config = ModbusConnectorConfig.model_validate(
        {
            "name": "rtu",
            "transport": "rtu",
            "serial_port": modem.b,
            "baudrate": 115200,
            "parity": "N",
            "timeout": "300ms",
            "unit_id": 3,
            "tags": [
                {"name": "temp", "address": "hr:0"},
                {"name": "count", "address": "hr:2", "data_type": "uint32"},
                {"name": "refused", "address": "hr:50", "data_type": "uint16"},
                {"name": "delta", "address": "40001", "data_type": "int16", "unit_id": 4},
            ],
        }
    )
    connector = ModbusConnector.from_config(config)
    await connector.connect()
    try:
        batch = await connector.read(connector.groups()[0])
    finally:
        await connector.close()
    got = {
        str(p).rsplit("/", 1)[-1]: (float(v), int(q))
        for p, v, q in zip(batch.paths(), batch.value, batch.quality, strict=True)
    }
    assert got["temp"] == (21.5, Quality.GOOD)
    assert got["count"] == (123456.0, Quality.GOOD)
    assert got["delta"] == (-7.0, Quality.GOOD)
    assert math.isnan(got["refused"][0])
    assert got["refused"][1] == Quality.BAD_OUT_OF_RANGE


async def test_rtu_silent_line_is_unavailable(line: Line, modem: NullModem) -> None:
    config = ModbusConnectorConfig.model_validate(
        {
            "name": "rtu",
            "transport": "rtu",
            "serial_port": modem.b,
            "baudrate": 115200,
            "parity": "N",
            "timeout": "200ms",
            "retries": 1,
            "unit_id": 3,
            "tags": [{"name": "temp", "address": "hr:0"}],
        }
    )
    connector = ModbusConnector.from_config(config)
    await connector.connect()
    try:
        assert (await connector.read(connector.groups()[0])).value[0] == 21.5
        await line.stop()
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectorUnavailable, match="no answer"):
            await connector.read(connector.groups()[0])
        await line.start()
        await connector.close()
        await connector.connect()
        assert (await connector.read(connector.groups()[0])).value[0] == 21.5
    finally:
        await connector.close()


def test_missing_serial_port_is_unavailable() -> None:
    config = ModbusConnectorConfig.model_validate(
        {"name": "rtu", "transport": "rtu", "serial_port": "/dev/does-not-exist", "tags": []}
    )
    connector = ModbusConnector.from_config(config)
    with pytest.raises(ConnectorUnavailable):
        asyncio.run(connector.connect())
