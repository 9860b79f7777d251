"""The ingest ledger in memory: which ``(edge, seq)`` batches are applied, in bounded space.

The durable ledger is the ``ingest_ledger`` table, written in the same DuckDB transaction
as the points (see :mod:`~shopfloor.server.historian.writer`). This module is its index:
the writer asks it whether a batch was applied before, and rebuilds it from the table
when the database opens.

Per edge it keeps a **low-water mark** (every seq at or below it counts as applied) and
the applied seqs above it as sorted, disjoint ranges. An edge sends its batches nearly in
order (a live lane and a backlog lane, each ascending), so an edge costs one or two
ranges however many batches it sent, and the mark rises as the backlog closes the gap.

**Retention and very late batches.** A gap that stays open (the edge dropped batches
under its drop-oldest policy, or lost them with its disk) would keep ranges forever, so
the mark also rises past every seq committed longer than ``retention`` ago, and past the
lowest range when an edge has more than ``max_gaps`` of them. Rows at or below the
persisted mark and older than ``retention`` are deleted from the table. The consequence,
by design: a batch whose seq is below the mark counts as a duplicate and is not stored.
That only happens to a batch that reaches the platform more than ``retention`` after a
later batch of the same edge was committed (or after ``max_gaps`` newer gaps opened). An
edge keeps nothing that long when its outbox's maximum age is below ``retention`` (7
days by default), so keep it so. The alternative, storing such a batch, would turn every
re-sent batch older than the retention into a duplicate; this way nothing is stored twice.

**Restart.** The index is rebuilt from the tables with the same rules, so every applied
``(edge, seq)`` is applied again after a restart. Gaps given up only for ``max_gaps`` are
not recorded as such and may be open again after a restart; a batch arriving in one is
then stored, which is right: it never was. Gaps given up by age are given up again.

**Sequence restarts.** An edge whose outbox was re-created starts again at seq 1, and
its batches count as duplicates until it passes its old highest seq: the platform logs a
warning after 100 duplicates in a row from one edge (wire version 1 carries no outbox
identity that would tell the two cases apart).
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shopfloor.server.historian.base import EdgeLedgerStats

logger = logging.getLogger(__name__)

__all__ = ["BUCKET_NS", "EdgeSeqs", "Ledger"]

BUCKET_NS = 60 * 10**9
"""Commit times are kept per minute: retention is exact to the minute, memory is small."""

_DUPLICATE_RUN_WARNING = 100
"""Duplicates in a row (with nothing new between) after which an edge's sequence looks reset."""


@dataclass(slots=True)
class EdgeSeqs:
    """One edge's applied sequence numbers and its counters since start.

    Attributes:
        name: the edge id, for log lines.
        floor: every seq at or below it counts as applied (the low-water mark).
        starts: first seq of each applied range above ``floor + 1``, ascending.
        ends: last seq of each range (inclusive), same order.
        buckets: per minute of commit time, the highest seq committed in that minute,
            oldest first (for raising ``floor`` by age).
        persisted_floor: the mark as last written to ``ingest_low_water``.
    """

    name: str
    floor: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    buckets: deque[list[int]] = field(default_factory=deque)
    persisted_floor: int = 0
    batches: int = 0
    points: int = 0
    duplicates: int = 0
    abandoned: int = 0
    duplicate_run: int = 0
    last_commit_ns: int | None = None
    warned_abandoned: bool = False

    @property
    def max_seq(self) -> int:
        """The highest seq applied (or given up)."""
        return self.ends[-1] if self.ends else self.floor

    def seen(self, seq: int) -> bool:
        """Whether ``seq`` counts as applied."""
        if seq <= self.floor:
            return True
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def add(self, seq: int, *, max_gaps: int) -> None:
        """Record ``seq`` as applied (it must not be :meth:`seen`)."""
        i = bisect.bisect_right(self.starts, seq)
        left = i > 0 and self.ends[i - 1] == seq - 1
        right = i < len(self.starts) and self.starts[i] == seq + 1
        if left and right:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i], self.ends[i]
        elif left:
            self.ends[i - 1] = seq
        elif right:
            self.starts[i] = seq
        else:
            self.starts.insert(i, seq)
            self.ends.insert(i, seq)
        self._fold()
        while len(self.starts) > max_gaps:
            self.raise_floor(self.ends[0])

    def raise_floor(self, to: int, *, count: bool = True) -> None:
        """Count every seq up to ``to`` as applied, giving up the gaps below it.

        Args:
            to: the new mark.
            count: count and log the seqs given up (not when rebuilding at start-up,
                where they were given up before).
        """
        if to <= self.floor:
            return
        covered = 0
        while self.starts and self.starts[0] <= to:
            end = min(self.ends[0], to)
            covered += end - self.starts[0] + 1
            if self.ends[0] <= to:
                del self.starts[0], self.ends[0]
            else:
                self.starts[0] = to + 1
        gap = to - self.floor - covered
        if gap and count:
            self.abandoned += gap
            log = logger.debug if self.warned_abandoned else logger.warning
            self.warned_abandoned = True
            log(
                "ingest ledger: %d batches of edge %s below seq %d never arrived and are "
                "given up; should they still come, they count as duplicates",
                gap,
                self.name,
                to,
            )
        self.floor = to
        self._fold()

    def _fold(self) -> None:
        while self.starts and self.starts[0] <= self.floor + 1:
            self.floor = max(self.floor, self.ends[0])
            del self.starts[0], self.ends[0]

    def note_commit(self, seq: int, commit_ns: int) -> None:
        """Remember that ``seq`` was committed at ``commit_ns`` (for ageing the mark)."""
        bucket = commit_ns - commit_ns % BUCKET_NS
        if self.buckets and self.buckets[-1][0] == bucket:
            self.buckets[-1][1] = max(self.buckets[-1][1], seq)
        else:
            self.buckets.append([bucket, seq])

    def expire(self, cutoff_ns: int, *, count: bool = True) -> None:
        """Raise the mark past every seq committed before ``cutoff_ns`` (bucket-aligned)."""
        highest = 0
        while self.buckets and self.buckets[0][0] + BUCKET_NS <= cutoff_ns:
            highest = max(highest, self.buckets.popleft()[1])
        self.raise_floor(highest, count=count)

    def stats(self) -> EdgeLedgerStats:
        """Return the counters as an immutable value."""
        return EdgeLedgerStats(
            batches=self.batches,
            points=self.points,
            duplicates=self.duplicates,
            last_seq=self.max_seq,
            low_water=self.floor,
            gaps=len(self.starts),
            abandoned=self.abandoned,
            last_commit_ns=self.last_commit_ns,
        )


class Ledger:
    """Every edge's :class:`EdgeSeqs`. Used by the writer thread only.

    Args:
        retention_ns: how long ledger rows are kept; seqs committed longer ago count as
            applied whatever arrives (see the module docstring).
        max_gaps: the most applied ranges kept per edge above its mark.
    """

    def __init__(self, *, retention_ns: int, max_gaps: int) -> None:
        if retention_ns <= 0 or max_gaps <= 0:
            raise ValueError("retention_ns and max_gaps must be > 0")
        self.retention_ns = retention_ns
        self.max_gaps = max_gaps
        self.edges: dict[str, EdgeSeqs] = {}
        self.snapshot: Mapping[str, EdgeLedgerStats] = {}

    def cutoff(self, now_ns: int) -> int:
        """Rows committed before this time are past retention (aligned to a minute)."""
        cut = now_ns - self.retention_ns
        return cut - cut % BUCKET_NS

    def seen(self, edge: str, seq: int) -> bool:
        """Whether ``(edge, seq)`` counts as applied."""
        seqs = self.edges.get(edge)
        return seqs is not None and seqs.seen(seq)

    def record(
        self,
        commit_ns: int,
        applied: Iterable[tuple[str, int, int]],
        duplicates: Iterable[str] = (),
    ) -> None:
        """Take in a committed transaction: its ``(edge, seq, points)`` and duplicate edges."""
        touched: set[str] = set()
        for edge, seq, points in applied:
            seqs = self._edge(edge)
            seqs.add(seq, max_gaps=self.max_gaps)
            seqs.note_commit(seq, commit_ns)
            seqs.batches += 1
            seqs.points += points
            seqs.last_commit_ns = commit_ns
            seqs.duplicate_run = 0
            touched.add(edge)
        for edge in duplicates:
            seqs = self._edge(edge)
            seqs.duplicates += 1
            seqs.duplicate_run += 1
            if seqs.duplicate_run == _DUPLICATE_RUN_WARNING:
                logger.warning(
                    "edge %s sent %d batches in a row that were all applied before; if its "
                    "outbox was re-created its sequence restarted, and its batches are "
                    "being dropped as duplicates until it passes seq %d",
                    edge,
                    _DUPLICATE_RUN_WARNING,
                    seqs.max_seq,
                )
            touched.add(edge)
        self._publish(touched)

    def _edge(self, edge: str) -> EdgeSeqs:
        seqs = self.edges.get(edge)
        if seqs is None:
            seqs = self.edges[edge] = EdgeSeqs(edge)
        return seqs

    def expire(self, now_ns: int) -> None:
        """Raise every edge's mark past seqs committed before the retention cutoff."""
        cutoff = self.cutoff(now_ns)
        for seqs in self.edges.values():
            seqs.expire(cutoff)
        self._publish(self.edges)

    def _publish(self, edges: Iterable[str]) -> None:
        changed = {edge: self.edges[edge].stats() for edge in edges}
        if changed:
            self.snapshot = {**self.snapshot, **changed}

    def load(
        self,
        now_ns: int,
        *,
        low_water: Mapping[str, int],
        expired: Mapping[str, int],
        ranges: Iterable[tuple[str, int, int]],
        buckets: Iterable[tuple[str, int, int]],
    ) -> None:
        """Rebuild from what the tables say (see ``schema.load_ledger``).

        Args:
            now_ns: the wall clock now, for the retention cutoff.
            low_water: per edge, the persisted mark.
            expired: per edge, the highest seq committed before the retention cutoff.
            ranges: ``(edge, first, last)`` runs of consecutive seqs above the mark.
            buckets: ``(edge, minute, highest seq)`` of the rows within retention.
        """
        self.edges = {}
        for edge, mark in low_water.items():
            self._edge(edge).floor = self._edge(edge).persisted_floor = int(mark)
        for edge, first, last in sorted(ranges):
            seqs = self._edge(edge)
            seqs.starts.append(int(first))
            seqs.ends.append(int(last))
        for edge, bucket, highest in sorted(buckets):
            self._edge(edge).buckets.append([int(bucket), int(highest)])
        for edge, highest in expired.items():
            self._edge(edge).raise_floor(int(highest), count=False)
        for seqs in self.edges.values():
            seqs._fold()
            seqs.expire(self.cutoff(now_ns), count=False)
            while len(seqs.starts) > self.max_gaps:
                seqs.raise_floor(seqs.ends[0], count=False)
        self.snapshot = {}
        self._publish(self.edges)
