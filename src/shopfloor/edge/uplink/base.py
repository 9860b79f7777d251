"""What the edge asks of a transport to the platform."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shopfloor.model import PointBatch, TagMeta


class Uplink(Protocol):
    """Sends metadata and batches to the platform; returns once the platform accepted them."""

    async def announce(self, tags: Sequence[TagMeta]) -> None:
        """Tell the platform about tags (units, ranges, asset paths) before their values."""

    async def send(self, batch: PointBatch) -> None:
        """Deliver one batch; raises when the platform did not accept it."""
