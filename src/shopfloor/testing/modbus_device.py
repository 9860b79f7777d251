"""A writable Modbus TCP device on 127.0.0.1 for tests of writes to equipment.

A real pymodbus server (unit 1, holding registers and coils that accept writes) that
records the function code of every request, so a test can tell that a refused write
never reached the device, and reads its memory back with a client of its own.
"""

from __future__ import annotations

from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["WRITE_FUNCTIONS", "ModbusDevice"]

WRITE_FUNCTIONS = frozenset({5, 6, 15, 16})
"""Modbus function codes that write."""


class ModbusDevice:
    """Unit 1 with 64 holding registers (``hr`` sets their start values), 16 coils.

    Args:
        hr: start values of holding registers by address.
    """

    def __init__(self, hr: dict[int, int] | None = None) -> None:
        self._hr = [0] * 64
        for address, value in (hr or {}).items():
            self._hr[address] = value
        self.functions: list[int] = []
        self.server: ModbusTcpServer | None = None
        self.port = 0

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.functions.append(pdu.function_code)
        return pdu

    @property
    def writes(self) -> int:
        """Write requests received so far."""
        return sum(1 for f in self.functions if f in WRITE_FUNCTIONS)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (then :attr:`port`)."""
        unit = SimDevice(
            1,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=list(self._hr), datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * 4, datatype=DataType.REGISTERS)],
            ),
        )
        self.server = ModbusTcpServer([unit], address=("127.0.0.1", 0), trace_pdu=self._trace)
        await self.server.serve_forever(background=True)
        listener: Any = self.server.transport  # an asyncio.Server once listening
        self.port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the server and its connections. Idempotent."""
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None

    async def registers(self, address: int, count: int = 1) -> list[int]:
        """Holding registers, read with a client of its own."""
        probe = AsyncModbusTcpClient("127.0.0.1", port=self.port)
        await probe.connect()
        try:
            answer = await probe.read_holding_registers(address, count=count, device_id=1)
        finally:
            probe.close()
        return list(answer.registers)

    async def coil(self, address: int) -> bool:
        """One coil, read with a client of its own."""
        probe = AsyncModbusTcpClient("127.0.0.1", port=self.port)
        await probe.connect()
        try:
            answer = await probe.read_coils(address, count=1, device_id=1)
        finally:
            probe.close()
        return bool(answer.bits[0])
