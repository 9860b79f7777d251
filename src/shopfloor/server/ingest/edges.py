"""What the platform knows about each remote edge: last status, last seen, clock skew.

Edges report their status (buffer depth, uplink figures, connector health) every few
seconds and stamp every batch with their wall clock (``X-Shopfloor-Edge-Time``). The
registry keeps the latest status per edge in memory, bounded: beyond ``max_edges`` the
edge heard from longest ago is forgotten (and counted). Nothing here is durable; what the
platform stored from an edge is in the historian's ingest ledger. Scaled out (a shared
PostgreSQL historian), each process pushes its registry to the table every API server
lists the edges from (:mod:`~.pg_edges`).

**Skew.** Each request gives one sample, ``platform receive time − edge send time``, which
is the edge's clock offset plus the request's one-way delay (never negative). The
estimate is the smallest of the last ``window`` samples: the sample that waited least is
the closest to the true offset (NTP's clock filter works the same way). A positive skew
means the edge's clock is behind the platform's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shopfloor.model import now_ns

logger = logging.getLogger(__name__)

__all__ = ["EdgeRecord", "EdgeRegistry", "EdgeView"]


@dataclass(slots=True)
class EdgeRecord:
    """One edge's state in the registry (mutable; read it through :class:`EdgeView`)."""

    edge: str
    last_seen_ns: int
    status: Mapping[str, Any] | None = None
    status_at_ns: int | None = None
    samples: deque[int] = field(default_factory=deque)
    future_points: int = 0
    warned_future: bool = False


@dataclass(frozen=True, slots=True)
class EdgeView:
    """One edge as the API shows it.

    Attributes:
        edge: the edge id.
        last_seen_ns: when the platform last heard from it (UTC ns).
        status: the last status it reported, as sent (validated), if any.
        status_at_ns: when that status arrived.
        skew_s: estimated platform clock − edge clock in seconds, if measured.
        skew_samples: how many samples the estimate rests on.
        future_points: points stored Uncertain because their time was ahead of the
            platform's clock by more than the allowed margin.
    """

    edge: str
    last_seen_ns: int
    status: Mapping[str, Any] | None
    status_at_ns: int | None
    skew_s: float | None
    skew_samples: int
    future_points: int


class EdgeRegistry:
    """Bounded memory of the edges the platform has heard from.

    Args:
        max_edges: the most edges remembered; the one heard from longest ago goes first.
        window: how many clock samples per edge the skew estimate looks at.
        clock: the wall clock in UTC nanoseconds.
    """

    def __init__(
        self, *, max_edges: int = 1000, window: int = 16, clock: Callable[[], int] = now_ns
    ) -> None:
        if max_edges <= 0 or window <= 0:
            raise ValueError("max_edges and window must be > 0")
        self._max_edges = max_edges
        self._window = window
        self._clock = clock
        self._edges: OrderedDict[str, EdgeRecord] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._edges)

    def touch(self, edge: str, now: int | None = None) -> EdgeRecord:
        """Note that ``edge`` was heard from now; returns its record (created if new)."""
        now = self._clock() if now is None else now
        record = self._edges.get(edge)
        if record is None:
            record = self._edges[edge] = EdgeRecord(edge, now)
            if len(self._edges) > self._max_edges:
                gone, _ = self._edges.popitem(last=False)
                self.evicted += 1
                if self.evicted == 1:
                    logger.warning(
                        "more than %d edges: forgetting the status of %s, heard from "
                        "longest ago (further evictions are only counted)",
                        self._max_edges,
                        gone,
                    )
        else:
            record.last_seen_ns = max(record.last_seen_ns, now)
            self._edges.move_to_end(edge)
        return record

    def observe_clock(self, edge: str, *, edge_time_ns: int, received_ns: int) -> float:
        """Add one skew sample of ``edge`` and return the estimate in seconds."""
        record = self.touch(edge, received_ns)
        record.samples.append(received_ns - edge_time_ns)
        while len(record.samples) > self._window:
            record.samples.popleft()
        return min(record.samples) / 1e9

    def put_status(
        self, edge: str, status: Mapping[str, Any], *, edge_time_ns: int, received_ns: int
    ) -> float:
        """Store ``edge``'s latest status; return the skew estimate including this report."""
        skew = self.observe_clock(edge, edge_time_ns=edge_time_ns, received_ns=received_ns)
        record = self._edges[edge]
        record.status = status
        record.status_at_ns = received_ns
        return skew

    def count_future(self, edge: str, points: int, *, limit_s: float) -> None:
        """Count points of ``edge`` stored Uncertain for a time too far ahead (log once)."""
        record = self.touch(edge)
        record.future_points += points
        if not record.warned_future:
            record.warned_future = True
            logger.warning(
                "edge %s sends points more than %g s ahead of the platform's clock; they "
                "are stored with quality Uncertain (is its clock right?)",
                edge,
                limit_s,
            )

    def views(self) -> list[EdgeView]:
        """Every remembered edge, sorted by id."""
        return [self._view(r) for _, r in sorted(self._edges.items())]

    def view(self, edge: str) -> EdgeView | None:
        """One edge, if remembered."""
        record = self._edges.get(edge)
        return None if record is None else self._view(record)

    @staticmethod
    def _view(record: EdgeRecord) -> EdgeView:
        return EdgeView(
            edge=record.edge,
            last_seen_ns=record.last_seen_ns,
            status=record.status,
            status_at_ns=record.status_at_ns,
            skew_s=min(record.samples) / 1e9 if record.samples else None,
            skew_samples=len(record.samples),
            future_points=record.future_points,
        )
