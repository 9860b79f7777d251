"""Modbus registers per second through the connector, beside a bare pymodbus client loop.

A pymodbus TCP server runs in a child process on 127.0.0.1 with ``--tags`` float32
values in contiguous holding registers. In the same run, alternating round by round:

* bare: a plain ``AsyncModbusTcpClient`` reading the same registers in 125-register
  requests and nothing else (the floor any Modbus client on pymodbus pays);
* bare, connector's plan: the bare loop sending exactly the connector's requests (a
  float32 never straddles two requests, so 62 values, 124 registers, fit one request);
* connector: ``ModbusConnector.read`` of one poll group holding every tag (coalesced
  requests, decoding to float64, a PointBatch with timestamps and qualities);
* connector + sampler: the same, then the shared Sampler's scaling and
  report-by-exception, as the edge agent runs it.

Registers/s counts the registers that carry tag values (2 per float32 tag). The ratio
column is each row's median against the bare loop's median (aim: ≥ 0.8).

Run: ``.venv/bin/python bench/connectors_modbus.py [--tags 1000] [--rounds 24] [--polls 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient

from shopfloor.config.connectors.modbus import ModbusConnectorConfig
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.sampling import Sampler


def _serve(port: int, registers: list[int], ready: mp.synchronize.Event) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def run() -> None:
        device = SimDevice(1, simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)])
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _time_polls(poll: Callable[[], Awaitable[object]], polls: int) -> float:
    start = time.perf_counter()
    for _ in range(polls):
        await poll()
    return (time.perf_counter() - start) / polls


async def _bench(port: int, tags: int, rounds: int, polls: int) -> dict[str, list[float]]:
    total = 2 * tags
    bare_client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await bare_client.connect()

    async def bare() -> None:
        for start in range(0, total, 125):
            answer = await bare_client.read_holding_registers(
                start, count=min(125, total - start), device_id=1
            )
            assert not answer.isError()

    async def bare_planned() -> None:
        for _unit, _table, start, count in plan:
            answer = await bare_client.read_holding_registers(start, count=count, device_id=1)
            assert not answer.isError()

    config = ModbusConnectorConfig.model_validate(
        {
            "name": "bench",
            "host": "127.0.0.1",
            "port": port,
            "tags": [
                {"name": f"t{i}", "address": f"hr:{2 * i}", "scale": 0.5} for i in range(tags)
            ],
        }
    )
    connector = ModbusConnector(config)
    await connector.connect()
    (group,) = connector.groups()
    plan = connector.plan(group)
    sampler = Sampler(connector.specs())

    async def through_connector() -> None:
        await connector.read(group)

    async def through_sampler() -> None:
        sampler.process(await connector.read(group))

    check = await connector.read(group)
    if check.value[3] != 3 * 2.5 or int(check.quality.max()) != 0:  # raw, unscaled
        raise SystemExit("the connector read wrong values")
    runs = {
        "bare": bare,
        "bare, connector's plan": bare_planned,
        "connector": through_connector,
        "connector + sampler": through_sampler,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm up
        await _time_polls(run, 3)
    names = list(runs)
    for r in range(rounds):  # rotate the order so load from elsewhere hits every path alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(await _time_polls(runs[name], polls))
    requests = len(plan)
    bare_client.close()
    await connector.close()
    times["_requests"] = [float(requests), float(-(-total // 125))]
    return times


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    registers: list[int] = []
    for i in range(args.tags):
        data = struct.pack(">f", i * 2.5)
        registers += [int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big")]
    port = _free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_serve, args=(port, registers, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the Modbus server did not start")
        times = asyncio.run(_bench(port, args.tags, args.rounds, args.polls))
    finally:
        server.terminate()
        server.join(10)
    ours, bare_requests = times.pop("_requests")
    regs = 2 * args.tags
    base = statistics.median(times["bare"])
    print(
        f"Modbus TCP, {args.tags} float32 tags in {regs} contiguous holding registers, "
        f"server in another process on 127.0.0.1; {args.rounds} rounds × {args.polls} polls"
    )
    print(f"requests per poll: bare {bare_requests:.0f}, connector {ours:.0f} (no value split)")
    print(f"{'path':<26}{'median ms/poll':>16}{'registers/s':>14}{'tags/s':>12}{'× bare':>8}")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(
            f"{name:<26}{med * 1000:>16.2f}{regs / med:>14,.0f}{args.tags / med:>12,.0f}"
            f"{base / med:>8.2f}"
        )


if __name__ == "__main__":
    main()
