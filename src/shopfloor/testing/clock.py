"""A clock that tests move by hand (house rule 5: move time, do not sleep)."""

from __future__ import annotations

import asyncio


class ManualClock:
    """Wall and monotonic time that only :meth:`advance` moves.

    ``sleep`` returns once the clock has been advanced far enough, so a task sleeping
    on it wakes exactly when a test moves time past it.
    """

    def __init__(self, now_ns: int = 1_700_000_000 * 10**9) -> None:
        self._now_ns = now_ns
        self._start_ns = now_ns
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now_ns(self) -> int:
        """The wall time, UTC nanoseconds."""
        return self._now_ns

    def monotonic(self) -> float:
        """Seconds since the clock was made."""
        return (self._now_ns - self._start_ns) / 1e9

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now_ns += round(seconds * 1e9)
        waiting = []
        for until, woken in self._sleepers:
            if until <= self._now_ns:
                if not woken.done():
                    woken.set_result(None)
            else:
                waiting.append((until, woken))
        self._sleepers = waiting

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` on."""
        until = self._now_ns + round(seconds * 1e9)
        if until <= self._now_ns:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((until, woken))
        await woken
