"""The historian's one query engine: bucketed aggregates and interpolation, in numpy.

Every backend only fetches points (:class:`Points`, plus :class:`Prior` and
:class:`Following` around the range); the answers are computed here, so DuckDB and
PostgreSQL cannot disagree. Work goes by columns: a few passes of ``reduceat``,
``searchsorted`` and friends over all points, a loop per tag at most.

**Usable points.** A point counts only if its quality is Good (the two severity bits
clear) and its value is a number. ``bad`` counts the points of a bucket whose quality is
not Good (Uncertain or Bad); a Good NaN (a text tag) is in neither.

**Aggregates** of a bucket (its part inside the query's range):

- ``count``: usable points. ``avg``, ``min``, ``max``, ``sum``: of their values.
  ``stddev``: the sample standard deviation (n - 1), null below two values.
  ``first``, ``last``: the value of the earliest and of the latest usable point.
- ``twa``, the time-weighted average: the integral of a step function over the bucket
  divided by the time it is defined. A usable point's value holds from its time until
  the next point of its tag, *whatever that point's quality*; a point that is not usable
  holds nothing, so a Bad reading ends the hold of the Good value before it and its own
  span counts for nothing. The value in force at the bucket's start comes from the last
  point before it, before the query's start too (however old). The last point holds to
  the end of the range. Null when no value holds during any of the bucket.
- ``delta``, the increase of a counter: the sum over the bucket's usable points of each
  one's increase over the previous usable point of its tag (before the range too):
  ``v - prev`` if ``v >= prev``, else ``v``, since a decrease is a counter reset and the
  counter has counted from zero up to ``v`` since (as Prometheus' ``increase()`` and
  Ignition's counter mode do). The increase between the last point of one bucket and the
  first of the next belongs to the later point's bucket, so adjacent buckets add up to
  their union. A tag's very first usable point adds nothing. A counter that jitters
  downwards (a float totalizer) reads as resets: clean it at the source.
- Every aggregate but ``count``, ``bad`` and ``twa`` is null for a bucket without
  usable points.

**Interpolation** at a time ``t``, from usable points only (Bad points are skipped):
``previous`` is the value of the last usable point at or before ``t`` (the last known
good value, however old); ``linear`` is a point's own value at its time and the straight
line between the usable neighbours around ``t``, null before the first and after the last
usable point (no extrapolation). Both are null before a tag's first usable point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.model.points import Float64Array, Int64Array, UInt32Array
from shopfloor.server.historian.base import Aggregate, Interpolation
from shopfloor.server.historian.buckets import Buckets

__all__ = [
    "Column",
    "Following",
    "Points",
    "Prior",
    "Summary",
    "interpolate",
    "summarize",
    "usable",
]

IntpArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_GOOD_MASK = np.uint32(0xC0000000)
_INT64_MAX = np.iinfo(np.int64).max
_ORDER_FREE = {
    Aggregate.AVG,
    Aggregate.MIN,
    Aggregate.MAX,
    Aggregate.FIRST,
    Aggregate.LAST,
    Aggregate.COUNT,
    Aggregate.SUM,
    Aggregate.STDDEV,
}


def usable(quality: UInt32Array, value: Float64Array) -> BoolArray:
    """Mask of the points that count: Good quality and a numeric value."""
    mask: BoolArray = ((quality & _GOOD_MASK) == 0) & ~np.isnan(value)
    return mask


@dataclass(frozen=True, slots=True)
class Points:
    """Points of a query's tags in ``[start, end)``, in any order.

    Attributes:
        tag: per point, the index of its tag in the query's tag list.
        ts: UTC nanoseconds. value: float64 (NaN for text). quality: OPC UA status code.
    """

    tag: IntpArray
    ts: Int64Array
    value: Float64Array
    quality: UInt32Array

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> Points:
        """No points."""
        return cls(np.zeros(0, np.intp), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint32))


@dataclass(frozen=True, slots=True)
class Prior:
    """What lies before a query's range, one entry per tag of the query.

    Attributes:
        has_last, last_ts, last_value, last_quality: the last point of any quality (the
            value in force at the start for ``twa``, if usable).
        has_good, good_ts, good_value: the last usable point (the baseline of ``delta``,
            the left neighbour for interpolation).
    """

    has_last: BoolArray
    last_ts: Int64Array
    last_value: Float64Array
    last_quality: UInt32Array
    has_good: BoolArray
    good_ts: Int64Array
    good_value: Float64Array

    @classmethod
    def nothing(cls, n_tags: int) -> Prior:
        """Nothing before the range for any of ``n_tags`` tags."""
        no = np.zeros(n_tags, np.bool_)
        zero = np.zeros(n_tags, np.int64)
        nan = np.full(n_tags, np.nan)
        return cls(no, zero, nan, np.zeros(n_tags, np.uint32), no.copy(), zero.copy(), nan.copy())


@dataclass(frozen=True, slots=True)
class Following:
    """Per tag of a query, the first usable point at or after its range (``linear``)."""

    has: BoolArray
    ts: Int64Array
    value: Float64Array

    @classmethod
    def nothing(cls, n_tags: int) -> Following:
        """Nothing after the range for any of ``n_tags`` tags."""
        return cls(np.zeros(n_tags, np.bool_), np.zeros(n_tags, np.int64), np.full(n_tags, np.nan))


@dataclass(frozen=True, slots=True)
class Column:
    """One result column: values, and where they are defined (elsewhere null)."""

    values: npt.NDArray[Any]
    valid: BoolArray


@dataclass(frozen=True, slots=True)
class Summary:
    """Bucketed aggregates: one entry per cell (``tag * n_buckets + bucket``), ascending."""

    cells: Int64Array
    n_buckets: int
    columns: dict[Aggregate, Column]
    bad: Int64Array


# ------------------------------------------------------------------------ aggregates
def summarize(
    points: Points,
    buckets: Buckets,
    *,
    n_tags: int,
    start_ns: int,
    end_ns: int,
    aggregates: Sequence[Aggregate],
    prior: Prior | None = None,
    dense: bool = True,
) -> Summary:
    """Aggregate ``points`` (all inside ``[start_ns, end_ns)``) per tag and bucket.

    Args:
        points: the points of the range, any order.
        buckets: the buckets of the range.
        n_tags: how many tags the query has (``points.tag`` is below it).
        start_ns: the range's start (inclusive); end_ns: its end (exclusive).
        aggregates: what to compute (see the module docstring).
        prior: what lies before the range; needed for ``twa`` and ``delta``.
        dense: every cell of ``n_tags x buckets.count`` (True), or only the cells that
            have a usable point (False, the legacy :meth:`read_aggregates` shape).
    """
    wanted = list(dict.fromkeys(Aggregate(a) for a in aggregates))
    nb = buckets.count
    prior = prior if prior is not None else Prior.nothing(n_tags)
    key = points.tag.astype(np.int64, copy=True)
    key *= nb
    key += buckets.index(points.ts)
    good_quality = (points.quality & _GOOD_MASK) == 0
    use = good_quality & ~np.isnan(points.value)
    every = bool(use.all())  # the common case: no copies of the columns

    def usable_part(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return column if every else column[use]

    ts_needed = {Aggregate.FIRST, Aggregate.LAST} & set(wanted)
    moments = None
    if not dense or _ORDER_FREE & set(wanted):  # sparse answers need the counts
        moments = _Moments.of(
            usable_part(key),
            usable_part(points.ts) if ts_needed else points.ts[:0],
            usable_part(points.value),
            set(wanted),
        )
    cells = np.arange(n_tags * nb, dtype=np.int64) if dense or moments is None else moments.keys
    columns: dict[Aggregate, Column] = {}
    for agg in wanted:
        if agg in _ORDER_FREE and moments is not None:
            columns[agg] = moments.column(agg, cells)
    if Aggregate.TWA in wanted:
        columns[Aggregate.TWA] = _twa(
            _Timeline.of(points, key, use, nb),
            buckets=buckets,
            cells=cells,
            n_tags=n_tags,
            start_ns=start_ns,
            end_ns=end_ns,
            prior=prior,
            dense=dense,
        )
    if Aggregate.DELTA in wanted:
        mine = points if every else _take(points, np.flatnonzero(use))
        line = _Timeline.of(mine, usable_part(key), np.ones(len(mine), np.bool_), nb)
        columns[Aggregate.DELTA] = _delta(line, cells=cells, prior=prior)
    bad_keys, bad_counts = np.unique(key[~good_quality], return_counts=True)  # usually few
    bad = _align(bad_keys, bad_counts.astype(np.int64), cells, fill=0).values
    return Summary(cells, nb, {a: columns[a] for a in wanted}, np.asarray(bad, np.int64))


def _align(
    keys: Int64Array,
    values: npt.NDArray[np.float64] | Int64Array,
    cells: Int64Array,
    *,
    fill: float,
) -> Column:
    """Values known for sorted ``keys``, placed on ``cells`` (``fill`` and invalid elsewhere)."""
    out: npt.NDArray[Any] = np.full(len(cells), fill, dtype=values.dtype)
    if not len(keys) or not len(cells):
        return Column(out, np.zeros(len(cells), np.bool_))
    pos = np.searchsorted(keys, cells)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == cells[found]
    out[found] = values[pos[found]]
    return Column(out, found)


def _run_starts(key: Int64Array) -> IntpArray:
    """Where a run of equal keys begins."""
    if not len(key):
        return np.zeros(0, np.intp)
    change = np.empty(len(key), np.bool_)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    return np.flatnonzero(change)


@dataclass(slots=True)
class _Moments:
    """Order-free aggregates per key, in two levels so that almost-sorted input is cheap.

    Level one reduces runs of equal keys in the order given: the DuckDB writer stores each
    commit sorted by (tag, ts), so a range of many tags arrives as a few runs per tag and
    bucket and needs no sort of the points. Level two merges the runs of a key (a sort of
    the runs only, when they are not in key order already).

    For ``stddev`` each run keeps ``ref`` (its first value) and ``dsum`` (the sum of its
    values' differences from ``ref``): means of values near 1e9 lose their last digits,
    which Chan's combination of many small runs would square into the result (1e-4
    relative error on 1e9 plus 1e-3 of noise); differences keep them.
    """

    keys: Int64Array
    n: Int64Array
    sum: Float64Array
    min: Float64Array
    max: Float64Array
    m2: Float64Array
    first_ts: Int64Array
    first: Float64Array
    last_ts: Int64Array
    last: Float64Array
    ref: Float64Array
    dsum: Float64Array

    @classmethod
    def of(
        cls, key: Int64Array, ts: Int64Array, value: Float64Array, wanted: set[Aggregate]
    ) -> _Moments:
        starts = _run_starts(key)
        m = cls._reduce(key, ts, value, starts, wanted)
        if len(m.keys) > 1 and np.any(m.keys[1:] <= m.keys[:-1]):
            m = m._merge(np.argsort(m.keys, kind="stable"), wanted)
        return m

    @classmethod
    def _reduce(
        cls,
        key: Int64Array,
        ts: Int64Array,
        value: Float64Array,
        starts: IntpArray,
        wanted: set[Aggregate],
    ) -> _Moments:
        n = np.diff(np.append(starts, len(key))).astype(np.int64)
        empty_f, empty_i = np.zeros(0), np.zeros(0, np.int64)
        total = empty_f
        if wanted & {Aggregate.AVG, Aggregate.SUM, Aggregate.STDDEV}:
            total = np.add.reduceat(value, starts) if len(starts) else empty_f
        m2 = ref = dsum = empty_f
        if Aggregate.STDDEV in wanted and len(starts):
            ref = value[starts]
            rel = value - np.repeat(ref, n)
            dsum = np.add.reduceat(rel, starts)
            dev = rel - np.repeat(dsum / n, n)
            m2 = np.add.reduceat(dev * dev, starts)
        lo = np.minimum.reduceat(value, starts) if Aggregate.MIN in wanted and len(n) else empty_f
        hi = np.maximum.reduceat(value, starts) if Aggregate.MAX in wanted and len(n) else empty_f
        first_ts, first, last_ts, last = empty_i, empty_f, empty_i, empty_f
        ends = starts + n - 1
        ordered = bool(wanted & {Aggregate.FIRST, Aggregate.LAST}) and _runs_ordered(ts, starts)
        if Aggregate.FIRST in wanted and len(n):
            pick = starts if ordered else _extreme(ts, starts, n, earliest=True)
            first_ts, first = ts[pick], value[pick]
        if Aggregate.LAST in wanted and len(n):
            pick = ends if ordered else _extreme(ts, starts, n, earliest=False)
            last_ts, last = ts[pick], value[pick]
        keys = key[starts]
        return cls(keys, n, total, lo, hi, m2, first_ts, first, last_ts, last, ref, dsum)

    def _merge(self, order: IntpArray, wanted: set[Aggregate]) -> _Moments:
        keys = self.keys[order]
        starts = _run_starts(keys)
        runs = np.diff(np.append(starts, len(keys)))
        n_run = self.n[order]
        n = np.add.reduceat(n_run, starts)
        total, m2, ref, dsum = self.sum, self.m2, self.ref, self.dsum
        if len(total):
            total = np.add.reduceat(total[order], starts)
        if len(m2):  # Chan et al., with means relative to the key's first run's ``ref``
            ref_run = ref[order]
            ref = ref_run[starts]
            offset = ref_run - np.repeat(ref, runs)
            dsum_run = dsum[order]
            dsum = np.add.reduceat(dsum_run + n_run * offset, starts)
            spread = offset + dsum_run / n_run - np.repeat(dsum / n, runs)
            m2 = np.add.reduceat(m2[order] + n_run * spread * spread, starts)
        lo = np.minimum.reduceat(self.min[order], starts) if len(self.min) else self.min
        hi = np.maximum.reduceat(self.max[order], starts) if len(self.max) else self.max
        first_ts, first, last_ts, last = self.first_ts, self.first, self.last_ts, self.last
        if len(first_ts):
            first_ts = first_ts[order]
            pick = _extreme(first_ts, starts, runs, earliest=True)
            first_ts, first = first_ts[pick], self.first[order][pick]
        if len(last_ts):
            last_ts = last_ts[order]
            pick = _extreme(last_ts, starts, runs, earliest=False)
            last_ts, last = last_ts[pick], self.last[order][pick]
        return _Moments(
            keys[starts], n, total, lo, hi, m2, first_ts, first, last_ts, last, ref, dsum
        )

    def column(self, agg: Aggregate, cells: Int64Array) -> Column:
        """The values of ``agg`` on ``cells`` (null where a cell has no usable point)."""
        if agg is Aggregate.COUNT:
            counted = _align(self.keys, self.n, cells, fill=0)
            return Column(counted.values, np.ones(len(cells), np.bool_))
        if agg is Aggregate.STDDEV:
            with np.errstate(divide="ignore", invalid="ignore"):
                std = np.sqrt(self.m2 / (self.n - 1))
            col = _align(self.keys, std, cells, fill=np.nan)
            enough = _align(self.keys, self.n, cells, fill=0).values >= 2
            return Column(col.values, col.valid & enough)
        if agg is Aggregate.AVG:
            values = self.sum / self.n if len(self.n) else self.sum
        else:
            values = {
                Aggregate.SUM: self.sum,
                Aggregate.MIN: self.min,
                Aggregate.MAX: self.max,
                Aggregate.FIRST: self.first,
                Aggregate.LAST: self.last,
            }[agg]
        return _align(self.keys, values, cells, fill=np.nan)


def _extreme(
    ts: Int64Array, starts: IntpArray, sizes: npt.NDArray[np.integer], *, earliest: bool
) -> IntpArray:
    """Per run, the position of its earliest (or latest) time.

    Of equal times the first position wins for ``earliest``, the last one otherwise, so
    a later write of the same time is the ``last``.
    """
    reduce = np.minimum if earliest else np.maximum
    best = reduce.reduceat(ts, starts)
    at = np.arange(len(ts), dtype=np.intp)
    pos = np.where(ts == np.repeat(best, sizes), at, len(ts) if earliest else -1)
    pick: IntpArray = reduce.reduceat(pos, starts)
    return pick


def _time_run_starts(key: Int64Array, ts: Int64Array) -> IntpArray:
    """Where a run begins: a new key, or time going back (blocks read out of order)."""
    if not len(key):
        return np.zeros(0, np.intp)
    change = np.empty(len(key), np.bool_)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    change[1:] |= ts[1:] < ts[:-1]
    return np.flatnonzero(change)


def _runs_ordered(ts: Int64Array, starts: IntpArray) -> bool:
    """Whether time never goes back within a run (then a run's ends are its extremes)."""
    if len(ts) < 2:
        return True
    forward = ts[1:] >= ts[:-1]
    forward[starts[1:] - 1] = True  # across runs anything goes
    return bool(forward.all())


def _tag_time_order(tag: IntpArray, ts: Int64Array) -> IntpArray | None:
    """A permutation sorting points by (tag, ts), or None when they already are.

    A stable sort by tag alone suffices when each tag's points come in time order (the
    DuckDB writer's commits are time-ordered runs); otherwise a full lexsort.
    """
    if _sorted_by_tag_time(tag, ts):
        return None
    order: IntpArray = np.argsort(tag, kind="stable")
    if _sorted_by_tag_time(tag[order], ts[order]):
        return order
    full: IntpArray = np.lexsort((ts, tag))
    return full


def _sorted_by_tag_time(tag: IntpArray, ts: Int64Array) -> bool:
    if len(tag) < 2:
        return True
    step = np.diff(tag)
    return bool(np.all((step > 0) | ((step == 0) & (ts[1:] >= ts[:-1]))))


def _take(points: Points, order: IntpArray) -> Points:
    return Points(points.tag[order], points.ts[order], points.value[order], points.quality[order])


def _tag_bounds(tag: IntpArray, n_tags: int) -> IntpArray:
    """For points sorted by tag: where each tag's points begin (``n_tags + 1`` entries)."""
    bounds: IntpArray = np.searchsorted(tag, np.arange(n_tags + 1))
    return bounds


@dataclass(frozen=True, slots=True)
class _Timeline:
    """Points cut into runs of one cell each, and each run's neighbours in time.

    ``twa``, ``delta`` and interpolation need every point's neighbours in time. A run is
    a stretch of one cell in which time does not go back. When the runs of a tag do not
    overlap in time (the DuckDB writer's commits, each sorted by (tag, ts); PostgreSQL's
    blocks, each in time order) the points stay in the order given and only the runs are
    sorted. Otherwise (a backfill overlapping older commits) the points are sorted first.

    Attributes:
        pts, key, ok: the points, their cells, whether each is usable.
        starts, ends: per run, its first and last position.
        order: the runs sorted by (cell, time).
        before, after: per run, the run of the same tag just before (after) it in time,
            or -1.
    """

    pts: Points
    key: Int64Array
    ok: BoolArray
    starts: IntpArray
    ends: IntpArray
    order: IntpArray
    before: IntpArray
    after: IntpArray

    @classmethod
    def of(cls, pts: Points, key: Int64Array, ok: BoolArray, nb: int) -> _Timeline:
        line = cls._try(pts, key, ok, nb)
        if line is None:
            order = _tag_time_order(pts.tag, pts.ts)
            assert order is not None  # else _try would have succeeded
            line = cls._try(_take(pts, order), key[order], ok[order], nb)
            assert line is not None  # sorted by (tag, ts): one run per cell, in order
        return line

    @classmethod
    def _try(cls, pts: Points, key: Int64Array, ok: BoolArray, nb: int) -> _Timeline | None:
        starts = _time_run_starts(key, pts.ts)
        ends = np.append(starts[1:], len(key)) - 1
        run_key = key[starts]
        if len(run_key) < 2 or bool(np.all(run_key[1:] > run_key[:-1])):
            order = np.arange(len(run_key), dtype=np.intp)
        else:
            order = np.lexsort((pts.ts[starts], run_key))
        tag = run_key[order] // max(nb, 1)
        same = tag[1:] == tag[:-1]
        if np.any(same & (pts.ts[ends[order[:-1]]] > pts.ts[starts[order[1:]]])):
            return None
        before = np.full(len(order), -1, np.intp)
        before[order[1:][same]] = order[:-1][same]
        after = np.full(len(order), -1, np.intp)
        after[order[:-1][same]] = order[1:][same]
        return cls(pts, key, ok, starts, ends, order, before, after)

    def groups(self) -> tuple[Int64Array, IntpArray]:
        """The cells with points (ascending) and where each one's runs start in ``order``."""
        keys = self.key[self.starts][self.order]
        group_starts = _run_starts(keys)
        return keys[group_starts], group_starts

    def per_cell(self, per_run: Float64Array, group_starts: IntpArray) -> Float64Array:
        """Sum per-run values over the runs of each cell."""
        if not len(group_starts):
            return np.zeros(0)
        out: Float64Array = np.add.reduceat(per_run[self.order], group_starts)
        return out


def _twa(
    line: _Timeline,
    *,
    buckets: Buckets,
    cells: Int64Array,
    n_tags: int,
    start_ns: int,
    end_ns: int,
    prior: Prior,
    dense: bool,
) -> Column:
    """Time-weighted averages on ``cells``.

    Per cell with points: the spans of its own points (each up to the next point of the
    tag or the bucket's end) plus the head, from the bucket's start to its first point,
    held by the point before (or by the prior point). A cell without points lies
    entirely within the hold of the last point before it.
    """
    pts, ok, starts, ends = line.pts, line.ok, line.starts, line.ends
    nb = buckets.count
    following = np.empty(len(pts), np.int64)
    following[:-1] = pts.ts[1:]  # within a run; the runs' last points are set below
    if len(starts):
        run_key = line.key[starts]
        bucket_end = np.minimum(buckets.ends(run_key % nb), end_ns)
        successor = pts.ts[starts[np.maximum(line.after, 0)]]
        following[ends] = np.minimum(np.where(line.after >= 0, successor, end_ns), bucket_end)
    span = np.where(ok, following - pts.ts, 0).astype(np.float64)
    area = np.where(ok, pts.value, 0.0) * span
    keys, group_starts = line.groups()
    weight = line.per_cell(np.add.reduceat(span, starts) if len(starts) else span, group_starts)
    total = line.per_cell(np.add.reduceat(area, starts) if len(starts) else area, group_starts)
    # the head of each cell: held by the point before its first run, or by the prior point
    tag = keys // max(nb, 1)
    first_run = line.order[group_starts]
    before = line.before[first_run]
    held_by = ends[np.maximum(before, 0)]
    prior_ok = prior.has_last & usable(prior.last_quality, prior.last_value)
    head_ok = np.where(before >= 0, ok[held_by], prior_ok[tag])
    head_value = np.where(before >= 0, pts.value[held_by], prior.last_value[tag])
    cell_start = np.maximum(buckets.starts(keys % max(nb, 1)), start_ns)
    head = np.where(head_ok, pts.ts[starts[first_run]] - cell_start, 0).astype(np.float64)
    weight = weight + head
    total = total + np.where(head_ok, head_value, 0.0) * head
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = total / weight
    col = _align(keys, avg, cells, fill=np.nan)
    valid = col.valid & (_align(keys, weight, cells, fill=0.0).values > 0)
    values = col.values
    if dense:  # a cell without points: the value held by the last point before it
        group = np.full(n_tags * nb, -1, np.int64)
        group[keys] = np.arange(len(keys))
        latest = np.maximum.accumulate(group.reshape(n_tags, nb), axis=1).ravel()
        row = np.repeat(np.arange(n_tags), nb)
        mine = latest >= 0
        fill, fill_ok = prior.last_value[row], prior_ok[row]
        if len(keys):
            last_run = line.order[np.append(group_starts[1:], len(line.order)) - 1]
            last_point = ends[last_run][np.maximum(latest, 0)]
            fill = np.where(mine, pts.value[last_point], fill)
            fill_ok = np.where(mine, ok[last_point], fill_ok)
        empty = ~col.valid
        values = np.where(empty, fill, values)
        valid = np.where(empty, fill_ok, valid)
    return Column(values, valid)


def _delta(line: _Timeline, *, cells: Int64Array, prior: Prior) -> Column:
    """Counter increases per cell, from a timeline of usable points only."""
    pts, starts, ends = line.pts, line.starts, line.ends
    value = pts.value
    previous = np.empty(len(value))
    previous[1:] = value[:-1]  # within a run; the runs' first points are set below
    if len(starts):
        tag = pts.tag[starts]
        before = value[ends[np.maximum(line.before, 0)]]
        baseline = np.where(prior.has_good[tag], prior.good_value[tag], np.nan)
        previous[starts] = np.where(line.before >= 0, before, baseline)
    with np.errstate(invalid="ignore"):
        rise = np.where(
            np.isnan(previous), 0.0, np.where(value >= previous, value - previous, value)
        )
    keys, group_starts = line.groups()
    total = line.per_cell(np.add.reduceat(rise, starts) if len(starts) else rise, group_starts)
    return _align(keys, total, cells, fill=np.nan)


# --------------------------------------------------------------------- interpolation
def interpolate(
    points: Points,
    *,
    n_tags: int,
    times: Int64Array,
    method: Interpolation,
    prior: Prior | None = None,
    following: Following | None = None,
) -> Column:
    """The value of every tag at every time (see the module docstring).

    Args:
        points: the points from the earliest to just after the latest of ``times``.
        n_tags: how many tags the query has.
        times: UTC nanoseconds, any order.
        method: ``previous`` or ``linear``.
        prior: per tag, the last usable point before the earliest time.
        following: per tag, the first usable point after the latest time (``linear``).

    Returns:
        ``n_tags * len(times)`` values, tag-major, in the order of ``times``.
    """
    method = Interpolation(method)
    prior = prior if prior is not None else Prior.nothing(n_tags)
    following = following if following is not None else Following.nothing(n_tags)
    ok = usable(points.quality, points.value)
    pts = points if ok.all() else _take(points, np.flatnonzero(ok))
    line = _Timeline.of(pts, pts.tag.astype(np.int64), np.ones(len(pts), np.bool_), 1)
    pts = line.pts  # sorted, if they had to be
    m = len(times)
    at = np.tile(times, n_tags)
    row = np.repeat(np.arange(n_tags), m)
    run = _run_at(line, times, n_tags)  # per (tag, time): the run holding its left neighbour
    found = run >= 0
    r = np.maximum(run, 0)
    left = _last_at_or_before(pts.ts, line.starts[r], line.ends[r] + 1, at) if len(pts) else r
    left_ts = np.where(found, pts.ts[left] if len(pts) else 0, prior.good_ts[row])
    left_value = np.where(found, pts.value[left] if len(pts) else 0.0, prior.good_value[row])
    has_left = found | prior.has_good[row]
    if method is Interpolation.PREVIOUS:
        return Column(np.where(has_left, left_value, np.nan), has_left)
    right_ts, right_value, has_right = _right_neighbours(
        line, found=found, run=r, left=left, row=row, following=following
    )
    exact = has_left & (left_ts == at)
    inner = has_left & has_right
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (at - left_ts).astype(np.float64) / (right_ts - left_ts).astype(np.float64)
        line_value = left_value + (right_value - left_value) * frac
    valid = exact | inner
    return Column(np.where(exact, left_value, np.where(inner, line_value, np.nan)), valid)


def _run_at(line: _Timeline, times: Int64Array, n_tags: int) -> IntpArray:
    """Per tag and time, the last run (by number) of the tag starting at or before the time.

    -1 where the tag has no point at or before it. A loop per tag over its runs' starts.
    """
    m = len(times)
    out = np.full(n_tags * m, -1, np.intp)
    run_tag = line.key[line.starts][line.order]
    run_first = line.pts.ts[line.starts[line.order]]
    bounds = np.searchsorted(run_tag, np.arange(n_tags + 1))
    for k in range(n_tags):
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a == b:
            continue
        j = np.searchsorted(run_first[a:b], times, side="right") - 1
        out[k * m : (k + 1) * m] = np.where(j >= 0, line.order[a + np.maximum(j, 0)], -1)
    return out


def _last_at_or_before(ts: Int64Array, lo: IntpArray, hi: IntpArray, at: Int64Array) -> IntpArray:
    """Per query, the last position in ``[lo, hi)`` with ``ts <= at`` (``ts`` sorted there).

    A binary search over many segments at once: about log2(longest run) passes.
    """
    lo, hi = lo.copy(), hi.copy()
    last = len(ts) - 1
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        right = ts[np.minimum(mid, last)] <= at
        lo = np.where(active & right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    out: IntpArray = lo - 1
    return out


def _right_neighbours(
    line: _Timeline,
    *,
    found: BoolArray,
    run: IntpArray,
    left: IntpArray,
    row: IntpArray,
    following: Following,
) -> tuple[Int64Array, Float64Array, BoolArray]:
    """Per query, the first usable point after its left neighbour (or the tag's first)."""
    pts, starts, ends = line.pts, line.starts, line.ends
    n_tags = len(following.has)
    first_run = np.full(n_tags, -1, np.intp)  # per tag, its earliest run
    if len(starts):
        run_tag = line.key[starts][line.order]
        begins = np.ones(len(run_tag), np.bool_)
        begins[1:] = run_tag[1:] != run_tag[:-1]
        first_run[run_tag[begins]] = line.order[begins]
    inside = found & (left < ends[run]) if len(starts) else found
    later = line.after[run] if len(starts) else run
    nxt_run = np.where(found, np.where(inside, -1, later), first_run[row])
    pos = np.where(inside, left + 1, starts[np.maximum(nxt_run, 0)] if len(starts) else 0)
    in_data = inside | (nxt_run >= 0)
    ts = np.where(in_data, pts.ts[pos] if len(pts) else 0, following.ts[row])
    value = np.where(in_data, pts.value[pos] if len(pts) else 0.0, following.value[row])
    return ts, value, in_data | following.has[row]
