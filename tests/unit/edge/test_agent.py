"""The edge agent forwards sampled batches, survives a dead device and logs transitions once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.base import HealthState, PollGroup
from shopfloor.edge.mapping import TagSpec
from shopfloor.errors import ConnectorUnavailable
from shopfloor.model import PointBatch, Quality, TagMeta, is_bad

TEMP = "acme/p/a/l/c/press-1/temp"


class FlakyDevice:
    """A device that answers, then goes dark for a few reads, then answers again."""

    kind = "test"

    def __init__(self, dark_reads: range, name: str = "press-1") -> None:
        self.name = name
        self.reads = 0
        self.dark = dark_reads
        self.closed = 0

    def tags(self) -> Sequence[TagMeta]:
        return [TagMeta(TEMP, unit="degC")]

    def specs(self) -> Sequence[TagSpec]:
        return [TagSpec(TEMP, scale=0.1)]

    def groups(self) -> Sequence[PollGroup]:
        return [PollGroup("fast", 0.001, (TEMP,))]

    async def connect(self) -> None:
        if self.reads in self.dark:
            self.reads += 1
            raise ConnectorUnavailable("no answer from 10.0.0.7:502")

    async def read(self, group: PollGroup) -> PointBatch:
        self.reads += 1
        if self.reads in self.dark:
            raise ConnectorUnavailable("no answer from 10.0.0.7:502")
        return PointBatch.from_points([(TEMP, self.reads, 200 + self.reads, 0)])

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


async def _until(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling a fake's counter
            await asyncio.sleep(0.002)


async def test_dead_device_turns_bad_once_is_retried_and_transitions_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.agent")
    device = FlakyDevice(dark_reads=range(5, 12))
    uplink = RecordingUplink()
    agent = EdgeAgent([device], uplink, retry=(0.001, 0.002))
    await agent.start()
    await _until(lambda: len(uplink.batches) >= 15)
    health = agent.health["press-1"]
    assert health.state is HealthState.ACTIVE
    await agent.stop()

    assert uplink.tags == list(device.tags())
    points = PointBatch.concat(uplink.batches)
    bad = is_bad(points.quality)
    assert int(bad.sum()) == 1, "the outage is reported once, not on every retry"
    assert points.quality[bad][0] == Quality.BAD_COMMUNICATION_ERROR
    good = points.select(~bad)
    assert not set(good.ts.tolist()) & set(range(5, 12)), "dark reads produce no values"
    np.testing.assert_allclose(good.value, (200 + good.ts) * 0.1)  # scaled by the sampler
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1
    assert health.state is HealthState.STOPPED
    assert health.errors >= 2
    assert device.closed >= 2


class Broker:
    """A subscription that delivers two values, announces a new tag, then drops."""

    kind = "test"
    name = "broker"

    def __init__(self) -> None:
        self.sessions = 0

    def tags(self) -> Sequence[TagMeta]:
        return [TagMeta("x/flow")]

    def specs(self) -> Sequence[TagSpec]:
        return []

    async def connect(self) -> None:
        self.sessions += 1

    async def subscribe(self) -> AsyncIterator[PointBatch | Sequence[TagMeta]]:
        yield PointBatch.from_points([("x/flow", self.sessions * 10, 1.0, 0)])
        yield [TagMeta("x/new")]
        yield PointBatch.from_points([("x/new", self.sessions * 10 + 1, 2.0, 0)])
        raise ConnectorUnavailable("connection lost")

    async def close(self) -> None:
        pass


async def test_subscription_reconnects_and_announces_discovered_tags() -> None:
    broker = Broker()
    uplink = RecordingUplink()
    agent = EdgeAgent([broker], uplink, retry=(0.001, 0.001))
    await agent.start()
    await _until(lambda: broker.sessions >= 3)
    await agent.stop()
    assert [t.path for t in uplink.tags][:2] == ["x/flow", "x/new"]
    points = PointBatch.concat(uplink.batches)
    good = points.select(~is_bad(points.quality))
    assert {10, 11, 20, 21} <= set(good.ts.tolist())
    assert is_bad(points.quality).any(), "a lost subscription turns its tags Bad"


def test_connector_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        EdgeAgent([FlakyDevice(range(0)), FlakyDevice(range(0))], RecordingUplink())
