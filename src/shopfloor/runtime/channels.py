"""A bounded publish/subscribe channel with a named overflow policy.

Every subscriber has its own bounded queue. A slow subscriber (a websocket on a poor
Wi-Fi link) never slows the publisher or the other subscribers: when its queue is full
the oldest item is dropped, the drop is counted, and the first drop is logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's bounded queue. Iterate it, or call :meth:`get`."""

    def __init__(self, maxsize: int, name: str) -> None:
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.name = name
        self.dropped = 0

    def _offer(self, item: T) -> None:
        """Put ``item``, dropping the oldest queued item if full (policy: drop-oldest)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("subscriber %s is too slow: dropping oldest items", self.name)
        self._queue.put_nowait(item)

    async def get(self) -> T:
        """Wait for the next item."""
        return await self._queue.get()

    def drain(self) -> list[T]:
        """Take every waiting item without waiting (possibly none)."""
        items: list[T] = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            yield await self._queue.get()


class Channel(Generic[T]):
    """Fan-out of items to any number of subscribers, each bounded (drop-oldest).

    Args:
        name: used in log lines.
        maxsize: the most items one subscriber may have waiting.
    """

    def __init__(self, name: str, maxsize: int = 256) -> None:
        self.name = name
        self.maxsize = maxsize
        self._subscribers: set[Subscription[T]] = set()
        self.published = 0

    def publish(self, item: T) -> None:
        """Hand ``item`` to every subscriber without waiting."""
        self.published += 1
        for sub in self._subscribers:
            sub._offer(item)

    @asynccontextmanager
    async def subscribe(self, name: str = "subscriber") -> AsyncIterator[Subscription[T]]:
        """Subscribe for the duration of the ``async with`` block."""
        sub: Subscription[T] = Subscription(self.maxsize, f"{self.name}/{name}")
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are attached now."""
        return len(self._subscribers)

    @property
    def dropped(self) -> int:
        """Items dropped across the current subscribers."""
        return sum(s.dropped for s in self._subscribers)
