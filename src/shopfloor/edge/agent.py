"""The edge composition root: run every connector, sample, and forward to the uplink.

One supervised loop per poll group (or per subscription). A device that stops answering
is logged once, its tags turn Bad once, its health turns degraded, and the loop
reconnects with capped, jittered backoff; recovery is logged once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Sequence

from shopfloor.config.durations import parse_duration_s
from shopfloor.config.edge import EdgeConfig
from shopfloor.edge.connectors.base import (
    Connector,
    ConnectorHealth,
    HealthState,
    Pollable,
    PollGroup,
    Subscribable,
)
from shopfloor.edge.connectors.registry import create_connector
from shopfloor.edge.health import EdgeMonitor
from shopfloor.edge.sampling import Sampler
from shopfloor.edge.uplink.base import Uplink
from shopfloor.edge.uplink.forwarder import build_outbox_uplink
from shopfloor.errors import ConnectorError
from shopfloor.model import PointBatch, Quality
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.sdnotify import systemd_notifier
from shopfloor.runtime.supervisor import Supervisor

logger = logging.getLogger(__name__)


class _Link:
    """One connector with its sampler, health and connection lock."""

    def __init__(self, connector: Connector, *, retry: tuple[float, float]) -> None:
        self.connector = connector
        self.sampler = Sampler(connector.specs())
        self.health = ConnectorHealth(name=connector.name, kind=connector.kind)
        self.lock = asyncio.Lock()
        self.connected = False
        self.retry = retry
        self.rate_window: list[float] = []

    def failed(self, err: Exception) -> None:
        self.health.errors += 1
        self.health.last_error = f"{type(err).__name__}: {err}"
        if self.health.state is not HealthState.DEGRADED:
            logger.warning("connector %s unavailable: %s", self.connector.name, err)
        self.health.state = HealthState.DEGRADED

    def succeeded(self, points: int, elapsed_s: float) -> None:
        if self.health.state is HealthState.DEGRADED:
            logger.info("connector %s recovered", self.connector.name)
        self.health.state = HealthState.ACTIVE
        self.health.reads += 1
        self.health.points += points
        self.health.last_read_ms = elapsed_s * 1000
        now = time.monotonic()
        self.rate_window.append(now)
        while self.rate_window and now - self.rate_window[0] > 10:
            self.rate_window.pop(0)
        span = now - self.rate_window[0]
        self.health.reads_per_s = (len(self.rate_window) - 1) / span if span > 0 else 0.0


class EdgeAgent:
    """Runs connectors and forwards their sampled points.

    Args:
        connectors: the sources; names must be unique.
        uplink: where batches go.
        clock: injected so tests can move time.
        retry: the reconnect schedule's first and longest delay in seconds.
    """

    def __init__(
        self,
        connectors: Sequence[Connector],
        uplink: Uplink,
        *,
        clock: Clock | None = None,
        retry: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        names = [c.name for c in connectors]
        if len(set(names)) != len(names):
            raise ValueError(f"connector names must be unique: {names}")
        self._links = [_Link(c, retry=retry) for c in connectors]
        self._uplink = uplink
        self._clock = clock or SystemClock()
        self._supervisor = Supervisor("edge")

    @property
    def health(self) -> dict[str, ConnectorHealth]:
        """Health of every connector by name."""
        return {link.connector.name: link.health for link in self._links}

    @property
    def connectors(self) -> list[Connector]:
        """The connectors this agent runs, in their configured order."""
        return [link.connector for link in self._links]

    async def connected(self, name: str) -> Connector:
        """The connector called ``name``, connected through the lock its loops share, for a
        request outside the schedule (a write to equipment, its read-back).

        Raises:
            KeyError: no connector has that name.
            ConnectorUnavailable: the device cannot be reached.
        """
        link = next((k for k in self._links if k.connector.name == name), None)
        if link is None:
            raise KeyError(name)
        await self._ensure_connected(link)
        return link.connector

    async def start(self) -> None:
        """Announce every connector's tags, then start its loops."""
        for link in self._links:
            connector = link.connector
            await self._uplink.announce(connector.tags())
            if isinstance(connector, Pollable):
                for group in connector.groups():
                    self._supervisor.start(
                        f"{connector.name}/{group.name}",
                        functools.partial(self._poll, link, connector, group),
                    )
            elif isinstance(connector, Subscribable):
                self._supervisor.start(
                    connector.name, functools.partial(self._subscribe, link, connector)
                )
            else:
                raise TypeError(f"connector {connector.name} is neither pollable nor subscribable")

    async def stop(self) -> None:
        """Stop every loop and close every connector (inputs first in a staged shutdown)."""
        await self._supervisor.stop()
        for link in self._links:
            link.health.state = HealthState.STOPPED
            await self._close(link)

    # ---------------------------------------------------------------- helpers
    async def _ensure_connected(self, link: _Link) -> None:
        async with link.lock:  # poll groups share one connection
            if not link.connected:
                await link.connector.connect()
                link.connected = True

    async def _close(self, link: _Link) -> None:
        async with link.lock:
            if link.connected:
                link.health.reconnects += 1
            link.connected = False
            await link.connector.close()

    async def _forward(self, link: _Link, batch: PointBatch) -> None:
        reported = link.sampler.process(batch)
        if len(reported):
            await self._uplink.send(reported)

    async def _fail(self, link: _Link, err: Exception, paths: Sequence[str]) -> None:
        link.failed(err)
        bad = link.sampler.mark_bad(
            paths, ts_ns=self._clock.now_ns(), quality=Quality.BAD_COMMUNICATION_ERROR
        )
        if len(bad):
            await self._uplink.send(bad)
        await self._close(link)

    # ------------------------------------------------------------------ loops
    async def _poll(self, link: _Link, connector: Pollable, group: PollGroup) -> None:
        backoff = Backoff(initial=link.retry[0], maximum=link.retry[1])
        next_at = self._clock.monotonic()
        while True:
            try:
                await self._ensure_connected(link)
                started = time.perf_counter()
                batch = await connector.read(group)
                link.succeeded(len(batch), time.perf_counter() - started)
                backoff.reset()
                await self._forward(link, batch)
            except ConnectorError as err:
                await self._fail(link, err, group.paths)
                await self._clock.sleep(backoff.next_delay())
                next_at = self._clock.monotonic()
                continue
            next_at += group.period_s
            delay = next_at - self._clock.monotonic()
            if delay < 0:  # fell behind: keep the period rather than burst to catch up
                next_at = self._clock.monotonic()
                delay = 0.0
            await self._clock.sleep(delay)

    async def _subscribe(self, link: _Link, connector: Subscribable) -> None:
        backoff = Backoff(initial=link.retry[0], maximum=link.retry[1])
        while True:
            try:
                await self._ensure_connected(link)
                async for item in connector.subscribe():
                    if isinstance(item, PointBatch):
                        link.succeeded(len(item), 0.0)
                        backoff.reset()
                        await self._forward(link, item)
                    else:  # newly discovered tags: the sampler learns their scaling too
                        link.sampler.add(connector.specs())
                        await self._uplink.announce(item)
                raise ConnectorError("subscription ended")
            except ConnectorError as err:
                # every tag the subscription ever delivered, discovered ones included
                await self._fail(link, err, link.sampler.paths())
                await self._clock.sleep(backoff.next_delay())


async def run_edge(config: EdgeConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run an edge until SIGINT/SIGTERM (or ``stop``).

    Connectors → sampler → durable outbox (every value is on disk before anything else)
    → sender → platform; plus the edge's own ``/healthz`` and ``/metrics``.

    Raises:
        OutboxFailed: the outbox could no longer promise durability (an fsync failed):
            the edge stops rather than pretend (fail-stop).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    connectors = [create_connector(c) for c in config.connectors if c.enabled]
    uplink = build_outbox_uplink(config)
    agent = EdgeAgent(connectors, uplink)
    if config.uplink.transport == "mqtt":
        _serve_commands(agent, uplink.transport)
    await uplink.start()
    monitor = EdgeMonitor(
        uplink,
        put_status=uplink.put_status,
        connectors=lambda: [dataclasses.asdict(h) for h in agent.health.values()],
        host=config.health.host,
        port=config.health.port if config.health.enabled else None,
        interval_s=parse_duration_s(config.health.status_interval),
    )
    logger.info(
        "edge %s: %d connector(s), outbox %s, sending to %s",
        config.edge.id,
        len(connectors),
        config.outbox_dir,
        config.uplink.target,
    )
    try:
        async with systemd_notifier() as notifier:
            await monitor.start()
            starting = asyncio.create_task(agent.start(), name="edge/start")
            stopping = asyncio.create_task(stop.wait(), name="edge/stop-wait")
            failing = asyncio.create_task(uplink.wait_failed(), name="edge/failed-wait")
            await asyncio.wait({starting, stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done() and not stopping.done() and not failing.done():
                starting.result()
                notifier.ready(f"edge {config.edge.id}: {len(connectors)} connector(s)")
                await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
            for task in (starting, stopping, failing):
                task.cancel()
    finally:
        logger.info("edge %s stopping", config.edge.id)
        await agent.stop()
        await monitor.stop()
        await uplink.close(drain_s=2)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        logger.info("edge %s stopped", config.edge.id)
    if uplink.failed is not None:
        raise uplink.failed


def _serve_commands(agent: EdgeAgent, transport: object) -> None:
    """Let the platform read and write through the connectors that allow writes, over the
    MQTT uplink (docs/writes.md); over HTTP the platform cannot reach the edge."""
    from shopfloor.edge.commands import CommandHandler, writables
    from shopfloor.edge.uplink.mqtt import MqttTransport
    from shopfloor.edge.writes import EquipmentWriter

    writer = EquipmentWriter(agent)
    if not writer.connectors() or not isinstance(transport, MqttTransport):
        return
    transport.serve_commands(CommandHandler(writer).handle, writables=writables(writer))
    logger.info("platform commands accepted for writes through %s", ", ".join(writer.connectors()))
