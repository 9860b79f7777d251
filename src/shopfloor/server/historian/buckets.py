"""Where the buckets of a historian query begin and end, in UTC nanoseconds.

A process engineer reads a daily report from local midnight to local midnight, and an
hourly trend on the hours of the clock on the wall. So buckets are aligned to the wall
clock of the plant's IANA time zone (UTC when none is given):

- A fixed width ``w`` puts an edge at every instant whose local wall-clock time is a
  multiple of ``w`` since local 1970-01-01 00:00. For widths that divide an hour this is
  the UTC alignment, except in zones whose offset is not a whole number of hours (India
  +05:30, Nepal +05:45, Lord Howe's 30-minute DST): there an hourly bucket starts at
  xx:30 UTC. A one-day width runs local midnight to local midnight.
- ``Calendar`` buckets run from local midnight to local midnight: days, ISO weeks
  (Monday), months (3 months: quarters, 12: years), counted from 1970-01-01.
- Across a DST change a bucket keeps its wall-clock edges, so its real length changes: a
  day is 23 or 25 hours, the hourly bucket before a spring-forward gap ends at the gap.
  A wall-clock edge that falls into the gap (02:30 in Berlin in March) is moved to the
  first instant after it, the transition itself. A wall-clock time that happens twice
  (the repeated hour in October) is an edge both times for widths under a day (so the
  October day has 25 hourly buckets) and only the first time for a day or more.

The first bucket of a query is the one holding its start (it may begin before the start);
the last one ends at or after its end. Offsets come from :mod:`zoneinfo` (the system's tz
database), sampled once per day over the range and bisected to the second at a change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from shopfloor.errors import PayloadError
from shopfloor.model.points import Int64Array
from shopfloor.server.historian.base import BucketSize, Calendar, CalendarUnit

__all__ = [
    "DAY_NS",
    "MAX_EDGES",
    "Buckets",
    "EdgeBuckets",
    "UniformBuckets",
    "make_buckets",
    "zone",
]

SECOND_NS = 10**9
DAY_NS = 86_400 * SECOND_NS
_DAY_S = 86_400
_WEEK_ORIGIN_NS = 4 * DAY_NS
"""Monday 1970-01-05, local wall clock: ISO weeks start here."""

MAX_EDGES = 10_000_000
"""The most bucket edges a query may compute (80 MB); wider buckets or a shorter range."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class Buckets(Protocol):
    """The buckets of one query, numbered ``0 .. count - 1`` from the one holding start."""

    @property
    def count(self) -> int:
        """How many buckets overlap the query's range."""

    def index(self, ts: Int64Array) -> Int64Array:
        """The bucket number of each time (the times must lie in the query's range)."""

    def starts(self, index: Int64Array) -> Int64Array:
        """The start (UTC ns) of each bucket number."""

    def ends(self, index: Int64Array) -> Int64Array:
        """The end (UTC ns, exclusive) of each bucket number."""

    def edges(self) -> Int64Array:
        """Every edge: ``count + 1`` of them, the first at or before the query's start."""


@dataclass(frozen=True, slots=True)
class UniformBuckets:
    """Buckets of one width: edges at ``origin + k * width``, the first at ``k = first``.

    Nothing is materialized, so a legacy query may span any number of buckets.
    """

    origin: int
    width: int
    first: int
    count: int

    def index(self, ts: Int64Array) -> Int64Array:
        """The bucket number of each time, by floor division."""
        out: Int64Array = ts - (self.origin + self.first * self.width)
        out //= self.width  # in place: this runs over every point of a query
        return out

    def starts(self, index: Int64Array) -> Int64Array:
        """The start of each bucket."""
        out: Int64Array = self.origin + (index + self.first) * self.width
        return out

    def ends(self, index: Int64Array) -> Int64Array:
        """The end of each bucket."""
        out: Int64Array = self.starts(index) + self.width
        return out

    def edges(self) -> Int64Array:
        """Every edge, materialized."""
        return self.starts(np.arange(self.count + 1, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class EdgeBuckets:
    """Buckets between explicit edges (DST changes, calendar units)."""

    edge_array: Int64Array

    @property
    def count(self) -> int:
        """How many buckets: one less than the edges."""
        return len(self.edge_array) - 1

    def index(self, ts: Int64Array) -> Int64Array:
        """The bucket number of each time, by binary search."""
        out: Int64Array = np.searchsorted(self.edge_array, ts, side="right") - 1
        return out

    def starts(self, index: Int64Array) -> Int64Array:
        """The start of each bucket."""
        out: Int64Array = self.edge_array[index]
        return out

    def ends(self, index: Int64Array) -> Int64Array:
        """The end of each bucket."""
        out: Int64Array = self.edge_array[index + 1]
        return out

    def edges(self) -> Int64Array:
        """Every edge."""
        return self.edge_array


def zone(tz: str | None) -> ZoneInfo | None:
    """The time zone named ``tz`` (IANA, e.g. ``Europe/Berlin``), or None for UTC.

    Raises:
        PayloadError: the name is not in the tz database (field ``tz``).
    """
    if tz is None:
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise PayloadError("tz", f"unknown time zone {tz!r:.60}: use an IANA name") from err


def make_buckets(
    start_ns: int,
    end_ns: int,
    bucket: BucketSize,
    *,
    tz: str | None = None,
    field: str = "bucket",
) -> Buckets:
    """The buckets covering ``[start_ns, end_ns)`` (none when ``end_ns <= start_ns``).

    Args:
        start_ns: the range's start (UTC ns), inclusive.
        end_ns: the range's end (UTC ns), exclusive.
        bucket: a width in nanoseconds or a :class:`~.base.Calendar` unit.
        tz: an IANA time zone name; None aligns to UTC.
        field: the name errors give the bucket argument.

    Raises:
        PayloadError: a non-positive width or count, an unknown zone, more than
            :data:`MAX_EDGES` edges to compute, or a range outside the int64 time scale.
    """
    width = _check_bucket(bucket, field)
    if not isinstance(bucket, Calendar):
        bucket = width  # a numpy integer becomes a Python int
    zoneinfo = zone(tz)
    if end_ns <= start_ns:
        return UniformBuckets(0, DAY_NS, 0, 0)
    span = width if isinstance(bucket, int) else _calendar_span(bucket)
    lo, hi = start_ns - span - 2 * DAY_NS, end_ns + span + 2 * DAY_NS
    if isinstance(bucket, int) and zoneinfo is None:
        return _uniform(start_ns, end_ns, width, offset=0)
    if lo < _INT64_MIN // 2 or hi > _INT64_MAX // 2:
        raise PayloadError("start", "a zoned or calendar query must lie between 1824 and 2115")
    starts, offsets = _segments(zoneinfo, lo, hi)
    if isinstance(bucket, int) and len(offsets) == 1:
        return _uniform(start_ns, end_ns, width, offset=offsets[0])
    if isinstance(bucket, int):
        if (hi - lo) // width > MAX_EDGES:
            raise PayloadError(field, f"more than {MAX_EDGES} buckets: choose wider buckets")
        walls = _aligned_walls(lo + min(offsets), hi + max(offsets), width, origin=0)
        first_only = width >= DAY_NS
    else:
        walls = _calendar_walls(lo + min(offsets), hi + max(offsets), bucket)
        first_only = True
    edges = _instants(walls, starts, offsets, hi, first_only=first_only)
    i0 = int(np.searchsorted(edges, start_ns, side="right")) - 1
    i1 = int(np.searchsorted(edges, end_ns, side="left"))
    if i0 < 0 or i1 >= len(edges):  # the slack above makes this impossible
        raise AssertionError("bucket edges do not cover the range")
    return EdgeBuckets(np.ascontiguousarray(edges[i0 : i1 + 1]))


def _check_bucket(bucket: BucketSize, field: str) -> int:
    """Validate ``bucket``; return its fixed width (0 for a calendar unit)."""
    if isinstance(bucket, Calendar):
        if not isinstance(bucket.unit, CalendarUnit):
            raise PayloadError(field, f"unknown calendar unit {bucket.unit!r:.30}")
        if bucket.count < 1:
            raise PayloadError(
                field, f"a calendar bucket needs a count of 1 or more, got {bucket.count}"
            )
        return 0
    if isinstance(bucket, bool) or not isinstance(bucket, int | np.integer):
        raise PayloadError(field, "must be a width in nanoseconds or a calendar unit")
    if bucket <= 0:
        raise PayloadError(field, "must be positive")
    return int(bucket)


def _calendar_span(bucket: Calendar) -> int:
    """The longest a calendar bucket can be, with a day to spare for DST."""
    days = {CalendarUnit.DAY: 1, CalendarUnit.WEEK: 7, CalendarUnit.MONTH: 31}[bucket.unit]
    return (days * bucket.count + 1) * DAY_NS


def _uniform(start_ns: int, end_ns: int, width: int, *, offset: int) -> UniformBuckets:
    """Fixed-width buckets under one constant UTC offset: edges where ``wall % width == 0``."""
    origin = -offset  # the instant whose wall-clock time is local 1970-01-01 00:00
    first = (start_ns - origin) // width
    last = (end_ns - 1 - origin) // width
    if origin + first * width < _INT64_MIN or origin + (last + 1) * width > _INT64_MAX:
        raise PayloadError("start", "the buckets reach beyond the int64 time scale")
    return UniformBuckets(origin, width, first, last - first + 1)


def _utc_offset_s(zoneinfo: ZoneInfo, second: int) -> int:
    offset = dt.datetime.fromtimestamp(second, zoneinfo).utcoffset()
    return 0 if offset is None else offset.days * _DAY_S + offset.seconds


def _segments(zoneinfo: ZoneInfo | None, lo_ns: int, hi_ns: int) -> tuple[list[int], list[int]]:
    """The UTC offsets in force over ``[lo_ns, hi_ns)``: ``(starts, offsets)`` in ns.

    ``offsets[i]`` holds from ``starts[i]`` (``starts[0] == lo_ns``) to the next start.
    The offset is sampled once a day and a change bisected to the second; zones do not
    change twice within a day.
    """
    if zoneinfo is None:
        return [lo_ns], [0]
    lo_s, hi_s = lo_ns // SECOND_NS, -(-hi_ns // SECOND_NS)
    current = _utc_offset_s(zoneinfo, lo_s)
    starts, offsets = [lo_ns], [current * SECOND_NS]
    second = lo_s
    while second < hi_s:
        step = min(second + _DAY_S, hi_s)
        left = second
        while _utc_offset_s(zoneinfo, step) != current:
            right = step  # offset(left) == current != offset(right)
            while right - left > 1:
                middle = (left + right) // 2
                if _utc_offset_s(zoneinfo, middle) == current:
                    left = middle
                else:
                    right = middle
            current = _utc_offset_s(zoneinfo, right)
            starts.append(right * SECOND_NS)
            offsets.append(current * SECOND_NS)
            left = right
        second = step
    return starts, offsets


def _aligned_walls(wall_lo: int, wall_hi: int, width: int, *, origin: int) -> Int64Array:
    """Wall-clock times ``origin + k * width`` within ``[wall_lo, wall_hi]``."""
    k0 = -(-(wall_lo - origin) // width)
    k1 = (wall_hi - origin) // width
    return origin + np.arange(k0, k1 + 1, dtype=np.int64) * width


def _calendar_walls(wall_lo: int, wall_hi: int, bucket: Calendar) -> Int64Array:
    """Wall-clock starts of the calendar buckets within ``[wall_lo, wall_hi]``."""
    if bucket.unit is CalendarUnit.DAY:
        return _aligned_walls(wall_lo, wall_hi, bucket.count * DAY_NS, origin=0)
    if bucket.unit is CalendarUnit.WEEK:
        return _aligned_walls(wall_lo, wall_hi, 7 * bucket.count * DAY_NS, origin=_WEEK_ORIGIN_NS)
    epoch = dt.date(1970, 1, 1)
    first = epoch + dt.timedelta(days=wall_lo // DAY_NS)
    last = epoch + dt.timedelta(days=wall_hi // DAY_NS)
    m0 = (first.year - 1970) * 12 + first.month - 1
    m1 = (last.year - 1970) * 12 + last.month - 1
    m0 += -m0 % bucket.count
    days = [
        (dt.date(1970 + m // 12, m % 12 + 1, 1) - epoch).days
        for m in range(m0, m1 + 1, bucket.count)
    ]
    return np.asarray(days, dtype=np.int64) * DAY_NS


def _instants(
    walls: Int64Array, starts: list[int], offsets: list[int], hi: int, *, first_only: bool
) -> Int64Array:
    """The UTC instants at which the wall clock reaches each of ``walls``, sorted, unique.

    In a segment of constant offset the instant is ``wall - offset``. A wall time skipped
    by a spring-forward gap is reached at the transition. A repeated wall time gives both
    instants, or only the earlier one with ``first_only``.
    """
    bounds = [*starts[1:], hi]
    best = np.full(len(walls), _INT64_MAX, dtype=np.int64)
    found: list[Int64Array] = []
    for i, (seg_start, seg_end, offset) in enumerate(zip(starts, bounds, offsets, strict=True)):
        candidate = walls - offset
        hit = (candidate >= seg_start) & (candidate < seg_end)
        if i and offset > offsets[i - 1]:  # spring forward: walls in the gap map to its end
            gap = (walls >= seg_start + offsets[i - 1]) & (walls < seg_start + offset)
            candidate = np.where(gap, seg_start, candidate)
            hit |= gap
        if first_only:
            best = np.where(hit & (candidate < best), candidate, best)
        else:
            found.append(candidate[hit])
    if first_only:
        return np.unique(best[best != _INT64_MAX])
    return np.unique(np.concatenate(found))
