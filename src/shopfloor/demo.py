"""Single-box composition root: the platform, plus the simulated factory when enabled.

``shopfloor demo`` and ``shopfloor server`` (with ``[simulator] enabled``) run here. The
simulated factory reaches the platform through a real edge agent and an in-process
uplink, the same interfaces a networked edge uses; with ``protocol`` set it is served
over Modbus TCP, OPC UA or Sparkplug B on 127.0.0.1 and read back by the real connector.

Shutdown is staged: stop reading inputs, finish HTTP requests in flight, commit every
accepted point, close the historian.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from shopfloor.config import ShopfloorConfig
from shopfloor.config.models import SimulatorSection, parse_duration_s
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.base import Connector
from shopfloor.edge.connectors.registry import create_connector
from shopfloor.edge.connectors.sim import SimulatorConnector
from shopfloor.edge.uplink.local import LocalUplink
from shopfloor.edge.writes import EquipmentWriter
from shopfloor.errors import ConfigError
from shopfloor.model import PointBatch, TagMeta, now_ns
from shopfloor.runtime.sdnotify import SystemdNotifier, systemd_notifier
from shopfloor.server.app import Server
from shopfloor.simulator import Plant
from shopfloor.testing.processes import free_port

logger = logging.getLogger(__name__)


class RateMeter:
    """Points per second over a sliding window of a few seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_s = window_s
        self._samples: list[tuple[float, int]] = []

    def rate(self, total: int) -> float:
        """Record the running ``total`` now and return the recent rate."""
        now = time.monotonic()
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.pop(0)
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


@contextlib.asynccontextmanager
async def simulated_factory(sim: SimulatorSection) -> AsyncIterator[list[Connector]]:
    """The connectors that read the simulated plant, with its protocol server if any."""
    plant = Plant.default(seed=sim.seed)
    period_s = parse_duration_s(sim.period)
    if sim.protocol == "direct":
        yield [
            SimulatorConnector(
                plant,
                period_s=period_s,
                speed=sim.speed,
                backfill_s=parse_duration_s(sim.backfill),
            )
        ]
        return
    if sim.protocol == "modbus":
        from shopfloor.simulator.serve.modbus import serve_plant

        server, configs = await serve_plant(plant, period_s=period_s, poll=sim.period)
        logger.info("simulated plant served over Modbus TCP on 127.0.0.1:%s", server.port)
        try:
            yield [create_connector(c) for c in configs]
        finally:
            await server.stop()
        return
    if sim.protocol == "opcua":
        from shopfloor.simulator.serve.opcua import serve_plant as serve_opcua

        opcua_server, section = await serve_opcua(plant, port=free_port(), period_s=period_s)
        logger.info("simulated plant served over OPC UA at %s", section.endpoint)
        try:
            yield [create_connector(section)]
        finally:
            await opcua_server.stop()
        return
    if sim.protocol == "sparkplug":
        async with _private_broker() as port:
            from shopfloor.simulator.serve.sparkplug import serve_plant as serve_sparkplug

            node, config = await serve_sparkplug(plant, port=port, period_s=period_s)
            logger.info("simulated plant published as Sparkplug B via 127.0.0.1:%d", port)
            try:
                yield [create_connector(config)]
            finally:
                await node.stop()
        return
    raise ConfigError(f"simulator protocol {sim.protocol!r} is not available yet")


@contextlib.asynccontextmanager
async def _private_broker() -> AsyncIterator[int]:
    """A Mosquitto of the demo's own, on a free port, removed afterwards."""
    from shopfloor.testing.mosquitto import Mosquitto, MosquittoNotFound

    with tempfile.TemporaryDirectory(prefix="shopfloor-broker-") as workdir:
        try:
            broker = Mosquitto(Path(workdir))
        except MosquittoNotFound as err:
            raise ConfigError(f"--protocol sparkplug needs an MQTT broker: {err}") from err
        await asyncio.to_thread(broker.start)
        try:
            yield broker.port
        finally:
            await asyncio.to_thread(broker.stop)


async def run_platform(
    config: ShopfloorConfig,
    *,
    status_line: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then shut down in stages.

    Args:
        config: validated configuration with resolved paths.
        status_line: called about twice a second with the figures for a status line.
        stop: set it to stop (tests); signals set it too.
        monotonic: the clock confirmations of writes expire by (tests move it).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as sources:
            notifier = await sources.enter_async_context(systemd_notifier())
            connectors = [create_connector(c) for c in config.connectors if c.enabled]
            if config.simulator.enabled:
                connectors += await sources.enter_async_context(simulated_factory(config.simulator))
            await _serve(
                config,
                connectors,
                stop=stop,
                status_line=status_line,
                monotonic=monotonic,
                notifier=notifier,
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(
    config: ShopfloorConfig,
    connectors: list[Connector],
    *,
    stop: asyncio.Event,
    status_line: Callable[[dict[str, Any]], None] | None,
    monotonic: Callable[[], float],
    notifier: SystemdNotifier,
) -> None:
    sim_clock = next((c for c in connectors if isinstance(c, SimulatorConnector)), None)
    meter = RateMeter()
    agent: EdgeAgent | None = None

    def figures() -> dict[str, Any]:
        return {
            "points_per_s": meter.rate(uplink.points_sent),
            "sim_time_ns": sim_clock.sim_now_ns() if sim_clock else None,
            "caught_up": sim_clock.caught_up if sim_clock else True,
        }

    def status() -> dict[str, Any]:
        return {"demo": figures()} if connectors else {}

    def health_rows() -> list[dict[str, Any]]:
        return [dataclasses.asdict(h) for h in agent.health.values()] if agent else []

    # windows of data (metrics) close by the simulated clock: a demo replaying yesterday
    # at 5x has no data at the wall clock's windows
    # the platform and the agent need each other (points one way, writes the other):
    # the uplink reaches the server, made below, through these late-bound calls
    async def ingest(batch: PointBatch) -> None:
        await server.ingest_local(batch)

    async def register(metas: Sequence[TagMeta]) -> None:
        await server.register_tags(metas)

    uplink = LocalUplink(ingest, register)
    agent = EdgeAgent(connectors, uplink) if connectors else None
    server = Server(
        config,
        status=status,
        connectors=health_rows,
        data_clock=sim_clock.sim_now_ns if sim_clock else now_ns,
        writers=[EquipmentWriter(agent)] if agent is not None else (),
        monotonic=monotonic,
    )
    await server.start()
    try:
        if agent is not None:
            await agent.start()
        ready = asyncio.Event()
        http = asyncio.create_task(server.serve(stop, ready=ready), name="platform/http")
        await asyncio.wait(
            {http, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if http.done():
            http.result()
        notifier.ready(f"serving {server.url}")
        while not stop.is_set() and not http.done():
            if status_line is not None:
                hist = server.historian.stats()
                status_line(
                    {
                        "url": server.url,
                        "stored": hist.points_written,
                        "pending": hist.points_pending,
                        "tags": hist.tags,
                        **figures(),
                    }
                )
            await asyncio.wait({http}, timeout=0.5)
        logger.info("shutting down: stopping inputs")
        notifier.stopping()
        if agent is not None:
            await agent.stop()
        stop.set()
        await http
    finally:
        if agent is not None:
            await agent.stop()
        logger.info("committing accepted points")
        await server.close()
        logger.info("stopped; %d points stored", server.historian.stats().points_written)
