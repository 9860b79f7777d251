"""The edge agent forwards every batch, survives a dead device and logs transitions once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.base import HealthState
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import PointBatch, TagMeta


class FlakyDevice:
    """A device that answers, then goes dark for a few reads, then answers again."""

    def __init__(self, dark_reads: range) -> None:
        self.name = "press-1"
        self.poll_period_s = 0.001
        self.reads = 0
        self.dark = dark_reads
        self.closed = 0

    def tags(self) -> Sequence[TagMeta]:
        return [TagMeta("acme/p/a/l/c/press-1/temp", unit="degC")]

    async def connect(self) -> None:
        if self.reads in self.dark:
            self.reads += 1
            raise ConnectorUnavailable("no answer from 10.0.0.7:502")

    async def read(self) -> PointBatch:
        self.reads += 1
        if self.reads in self.dark:
            raise ConnectorUnavailable("no answer from 10.0.0.7:502")
        return PointBatch.from_points([("acme/p/a/l/c/press-1/temp", self.reads, 20.0, 0)])

    async def close(self) -> None:
        self.closed += 1


class RecordingUplink:
    def __init__(self) -> None:
        self.tags: list[TagMeta] = []
        self.batches: list[PointBatch] = []

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        self.tags.extend(tags)

    async def send(self, batch: PointBatch) -> None:
        self.batches.append(batch)


async def test_dead_device_is_retried_and_transitions_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.agent")
    device = FlakyDevice(dark_reads=range(5, 12))
    uplink = RecordingUplink()
    agent = EdgeAgent([device], uplink, retry=(0.001, 0.002))
    await agent.start()
    for _ in range(500):
        if len(uplink.batches) >= 20:
            break
        await asyncio.sleep(0.005)
    health = agent.health["press-1"]
    assert health.state is HealthState.ACTIVE
    await agent.stop()

    assert uplink.tags == list(device.tags())
    ts = [int(b.ts[0]) for b in uplink.batches]
    assert ts == sorted(ts)
    assert not set(ts) & set(range(5, 12)), "dark reads produce no values"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1
    assert health.state is HealthState.STOPPED
    assert device.closed >= 1


def test_connector_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        EdgeAgent([FlakyDevice(range(0)), FlakyDevice(range(0))], RecordingUplink())
