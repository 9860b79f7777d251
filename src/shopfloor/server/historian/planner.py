"""Which resolution answers a bucketed query exactly: 1-hour rollups, 1-minute rollups, raw.

A query may read rollups of width ``L`` (:data:`~.rollup.HOUR_NS`, else
:data:`~.rollup.MINUTE_NS`) when every bucket edge inside its range lies on a UTC
multiple of ``L``: then each bucket is a union of whole rollup cells, plus raw points at
the range's ragged ends. Hourly buckets in Berlin or a Berlin day across DST qualify for
1-hour rollups; hourly buckets in Kolkata (+05:30) only for 1-minute ones; 7-second
buckets for none.

Within the range, rollups cover ``[a, b)``: ``a`` the first edge of ``L`` at or after the
start, ``b`` the last one at or before the end, cut back to where the backend's rollups
are complete (:class:`Parts`). The rest comes from raw points: ``[start, a)``, ``[b,
end)`` and the hours of a tag whose rollups are stale (late points arrived since they
were computed). Raw points become cells of their own (:func:`~.rollup.cells_of_points`,
cut at every bucket edge and at every edge between raw and rollup data), and one merge
(:func:`~.rollup.summarize_cells`) answers every bucket from both kinds of cell.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import PayloadError
from shopfloor.model.points import Int64Array
from shopfloor.server.historian import query
from shopfloor.server.historian.aggregate import Points, Prior
from shopfloor.server.historian.buckets import Buckets, UniformBuckets
from shopfloor.server.historian.query import BucketPlan
from shopfloor.server.historian.rollup import (
    HOUR_NS,
    MINUTE_NS,
    Cells,
    cells_of_points,
    summarize_cells,
)

__all__ = [
    "LEVELS",
    "NO_FLOOR",
    "Parts",
    "RawRange",
    "RollupSpan",
    "RollupUse",
    "all_raw",
    "answer",
    "check_raw_floor",
    "drop_stale",
    "iso",
    "merge_prior",
    "raw_ranges",
    "spans",
]

LEVELS = (HOUR_NS, MINUTE_NS)
"""Rollup widths, coarsest first."""


class RollupUse:
    """Counts queries answered from rollups (read on any thread, for stats and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queries = 0
        """Queries that read rollups."""
        self.rows = 0
        """Rollup rows they read."""

    def count(self, rows: int) -> None:
        """One more query, which read ``rows`` rollup rows."""
        with self._lock:
            self.queries += 1
            self.rows += rows


@dataclass(frozen=True, slots=True)
class RollupSpan:
    """Where a query may read rollups of one width.

    Attributes:
        level: the rollup width (ns).
        start: the first multiple of ``level`` at or after the query's start.
        end: the last multiple of ``level`` at or before the query's end (``> start``).
    """

    level: int
    start: int
    end: int


def _aligned(buckets: Buckets, level: int) -> bool:
    """Whether every bucket edge strictly inside the range is a multiple of ``level``."""
    if buckets.count <= 1:
        return True
    if isinstance(buckets, UniformBuckets):
        second = buckets.origin + (buckets.first + 1) * buckets.width
        return buckets.width % level == 0 and second % level == 0
    inner = buckets.edges()[1:-1]
    return bool(np.all(inner % level == 0))


def spans(plan: BucketPlan) -> list[RollupSpan]:
    """The rollup widths that could answer ``plan``, coarsest first (none: raw only)."""
    if plan.empty:
        return []
    out = []
    for level in LEVELS:
        a = -(-plan.start_ns // level) * level
        b = plan.end_ns // level * level
        if b > a and _aligned(plan.buckets, level):
            out.append(RollupSpan(level, a, b))
    return out


@dataclass(frozen=True, slots=True)
class RawRange:
    """Raw points to read: ``tags`` (query positions) over ``[start, end)``."""

    start: int
    end: int
    tags: npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Parts:
    """What a backend read for a rollup-served query, all from one snapshot.

    Attributes:
        span: the rollup width and the part of the range rollups cover (cut back to
            where they are complete).
        rollups: the rollup cells read, ``tag`` the query position; stale ones left out.
        raw: the raw points of :attr:`ranges`.
        ranges: every raw stretch read (the ragged ends, and stale hours per tag).
        rollup_rows: how many rollup rows were read (for statistics).
    """

    span: RollupSpan
    rollups: Cells
    raw: Points
    ranges: list[RawRange]
    rollup_rows: int


def raw_ranges(
    plan: BucketPlan,
    covered: RollupSpan,
    stale_tag: npt.NDArray[np.intp],
    stale_hour: Int64Array,
) -> list[RawRange]:
    """The raw stretches a query needs besides rollups of ``covered``.

    The ends before and after ``covered`` for every tag, and each stale hour (inside
    ``covered``) for its tags only. Touching stretches of the same tags are one stretch:
    a day of late points is one read, not 24.
    """
    every = np.arange(len(plan.paths), dtype=np.intp)
    out = []
    if plan.start_ns < covered.start:
        out.append(RawRange(plan.start_ns, covered.start, every))
    for hour in np.unique(stale_hour).tolist():
        lo, hi = max(hour, covered.start), min(hour + HOUR_NS, covered.end)
        if lo < hi:
            out.append(RawRange(lo, hi, np.unique(stale_tag[stale_hour == hour])))
    if covered.end < plan.end_ns:
        out.append(RawRange(covered.end, plan.end_ns, every))
    return _joined(out)


def all_raw(plan: BucketPlan, ranges: Sequence[RawRange]) -> bool:
    """Whether ``ranges`` are the whole query for every tag: rollups would add nothing."""
    if len(ranges) != 1:
        return False
    (only,) = ranges
    return (
        only.start <= plan.start_ns
        and only.end >= plan.end_ns
        and len(only.tags) == len(plan.paths)
    )


def _joined(ranges: list[RawRange]) -> list[RawRange]:
    """Time-ordered stretches with each run of touching ones of equal tags made one."""
    out: list[RawRange] = []
    for r in ranges:
        last = out[-1] if out else None
        if last is not None and last.end == r.start and np.array_equal(last.tags, r.tags):
            out[-1] = RawRange(last.start, r.end, last.tags)
        else:
            out.append(r)
    return out


def drop_stale(
    cells: Cells, stale_tag: npt.NDArray[np.intp], stale_hour: Int64Array, n_tags: int
) -> Cells:
    """The cells not inside a stale ``(tag, hour)``."""
    if not len(stale_tag) or not len(cells):
        return cells
    hour = cells.start - cells.start % HOUR_NS
    stale = np.unique(stale_hour * n_tags + stale_tag)
    key = hour * n_tags + cells.tag
    pos = np.minimum(np.searchsorted(stale, key), len(stale) - 1)
    return cells.take(stale[pos] != key)


NO_FLOOR = -(2**63)
"""A tag whose raw points were never deleted."""


def check_raw_floor(ranges: Sequence[RawRange], floors: Int64Array, paths: Sequence[str]) -> None:
    """Refuse a query that needs raw points retention has deleted.

    Args:
        ranges: the raw stretches the answer needs.
        floors: per query position, the time before which the tag's raw points were
            deleted (:data:`NO_FLOOR`: none were).
        paths: the query's tags, for the message.

    Raises:
        PayloadError: a stretch begins before its tag's floor (field ``start``).
    """
    if not len(floors) or int(floors.max()) == NO_FLOOR:
        return
    for r in ranges:
        if not len(r.tags):
            continue
        mine = floors[r.tags]
        worst = int(np.argmax(mine))
        if r.start < int(mine[worst]):
            floor = int(mine[worst])
            raise PayloadError(
                "start",
                f"raw points of {paths[int(r.tags[worst])]} before {iso(floor)} were deleted "
                f"by retention, and [{iso(r.start)}, {iso(min(r.end, floor))}) cannot be "
                "answered from rollups: use buckets whose edges are whole UTC minutes (hours "
                "where only hourly rollups are kept), a range starting and ending on one, or "
                "a later start",
            )


def merge_prior(
    prior: Prior,
    found: Prior,
    picked: npt.NDArray[np.intp],
    *,
    last: npt.NDArray[np.bool_],
    good: npt.NDArray[np.bool_],
) -> None:
    """Take ``found`` (the priors of tags ``picked``, from rollups) where it has one and
    ``last``/``good`` say the raw one may be stale (retention)."""
    take = last & found.has_last
    at = picked[take]
    prior.has_last[at] = True
    prior.last_ts[at] = found.last_ts[take]
    prior.last_value[at] = found.last_value[take]
    prior.last_quality[at] = found.last_quality[take]
    take = good & found.has_good
    at = picked[take]
    prior.has_good[at] = True
    prior.good_ts[at] = found.good_ts[take]
    prior.good_value[at] = found.good_value[take]


def iso(ns: int) -> str:
    """UTC nanoseconds as ISO 8601 (for messages)."""
    seconds, rest = divmod(ns, 10**9)
    stamp = np.datetime64(seconds, "s").astype(str)
    return f"{stamp}Z" if not rest else f"{stamp}.{rest:09d}Z"


def answer(plan: BucketPlan, parts: Parts, prior: Prior | None) -> pa.Table:
    """The plan's result table from rollup cells and raw points (CPU-bound: not on the loop).

    Raw points become cells too, sorted by tag and time: the answer does not depend on
    the order the backend returned them in (many tags in one call answer as one each).
    """
    query.check_fetched(len(parts.raw))
    cuts = [plan.start_ns, plan.end_ns, parts.span.start, parts.span.end]
    for r in parts.ranges:
        cuts += (r.start, r.end)
    raw = parts.raw
    # the edges of the buckets holding raw points (a legacy plan may have countless)
    index = np.unique(plan.buckets.index(raw.ts))
    inner = [plan.buckets.starts(index), plan.buckets.ends(index)]
    edges = np.unique(np.concatenate([np.asarray(cuts, np.int64), *inner]))
    edges = edges[(edges >= plan.start_ns) & (edges <= plan.end_ns)]
    raw_cells = cells_of_points(raw.tag, raw.ts, raw.value, raw.quality, edges, end_ns=plan.end_ns)
    summary = summarize_cells(
        Cells.concat([parts.rollups, raw_cells]),
        plan.buckets,
        n_tags=len(plan.paths),
        start_ns=plan.start_ns,
        end_ns=plan.end_ns,
        aggregates=plan.aggregates,
        prior=prior,
        dense=plan.dense,
    )
    return plan.table(summary)
