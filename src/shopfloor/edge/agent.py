"""The edge composition root: poll every connector and forward its batches to the uplink.

One supervised loop per connector. A device that stops answering is logged once, its
health turns degraded, and the loop reconnects with backoff; recovery is logged once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence

from shopfloor.edge.connectors.base import Connector, ConnectorHealth, HealthState
from shopfloor.edge.uplink.base import Uplink
from shopfloor.errors import ConnectorError
from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.runtime.supervisor import Supervisor

logger = logging.getLogger(__name__)


class EdgeAgent:
    """Runs connectors and forwards their points.

    Args:
        connectors: the sources to poll; names must be unique.
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
        self._connectors = list(connectors)
        self._uplink = uplink
        self._clock = clock or SystemClock()
        self._retry = retry
        self._supervisor = Supervisor("edge")
        self.health = {c.name: ConnectorHealth(name=c.name) for c in connectors}

    async def start(self) -> None:
        """Announce every connector's tags, then start one poll loop per connector."""
        for connector in self._connectors:
            await self._uplink.announce(connector.tags())
            self._supervisor.start(connector.name, functools.partial(self._poll, connector))

    async def _poll(self, connector: Connector) -> None:
        health = self.health[connector.name]
        backoff = Backoff(initial=self._retry[0], maximum=self._retry[1])
        try:
            while True:
                try:
                    await connector.connect()
                    await self._read_forever(connector, health, backoff)
                except ConnectorError as err:
                    if health.state is not HealthState.DEGRADED:
                        logger.warning("connector %s unavailable: %s", connector.name, err)
                    health.state = HealthState.DEGRADED
                    health.last_error = str(err)
                    await connector.close()
                    await self._clock.sleep(backoff.next_delay())
        finally:
            health.state = HealthState.STOPPED
            await connector.close()

    async def _read_forever(
        self, connector: Connector, health: ConnectorHealth, backoff: Backoff
    ) -> None:
        next_at = self._clock.monotonic()
        while True:
            started = time.perf_counter()
            batch = await connector.read()
            health.last_read_ms = (time.perf_counter() - started) * 1000
            if health.state is HealthState.DEGRADED:
                logger.info("connector %s recovered", connector.name)
            health.state = HealthState.ACTIVE
            backoff.reset()
            health.reads += 1
            health.points += len(batch)
            if len(batch):
                await self._uplink.send(batch)
            next_at += connector.poll_period_s
            delay = next_at - self._clock.monotonic()
            if delay < 0:  # fell behind: do not burst to catch up, keep the period
                next_at = self._clock.monotonic()
                delay = 0.0
            await self._clock.sleep(delay)

    async def stop(self) -> None:
        """Stop polling (inputs first in a staged shutdown)."""
        await self._supervisor.stop()
