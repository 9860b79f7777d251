"""The simulated plant as a Modbus TCP server, refreshed in real time.

Register map (every machine of the layout is its own device):

* unit id: the machine's position in the layout, from 1 (``cnc-01`` is unit 1 in the
  shipped plant, ``mtr-main`` unit 10);
* the machine's *k*-th tag (in the plant's tag order) sits at holding registers
  ``hr:2k`` and ``hr:2k+1`` (input registers mirror them);
* measurements are float32, counters (integer tags without states) uint32, states and
  other enumerations uint16 in the first register of their pair, booleans uint16 0/1;
* everything is big-endian (ABCD), read-only (a write is refused with exception 2)
  except the set points (:meth:`Plant.setpoints`, ``spindle_speed_sp`` of the CNC mills):
  a float32 written to both registers of one is the machine's new set point from the
  next sample on (clamped to its range, as a drive would); it reads back at once.

A tag whose simulated sensor has dropped out reads NaN (floats) or keeps its last value
(integers): Modbus has no quality, as with real devices. :func:`register_map` lists the
map of any plant; :meth:`PlantModbusServer.connector_configs` turns it into connector
configuration that reads the plant back.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from shopfloor.config.connectors.modbus import ModbusConnectorConfig, ModbusTagConfig
from shopfloor.model import DataType, PointBatch
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.supervisor import Supervisor
from shopfloor.simulator.plant import Plant

logger = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]
WireType = Literal["float32", "uint32", "uint16", "bool"]


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """Where one plant tag is served.

    Attributes:
        path: the tag's ISA-95 path (the same as in the plant).
        machine: the machine id.
        unit_id: the Modbus unit id of the machine.
        register: the first holding register (0-based).
        data_type: how the value is encoded.
    """

    path: str
    machine: str
    unit_id: int
    register: int
    data_type: WireType

    @property
    def address(self) -> str:
        """The address in the connector's notation, e.g. ``hr:4``."""
        return f"hr:{self.register}"


def register_map(plant: Plant) -> list[RegisterEntry]:
    """Every tag of ``plant`` with its unit id, register and wire type."""
    entries: list[RegisterEntry] = []
    metas = plant.tags()
    for unit, machine in enumerate(plant.layout.machines, start=1):
        prefix = plant.layout.equipment_path(machine)
        k = 0
        for meta in metas:
            if meta.asset != prefix:
                continue
            wire: WireType
            if meta.data_type is DataType.BOOL:
                wire = "bool"
            elif meta.data_type is DataType.INT:
                wire = "uint16" if meta.states else "uint32"
            else:
                wire = "float32"
            entries.append(RegisterEntry(meta.path, machine.id, unit, 2 * k, wire))
            k += 1
    return entries


class PlantModbusServer:
    """Serves a :class:`Plant` over Modbus TCP.

    Args:
        plant: the simulated factory; this server advances it in real time.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        period_s: how often the plant is sampled and the registers refreshed.
        clock: wall clock for the samples (injected by tests).
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        period_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.plant = plant
        self.host = host
        self.port = port
        self.period_s = period_s
        self._period_ns = max(1, round(period_s * 1e9))
        self._clock = clock or SystemClock()
        self.entries = register_map(plant)
        self._position = {p: i for i, p in enumerate(t.path for t in plant.tags())}
        self._units = sorted({e.unit_id for e in self.entries})
        self._memory: dict[int, list[int]] = {
            u: [0] * (2 * sum(1 for e in self.entries if e.unit_id == u)) for u in self._units
        }
        self._last = np.zeros(len(self._position))
        setpoints = plant.setpoints()
        self._writable: dict[tuple[int, int], RegisterEntry] = {
            (e.unit_id, e.register): e for e in self.entries if e.path in setpoints
        }
        self._server: ModbusTcpServer | None = None
        self._supervisor: Supervisor | None = None
        self.last_ts_ns: int | None = None

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, refresh: bool = True) -> None:
        """Fill the registers with the plant's present values, listen, and keep refreshing.

        Args:
            refresh: keep advancing the plant every ``period_s``; tests that step time
                themselves through :meth:`refresh` pass False.
        """
        self.refresh(self._clock.now_ns())
        devices = [
            SimDevice(
                unit,
                simdata=[
                    SimData(
                        0,
                        values=list(self._memory[unit]),
                        datatype=SimType.REGISTERS,
                        # read-only but for the set points: _serve refuses other writes
                        readonly=not any(u == unit for u, _ in self._writable),
                    )
                ],
                action=functools.partial(self._serve, unit),
            )
            for unit in self._units
        ]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        listener: Any = self._server.transport  # an asyncio.Server once listening
        self.port = int(listener.sockets[0].getsockname()[1])
        logger.info("simulated plant served over Modbus TCP on %s:%s", self.host, self.port)
        if refresh:
            self._supervisor = Supervisor("modbus-plant")
            self._supervisor.start("refresh", self._run)

    async def stop(self) -> None:
        """Stop refreshing and close the server with its connections."""
        if self._supervisor is not None:
            await self._supervisor.stop()
            self._supervisor = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def _run(self) -> None:
        while True:
            now = self._clock.now_ns()
            await self._clock.sleep((self._period_ns - now % self._period_ns) / 1e9)
            self.refresh(self._clock.now_ns())

    # ---------------------------------------------------------------- values
    def refresh(self, now_ns: int) -> PointBatch:
        """Sample the plant at ``now_ns`` (rounded down to the period) into the registers.

        Returns the plant's own batch, so tests can compare it with what clients read.
        A time not after the last sample returns an empty batch and changes nothing.
        """
        t = now_ns - now_ns % self._period_ns
        if self.plant.now_ns is not None and t < self.plant.now_ns:
            return PointBatch.empty()
        batch = self.plant.advance(start_ns=t, steps=1, period_ns=self._period_ns)
        value = np.full(len(self._position), np.nan)
        idx = np.fromiter((self._position[p] for p in batch.tags), dtype=np.intp)
        value[idx[batch.tag_index]] = batch.value
        held = np.where(np.isnan(value), self._last, value)  # integers hold through a dropout
        self._last = held
        for unit in self._units:
            self._memory[unit] = self._encode(unit, value, held)
        self.last_ts_ns = t
        return batch

    def _encode(self, unit: int, value: Float64Array, held: Float64Array) -> list[int]:
        regs: list[int] = []
        for e in self.entries:
            if e.unit_id != unit:
                continue
            at = self._position[e.path]
            if e.data_type == "float32":
                regs.extend(np.array([value[at]], dtype=">f4").view(">u2").tolist())
                continue
            v = float(held[at])
            top = 2**32 - 1 if e.data_type == "uint32" else 0xFFFF
            n = 0 if np.isnan(v) else int(min(max(round(v), 0), top))
            regs.extend([n >> 16, n & 0xFFFF] if e.data_type == "uint32" else [n, 0])
        return regs

    async def _serve(  # noqa: PLR0917 - pymodbus calls actions positionally
        self,
        unit: int,
        function: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before each access: copy the present values in, and take a
        write of a whole set point (any other write is refused with exception 2)."""
        memory = self._memory[unit]
        if values is not None:
            entry = self._writable.get((unit, address - start_address))
            if entry is None or count != 2 or len(values) != 2:
                return ExcCodes.ILLEGAL_ADDRESS
            words = np.array([int(v) for v in values], dtype=">u2")
            value = float(words.view(">f4")[0])
            try:
                held = self.plant.write_setpoint(entry.path, value)
            except ValueError:
                return ExcCodes.ILLEGAL_VALUE
            encoded = np.array([held], dtype=">f4").view(">u2").tolist()
            memory[entry.register : entry.register + 2] = encoded
            values[:] = encoded  # what the registers now hold (pymodbus copies them in)
        registers[: len(memory)] = memory
        return None

    # ---------------------------------------------------------- configuration
    def connector_configs(
        self,
        *,
        period: str = "1s",
        timeout: str = "2s",
        host: str | None = None,
        allow_writes: bool = False,
    ) -> list[ModbusConnectorConfig]:
        """One Modbus connector per machine that reads the plant back, paths unchanged.

        Call after :meth:`start` when the server was given port 0.

        Args:
            period: poll period.
            timeout: per-request timeout.
            host: the address the connectors dial (default: where the server listens).
            allow_writes: configure the set points ``writable = true`` and their
                connectors ``allow_writes = true`` (the platform still keeps writes off
                until an admin enables them).
        """
        metas = {m.path: m for m in self.plant.tags()}
        setpoints = self.plant.setpoints() if allow_writes else {}
        configs: list[ModbusConnectorConfig] = []
        for machine in self.plant.layout.machines:
            asset = self.plant.layout.equipment_path(machine)
            entries = [e for e in self.entries if e.machine == machine.id]
            tags = []
            for e in entries:
                meta = metas[e.path]
                tags.append(
                    ModbusTagConfig(
                        name=meta.name,
                        address=e.address,
                        data_type="bool" if e.data_type == "bool" else e.data_type,
                        unit=meta.unit,
                        description=meta.description,
                        eng_low=meta.eng_low,
                        eng_high=meta.eng_high,
                        states={str(k): v for k, v in meta.states} or None,
                        writable=e.path in setpoints,
                    )
                )
            configs.append(
                ModbusConnectorConfig(
                    name=f"modbus-{machine.id}",
                    host=host or self.host,
                    port=self.port,
                    unit_id=entries[0].unit_id,
                    asset=asset,
                    period=period,
                    timeout=timeout,
                    tags=tags,
                    allow_writes=any(e.path in setpoints for e in entries),
                )
            )
        return configs


async def serve_plant(
    plant: Plant,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    period_s: float = 1.0,
    poll: str = "1s",
    allow_writes: bool = False,
) -> tuple[PlantModbusServer, list[ModbusConnectorConfig]]:
    """Start serving ``plant`` and return the server with the connectors that read it
    (and may write its set points, with ``allow_writes``).

    The caller owns the server: ``await server.stop()`` when done.
    """
    server = PlantModbusServer(plant, host=host, port=port, period_s=period_s)
    await server.start()
    return server, server.connector_configs(period=poll, allow_writes=allow_writes)
