"""Receive batches from any source, check them, store them, then hand them to live readers.

The order matters: a batch is published on the live channel only after the historian has
accepted it, so a dashboard never shows a value that a history query cannot find. A batch
is checked whole and rejected whole: either every point of it is stored or none is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch, now_ns
from shopfloor.model.tags import validate_path
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.base import Historian

logger = logging.getLogger(__name__)

__all__ = ["EARLIEST_NS", "IngestResult", "IngestStats", "Ingestor"]

EARLIEST_NS = 946_684_800_000_000_000
"""2000-01-01T00:00:00Z: anything earlier is a clock that was never set, not history."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one batch.

    Attributes:
        accepted: how many points were stored and published.
    """

    accepted: int


@dataclass(frozen=True, slots=True)
class IngestStats:
    """Counters for the health endpoint.

    Attributes:
        batches: batches accepted.
        points_accepted: points stored.
        batches_rejected: batches refused as malformed.
        points_rejected: points in the refused batches.
    """

    batches: int
    points_accepted: int
    batches_rejected: int
    points_rejected: int


class Ingestor:
    """Validates batches, writes them to the historian and publishes them live.

    Args:
        historian: where points are stored.
        live: the channel that dashboards, rules and analytics read.
        max_future_s: how far ahead of the server's clock a timestamp may be (edge clocks
            drift; a point an hour in the future is a wrong clock, not a forecast).
        clock: the wall clock in UTC nanoseconds (injected so tests control "now").
    """

    def __init__(
        self,
        historian: Historian,
        live: Channel[PointBatch],
        *,
        max_future_s: float = 300,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self._historian = historian
        self._live = live
        self._max_future_ns = int(max_future_s * 1e9)
        self._clock = clock
        self._batches = 0
        self._points = 0
        self._batches_rejected = 0
        self._points_rejected = 0
        self._known_good: set[str] = set()

    async def ingest(self, batch: PointBatch, *, source: str) -> IngestResult:
        """Check, store and publish ``batch``.

        Args:
            batch: the points.
            source: who sent it (an edge name or a client address), for log lines.

        Raises:
            PayloadError: the batch is malformed; nothing of it was stored. ``field`` is
                ``tags[i]`` for a bad path or ``ts`` for timestamps out of range.
        """
        try:
            self._validate(batch)
        except PayloadError as err:
            self._batches_rejected += 1
            self._points_rejected += len(batch)
            if self._batches_rejected == 1:
                logger.warning("rejected a batch from %s: %s", source, err)
            else:
                logger.debug("rejected a batch from %s: %s", source, err)
            raise
        if len(batch):
            await self._historian.write(batch)
            self._live.publish(batch)
        self._batches += 1
        self._points += len(batch)
        return IngestResult(accepted=len(batch))

    def stats(self) -> IngestStats:
        """Return the counters; cheap."""
        return IngestStats(
            batches=self._batches,
            points_accepted=self._points,
            batches_rejected=self._batches_rejected,
            points_rejected=self._points_rejected,
        )

    def _validate(self, batch: PointBatch) -> None:
        # Paths are checked once per distinct tag, and remembered: a plant has thousands
        # of tags but sends millions of points.
        for i, tag in enumerate(batch.tags):
            if tag in self._known_good:
                continue
            try:
                validate_path(tag)
            except (ValueError, TypeError) as err:
                raise PayloadError(f"tags[{i}]", str(err)) from err
            if len(self._known_good) < _KNOWN_GOOD_MAX:
                self._known_good.add(tag)
        if len(set(batch.tags)) != len(batch.tags):
            raise PayloadError("tags", "a tag path appears twice in the batch's tag list")
        if not len(batch):
            return
        too_early = batch.ts < EARLIEST_NS
        latest = self._clock() + self._max_future_ns
        too_late = batch.ts > latest
        if too_early.any():
            raise PayloadError(
                "ts",
                f"{int(too_early.sum())} of {len(batch)} timestamps are before "
                f"2000-01-01T00:00:00Z (first at index {int(np.argmax(too_early))}); "
                "is the sender's clock set?",
            )
        if too_late.any():
            raise PayloadError(
                "ts",
                f"{int(too_late.sum())} of {len(batch)} timestamps are more than "
                f"{self._max_future_ns / 1e9:g} s in the future (first at index "
                f"{int(np.argmax(too_late))}); is the sender's clock ahead?",
            )


_KNOWN_GOOD_MAX = 100_000
"""Bound on remembered good paths, so a sender inventing paths cannot grow memory forever."""
