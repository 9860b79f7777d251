"""The historian protocol every backend implements, and the query value types.

Times are int64 UTC nanoseconds inside the platform; the API converts ISO 8601 at its
boundary. Query results are Arrow tables so they can stream to the API without one Python
object per point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.model import PointBatch, TagMeta


class Aggregate(StrEnum):
    """Aggregates a bucketed query can ask for. Only Good points count in any of them.

    Exact definitions (held values, counter resets, empty buckets): the module docstring
    of :mod:`~shopfloor.server.historian.aggregate` and docs/historian.md.
    """

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    FIRST = "first"
    LAST = "last"
    COUNT = "count"
    TWA = "twa"
    """Time-weighted average: each Good value held until the next point of any quality."""
    SUM = "sum"
    STDDEV = "stddev"
    """Sample standard deviation (n - 1), like SQL's ``stddev``."""
    DELTA = "delta"
    """Increase of a counter; a decrease is a reset and the new value counts from zero."""


class Interpolation(StrEnum):
    """How :meth:`Historian.read_at` finds a value at a time between points."""

    PREVIOUS = "previous"
    """The last Good value at or before the time (a step, as a PLC holds a value)."""
    LINEAR = "linear"
    """On the straight line between the Good neighbours; none after the last point."""


class CalendarUnit(StrEnum):
    """Buckets that follow the plant's calendar rather than a fixed duration."""

    DAY = "day"
    WEEK = "week"
    """ISO weeks, Monday to Monday."""
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Calendar:
    """A calendar bucket: ``count`` days, weeks or months, from local midnight.

    Counted from 1970-01-01 (weeks from Monday 1970-01-05) in the query's time zone, so
    ``Calendar(CalendarUnit.MONTH, 3)`` is quarters and ``Calendar(CalendarUnit.MONTH,
    12)`` calendar years. A day is 23 or 25 hours long across a DST change.
    """

    unit: CalendarUnit
    count: int = 1


BucketSize = int | Calendar
"""A fixed bucket width in nanoseconds, or a :class:`Calendar` bucket."""


@dataclass(frozen=True, slots=True)
class HistorianStats:
    """Counters for status lines and health endpoints.

    The retention counters run since start (see
    :mod:`~shopfloor.server.historian.retention_loop`): ``retention_deleted_points`` raw
    points past their retention, ``budget_evictions`` whole days evicted for the disk
    budget, ``storage_used_bytes`` what the budget counted at the last pass (-1: not
    measured yet); ``compacted_points`` and ``rollup_rows`` what compaction rewrote and
    rolled up.
    """

    points_written: int
    points_pending: int
    tags: int
    flushes: int
    last_flush_ms: float
    retention_deleted_points: int = 0
    budget_evictions: int = 0
    storage_used_bytes: int = -1
    compacted_points: int = 0
    rollup_rows: int = 0


@dataclass(frozen=True, slots=True)
class WriteReceipt:
    """What an acknowledged write did, known only once its transaction committed.

    Attributes:
        accepted: points stored by this write (0 for a duplicate).
        duplicate: the batch's ``(edge, seq)`` was applied before; nothing was stored.
    """

    accepted: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class EdgeLedgerStats:
    """One edge as the ingest ledger sees it. Counters run since the historian started.

    Attributes:
        batches: batches committed.
        points: points committed.
        duplicates: batches refused as applied before.
        last_seq: the highest seq applied.
        low_water: every seq at or below it counts as applied.
        gaps: ranges of seqs above ``low_water`` not yet received (backlog to come).
        abandoned: seqs given up below ``low_water`` without ever arriving.
        last_commit_ns: when the last batch of the edge was committed (UTC ns), if any.
    """

    batches: int
    points: int
    duplicates: int
    last_seq: int
    low_water: int
    gaps: int
    abandoned: int
    last_commit_ns: int | None


class Historian(Protocol):
    """What the rest of the server may ask of a historian.

    Writes are asynchronous and batched by the backend: :meth:`write` returns once the
    batch is accepted into a bounded queue, and :meth:`flush` waits until everything
    accepted so far is committed. Reads see only committed points.

    Rules every backend keeps (the DuckDB tests check them):

    - Aggregates use only Good points with a numeric value; :meth:`read_aggregates`
      leaves out buckets without one, so a text tag has no aggregate rows there.
      :meth:`read_buckets` and :meth:`read_at` give the same answers on every backend:
      one engine (:mod:`~shopfloor.server.historian.aggregate`) computes them from the
      points a backend fetches.
    - A path whose points are all still queued is unknown to reads (``UnknownTagError``).
    - ``latest(paths)`` raises ``UnknownTagError`` for an unknown path and leaves out tags
      with no points; of two points with the same timestamp the later write wins.
    - A commit that fails is rolled back, counted and logged once, and the next
      :meth:`flush` raises ``HistorianError`` (if it held batches from :meth:`write`);
      every :meth:`write_acknowledged` waiting on it raises ``HistorianError`` itself.
    - A non-positive bucket or a negative limit raises ``PayloadError``.
    - :meth:`write_acknowledged` returns only after the commit holding the batch; the
      batch's ``(edge, seq)`` goes into the ingest ledger in that same transaction, and a
      batch whose ``(edge, seq)`` is in the ledger stores nothing.
    """

    async def start(self) -> None:
        """Open storage and start the writer."""

    async def close(self) -> None:
        """Commit everything accepted, then release storage. Idempotent."""

    async def register_tags(self, metas: Sequence[TagMeta]) -> None:
        """Create or update tag metadata (keyed by path)."""

    async def write(self, batch: PointBatch) -> None:
        """Accept a batch for writing; unknown tag paths are registered with bare metadata.

        Waits (backpressure) while the write queue is full.
        """

    async def write_acknowledged(self, batch: PointBatch, *, edge: str, seq: int) -> WriteReceipt:
        """Store a batch from an edge exactly once and return after its commit.

        Waits (backpressure) while the write queue is full, like :meth:`write`.

        Raises:
            HistorianError: the commit failed; nothing of the batch is stored (resend it).
            ShutdownError: the historian is closing or closed.
            PayloadError: ``seq`` is below 1 or ``edge`` is empty.
        """

    def ledger_stats(self) -> Mapping[str, EdgeLedgerStats]:
        """Every edge in the ingest ledger, by edge id; cheap, never blocks."""

    async def flush(self) -> None:
        """Wait until every batch accepted before this call is committed."""

    async def tags(self) -> list[TagMeta]:
        """Every known tag, sorted by path."""

    async def read_raw(
        self, path: str, start_ns: int, end_ns: int, *, limit: int = 100_000
    ) -> pa.Table:
        """Points of one tag with ``start_ns <= ts < end_ns``, oldest first.

        Columns: ts (timestamp ns UTC), value (float64), quality (uint32), text (string).

        Raises:
            UnknownTagError: the path names no tag.
        """

    async def read_aggregates(
        self,
        path: str,
        start_ns: int,
        end_ns: int,
        *,
        bucket_ns: int,
        aggregates: Sequence[Aggregate],
    ) -> pa.Table:
        """Bucketed aggregates of one tag's Good points over ``[start_ns, end_ns)``.

        Buckets are aligned to multiples of ``bucket_ns`` since the epoch; buckets without
        a Good numeric point are left out. Columns: ts (bucket start, timestamp ns UTC) and
        one float64 column per aggregate, named by its value (``count`` is int64). The
        values are those of :meth:`read_buckets`.

        Raises:
            UnknownTagError: the path names no tag.
        """

    async def read_buckets(
        self,
        paths: Sequence[str],
        start_ns: int,
        end_ns: int,
        *,
        bucket: BucketSize,
        aggregates: Sequence[Aggregate],
        tz: str | None = None,
    ) -> pa.Table:
        """Bucketed aggregates of many tags over ``[start_ns, end_ns)``, every bucket.

        Buckets are aligned to the wall clock of the IANA time zone ``tz`` (UTC if None):
        ``bucket`` is a width in nanoseconds, aligned to multiples of it since local
        1970-01-01, or a :class:`Calendar` unit. The first bucket is the one holding
        ``start_ns`` and may begin before it; only points in the range count.

        One long table: a row per path (in the order given, repeats dropped) and bucket,
        empty buckets included. Columns: path (dictionary string), ts (bucket start,
        timestamp ns UTC), one column per distinct aggregate in the order asked (``count``
        int64, the rest float64, null where a bucket has no value) and ``bad`` (int64:
        points of the bucket whose quality is not Good, left out of every aggregate).

        Raises:
            UnknownTagError: a path names no tag.
            PayloadError: a non-positive bucket, an unknown time zone, or too many buckets.
        """

    async def read_at(
        self,
        paths: Sequence[str],
        times_ns: Sequence[int] | npt.NDArray[np.int64],
        *,
        method: Interpolation = Interpolation.PREVIOUS,
    ) -> pa.Table:
        """The value of every path at every time in ``times_ns``, from its Good points.

        Columns: path (dictionary string), ts (the time asked, timestamp ns UTC), value
        (float64; null before the first Good point, and for ``linear`` after the last).
        Rows: per path in the order given (repeats dropped), the times in the order given.

        Raises:
            UnknownTagError: a path names no tag.
            PayloadError: too many values asked for at once.
        """

    async def latest(self, paths: Sequence[str] | None = None) -> pa.Table:
        """The last point of every tag (or of ``paths``).

        Columns: path (string), ts, value, quality, text.
        """

    def stats(self) -> HistorianStats:
        """Counters for status lines; cheap, never blocks."""
