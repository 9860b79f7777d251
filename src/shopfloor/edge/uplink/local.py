"""An in-process uplink for single-box installs and the demo.

The edge never imports the server: the composition root hands this uplink the two
callables that accept tags and batches, so the demo runs both through the same interfaces
a networked install uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from shopfloor.model import PointBatch, TagMeta


class LocalUplink:
    """Delivers to callables in the same process."""

    def __init__(
        self,
        on_batch: Callable[[PointBatch], Awaitable[object]],
        on_tags: Callable[[Sequence[TagMeta]], Awaitable[None]],
    ) -> None:
        self._on_batch = on_batch
        self._on_tags = on_tags
        self.batches_sent = 0
        self.points_sent = 0

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        """Hand tag metadata to the platform."""
        await self._on_tags(tags)

    async def send(self, batch: PointBatch) -> None:
        """Hand a batch to the platform and wait until it is accepted."""
        await self._on_batch(batch)
        self.batches_sent += 1
        self.points_sent += len(batch)
