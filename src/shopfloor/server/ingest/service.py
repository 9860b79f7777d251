"""Receive batches from any source, check them, store them, then hand them to live readers.

The order matters: a batch is published on the live channel only after the historian has
accepted it (a batch from a remote edge: after it is committed), so a dashboard never
shows a value that a history query cannot find. A batch is checked whole and rejected
whole: either every point of it is stored or none is.

A batch that names its edge and sequence number goes through the historian's
acknowledged path: stored once per ``(edge, seq)``, answered only after the commit. Other
batches (scripts, the in-process edge) are queued for the next group commit as before.

**Clock sanity.** A timestamp before 2000 or from 2100 on is a clock that was never set or
a corrupt value: the batch is refused (the edge quarantines it, so it stays inspectable).
A point stamped more than ``max_future_s`` ahead of the platform's clock is stored with its
own timestamp, never "now", and, if its quality was Good, with quality Uncertain
(``0x40000000``, OPC UA's Uncertain without a specific reason); it is counted per edge.
Refusing such a batch would quarantine the good points beside it because of one wrong
device clock. Uncertain and Bad points keep their code: it says more than the flag.

**Derived points.** An optional ``derive`` step (the server's calculated tags, see
:mod:`shopfloor.server.analytics.calc`) adds the points a checked batch gives to that
batch before it is published and stored: they share its commit and its ledger entry, so
they are stored exactly when the batch is, and published once with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shopfloor.errors import IngestBusy, PayloadError
from shopfloor.model import LiveBatch, PointBatch, Quality, now_ns
from shopfloor.model.tags import validate_path
from shopfloor.runtime.channels import Channel
from shopfloor.server.historian.base import Historian
from shopfloor.server.ingest.edges import EdgeRegistry
from shopfloor.wire import EDGE_ID_PATTERN, ledger_stream

if TYPE_CHECKING:
    from shopfloor.server.ingest.pg_edges import SharedEdges

logger = logging.getLogger(__name__)

__all__ = [
    "EARLIEST_NS",
    "FUTURE_QUALITY",
    "LATEST_NS",
    "IngestResult",
    "IngestStats",
    "Ingestor",
]

EARLIEST_NS = 946_684_800_000_000_000
"""2000-01-01T00:00:00Z: anything earlier is a clock that was never set, not history."""

LATEST_NS = 4_102_444_800_000_000_000
"""2100-01-01T00:00:00Z: anything at or after it is a corrupt time, not a fast clock."""

FUTURE_QUALITY = int(Quality.UNCERTAIN)
"""The quality a Good point gets when its time is too far ahead of the platform's clock."""

_EDGE_ID = re.compile(EDGE_ID_PATTERN)
_SEVERITY = np.uint32(0xC0000000)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one batch.

    Attributes:
        accepted: how many points were stored and published.
        duplicate: the batch's ``(edge, seq)`` was stored before; nothing was stored now.
        future_points: points stored Uncertain because their time was too far ahead.
    """

    accepted: int
    duplicate: bool = False
    future_points: int = 0


@dataclass(frozen=True, slots=True)
class IngestStats:
    """Counters for the health endpoint.

    Attributes:
        batches: batches accepted.
        points_accepted: points stored.
        batches_rejected: batches refused as malformed.
        points_rejected: points in the refused batches.
        duplicates: batches from edges that were stored before and not again.
        future_points: points stored Uncertain for a time too far ahead.
        busy_refusals: requests answered "busy, retry later".
        derived_points: calculated points added to accepted batches (not in
            ``points_accepted``).
    """

    batches: int
    points_accepted: int
    batches_rejected: int
    points_rejected: int
    duplicates: int = 0
    future_points: int = 0
    busy_refusals: int = 0
    derived_points: int = 0


class Ingestor:
    """Validates batches, writes them to the historian and publishes them live.

    Args:
        historian: where points are stored.
        live: the channel that dashboards, rules and analytics read.
        max_future_s: how far ahead of the server's clock a timestamp may be before its
            point is flagged Uncertain (edge clocks drift; a point an hour in the future
            is a wrong clock, not a forecast).
        max_pending_points: above this many points waiting in the historian, remote
            senders are told to retry later (:meth:`admit`) instead of queueing more.
        retry_after_s: what that answer tells them to wait.
        edges: the registry of remote edges (a new one if not given).
        clock: the wall clock in UTC nanoseconds (injected so tests control "now").
        derive: the points a checked batch gives (calculated tags), stored and published
            with it; called once per stored batch, in arrival order.
    """

    def __init__(
        self,
        historian: Historian,
        live: Channel[LiveBatch],
        *,
        max_future_s: float = 300,
        max_pending_points: int = 1_000_000,
        retry_after_s: float = 1.0,
        edges: EdgeRegistry | None = None,
        clock: Callable[[], int] = now_ns,
        derive: Callable[[PointBatch], PointBatch] | None = None,
    ) -> None:
        if max_pending_points <= 0 or retry_after_s <= 0:
            raise ValueError("max_pending_points and retry_after_s must be > 0")
        self._historian = historian
        self._live = live
        self._max_future_s = max_future_s
        self._max_future_ns = int(max_future_s * 1e9)
        self._max_pending = max_pending_points
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._derive = derive
        self._derived = 0
        self.edges = edges if edges is not None else EdgeRegistry(clock=clock)
        self.shared_edges: SharedEdges | None = None
        """Scaled out: every process's edges, in PostgreSQL (set by the composition root)."""
        self._batches = 0
        self._points = 0
        self._batches_rejected = 0
        self._points_rejected = 0
        self._duplicates = 0
        self._future_points = 0
        self._busy = 0
        self._busy_logged = False
        self._known_good: set[str] = set()

    def admit(self) -> None:
        """Refuse more work while the historian is behind (call before reading a body).

        Raises:
            IngestBusy: ``max_pending_points`` or more points wait for their commit.
        """
        pending = self._historian.stats().points_pending
        if pending < self._max_pending:
            if self._busy_logged:
                self._busy_logged = False
                logger.info("ingest accepts batches again")
            return
        self._busy += 1
        if not self._busy_logged:
            self._busy_logged = True
            logger.warning(
                "ingest is behind (%d points wait for the historian): senders are told "
                "to retry later",
                pending,
            )
        raise IngestBusy(
            f"the historian is behind: {pending} points wait to be stored "
            f"(limit {self._max_pending}); send again later",
            self._retry_after_s,
        )

    async def ingest(
        self,
        batch: PointBatch,
        *,
        source: str,
        edge: str | None = None,
        seq: int | None = None,
        historical: bool = False,
        edge_time_ns: int | None = None,
        received_ns: int | None = None,
        parts: Sequence[tuple[int, PointBatch]] = (),
        outbox: str | None = None,
    ) -> IngestResult:
        """Check, store and publish ``batch``.

        Args:
            batch: the points.
            source: who sent it (an edge name or a client address), for log lines.
            edge: the sending edge's id, if the batch carried one.
            seq: the batch's sequence number at that edge; with ``edge``, the batch is
                stored once per ``(edge, seq)`` and this returns after the commit.
            historical: the batch comes from the edge's backlog (see :class:`LiveBatch`).
            edge_time_ns: the edge's clock when it sent the batch, for the skew estimate.
            received_ns: the platform's clock when the request arrived.
            parts: several outbox batches of ``edge`` coalesced into one request, as
                ``(seq, points)``; replaces ``batch`` and ``seq``. All are checked before
                any is stored; each is stored once per ``(edge, seq)``.
            outbox: the id of the edge's outbox that numbered the seqs; the ledger keys
                batches by ``(edge, outbox, seq)``, so a re-created outbox starting at seq 1
                is not taken for the one before it.

        Raises:
            PayloadError: the batch is malformed; nothing of it was stored. ``field`` is
                ``tags[i]`` for a bad path, ``ts`` for absurd timestamps, ``edge`` or
                ``seq`` for a bad batch identity.
            HistorianError: the commit of an edge's batch failed; it was not stored (of
                coalesced parts, some may have been: sending them again is harmless).
            ShutdownError: the historian is closing.
        """
        units: list[tuple[int | None, PointBatch]] = list(parts) if parts else [(seq, batch)]
        acknowledged = edge is not None and all(s is not None for s, _ in units)
        try:
            for unit_seq, unit in units:
                self._validate(unit)
                if acknowledged:
                    self._validate_identity(edge, unit_seq)
        except PayloadError as err:
            self._batches_rejected += 1
            self._points_rejected += sum(len(u) for _, u in units)
            if self._batches_rejected == 1:
                logger.warning("rejected a batch from %s: %s", source, err)
            else:
                logger.debug("rejected a batch from %s: %s", source, err)
            raise
        if edge is not None and _EDGE_ID.match(edge):
            if edge_time_ns is not None:
                received = self._clock() if received_ns is None else received_ns
                self.edges.observe_clock(edge, edge_time_ns=edge_time_ns, received_ns=received)
            else:
                self.edges.touch(edge)
        stream = None if edge is None else ledger_stream(edge, outbox)
        if len(units) == 1:
            unit_seq, unit = units[0]
            return await self._store(
                unit, edge, stream, unit_seq if acknowledged else None, historical
            )
        outcomes = await asyncio.gather(
            *(
                self._store(u, edge, stream, s if acknowledged else None, historical)
                for s, u in units
            ),
            return_exceptions=True,
        )
        results: list[IngestResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        return IngestResult(
            accepted=sum(r.accepted for r in results),
            duplicate=all(r.duplicate for r in results),
            future_points=sum(r.future_points for r in results),
        )

    async def _store(
        self,
        batch: PointBatch,
        edge: str | None,
        stream: str | None,
        seq: int | None,
        historical: bool,
    ) -> IngestResult:
        """Flag, publish and store one checked batch (acknowledged when ``seq`` is given,
        recorded in the ledger under ``stream``).

        Published before the historian commits: alarms and screens must not wait for
        storage. A batch whose commit fails comes again and a duplicate is published
        again; both are harmless, as live consumers take only points newer than they have.
        """
        batch, future = self._flag_future(batch)
        accepted = len(batch)
        if self._derive is not None and accepted:
            derived = self._derive(batch)
            if len(derived):
                batch = PointBatch.concat([batch, derived])
                self._derived += len(derived)
        if len(batch):
            self._live.publish(LiveBatch(batch, historical=historical, edge=edge))
        if stream is not None and seq is not None:
            receipt = await self._historian.write_acknowledged(batch, edge=stream, seq=seq)
            if receipt.duplicate:
                self._duplicates += 1
                return IngestResult(accepted=0, duplicate=True)
        elif len(batch):
            await self._historian.write(batch)
        if future:
            self._future_points += future
            if edge is not None and _EDGE_ID.match(edge):
                self.edges.count_future(edge, future, limit_s=self._max_future_s)
        self._batches += 1
        self._points += accepted
        return IngestResult(accepted=accepted, future_points=future)

    def stats(self) -> IngestStats:
        """Return the counters; cheap."""
        return IngestStats(
            batches=self._batches,
            points_accepted=self._points,
            batches_rejected=self._batches_rejected,
            points_rejected=self._points_rejected,
            duplicates=self._duplicates,
            future_points=self._future_points,
            busy_refusals=self._busy,
            derived_points=self._derived,
        )

    @staticmethod
    def _validate_identity(edge: str | None, seq: int | None) -> None:
        if edge is None or not _EDGE_ID.match(edge):
            raise PayloadError(
                "edge",
                f"{edge!r:.80} is not an edge id: letters, digits, '_', '.', '-', "
                "starting with a letter or digit, at most 64 characters",
            )
        if seq is None or seq < 1:
            raise PayloadError("seq", f"must be 1 or more (an edge counts from 1), got {seq}")

    def _flag_future(self, batch: PointBatch) -> tuple[PointBatch, int]:
        """Mark Good points too far ahead of the clock Uncertain; return how many were."""
        if not len(batch):
            return batch, 0
        ahead = batch.ts > self._clock() + self._max_future_ns
        if not ahead.any():
            return batch, 0
        flag = ahead & ((batch.quality & _SEVERITY) == 0)
        quality = batch.quality.copy()
        quality[flag] = FUTURE_QUALITY
        return dataclasses.replace(batch, quality=quality), int(ahead.sum())

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
        too_late = batch.ts >= LATEST_NS
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
                f"{int(too_late.sum())} of {len(batch)} timestamps are at or after "
                f"2100-01-01T00:00:00Z (first at index {int(np.argmax(too_late))}); "
                "is the sender's clock or encoder broken?",
            )


_KNOWN_GOOD_MAX = 100_000
"""Bound on remembered good paths, so a sender inventing paths cannot grow memory forever."""
