"""Supervisor restarts, bounded channels and backoff: the plumbing every loop relies on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shopfloor.runtime.backoff import Backoff
from shopfloor.runtime.channels import Channel
from shopfloor.runtime.supervisor import Supervisor


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next_delay() == 1.0


def test_backoff_jitter_stays_within_bounds() -> None:
    b = Backoff(initial=10.0, maximum=10.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 100, "jitter must spread reconnects"


async def test_supervisor_restarts_a_crashing_task_and_logs_each_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"crash {runs}")
        done.set()
        await asyncio.Event().wait()

    async with Supervisor("test") as sup:
        sup.start("flaky", flaky, backoff=Backoff(initial=0.001, maximum=0.001))
        await asyncio.wait_for(done.wait(), 5)
        assert sup.states["flaky"].restarts == 2
        assert sup.states["flaky"].last_error == "RuntimeError: crash 2"
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert all(t.get_name() != "test/flaky" for t in asyncio.all_tasks())


async def test_supervisor_stop_cancels_and_waits() -> None:
    cleaned = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    sup = Supervisor("test")
    sup.start("forever", forever)
    await asyncio.sleep(0)
    await sup.stop()
    assert cleaned.is_set()


async def test_channel_fans_out_and_drops_oldest_for_a_slow_subscriber() -> None:
    channel: Channel[int] = Channel("test", maxsize=3)
    async with channel.subscribe("fast") as fast, channel.subscribe("slow") as slow:
        for i in range(5):
            channel.publish(i)
            assert await fast.get() == i
        assert slow.dropped == 2
        assert [await slow.get() for _ in range(3)] == [2, 3, 4]
        assert channel.subscriber_count == 2
    assert channel.subscriber_count == 0
    channel.publish(99)  # no subscribers: nothing waits, nothing fails
    assert channel.published == 6
