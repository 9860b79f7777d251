"""Injected clocks: tests move time instead of sleeping (house rule 5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for intervals, and a sleep that honours both."""

    def now_ns(self) -> int:
        """UTC wall-clock time in nanoseconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    """The real clock."""

    def now_ns(self) -> int:
        """UTC wall-clock time in nanoseconds."""
        return time.time_ns()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)


class DataClock(SystemClock):
    """The real clock for intervals and sleeps, with wall time from ``now_ns``: the time the
    plant's data is at (a demo replaying yesterday gives its simulator's clock)."""

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns

    def now_ns(self) -> int:
        """The data's time in UTC nanoseconds."""
        return self._now_ns()
