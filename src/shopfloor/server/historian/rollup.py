"""Rollup cells: per tag and stretch of time, the state that answers every aggregate exactly.

A month of 1 Hz data is 2.6 million points per tag; its 1-hour rollups are 720 rows. A
rollup row (a *cell*) keeps, for one tag and one UTC minute or hour, what the engine's
exact definitions (:mod:`~shopfloor.server.historian.aggregate`) need to combine cells
into any coarser bucket without the points:

- ``n``, ``bad``, ``pts`` (usable, not Good, any points), ``vmin``/``vmax``, the earliest
  and latest usable point (``first_*``/``last_*``), ``dsum`` (the sum of the usable
  values' differences from ``first_v``) and ``m2`` (their squared deviations from the
  cell's mean). Sums relative to a value of the cell keep their precision for a signal
  of 1e9 varying by 1e-3, where plain sums lose it to rounding; stddev combines them by
  Chan's parallel formula, which does not cancel as a sum of squares would;
- for ``twa``: ``head_ts`` (the earliest point of any quality: before it, the value in
  force comes from an earlier cell), ``hold`` (the latest point's value if usable, else
  NaN: what holds after the cell), ``area``/``span`` (the integral of the usable holds
  from ``head_ts`` to the cell's end, and the time they cover);
- for ``delta``: ``rise``, the counter increase inside the cell with its first usable
  point left out (its increase depends on the point before the cell, known only when
  cells are combined, from ``last`` of the previous cell with a usable point).

Cells are computed from points (:func:`cells_of_points`), merged into coarser cells
(:func:`merge_cells`: minutes into hours) and into a query's buckets
(:func:`summarize_cells`), which gives the same :class:`~.aggregate.Summary` as
:func:`~.aggregate.summarize` on the points (to floating-point rounding). Every cell holds
at least one point; a tag without points in a stretch has no cell there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.model.points import Float64Array, Int64Array, UInt32Array
from shopfloor.server.historian.aggregate import Column, Prior, Summary, usable
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.historian.buckets import Buckets

__all__ = [
    "HOUR_NS",
    "MINUTE_NS",
    "Cells",
    "RollupSettings",
    "cells_of_points",
    "hour_cells",
    "merge_cells",
    "summarize_cells",
]

MINUTE_NS = 60 * 10**9
HOUR_NS = 60 * MINUTE_NS

IntpArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_GOOD_MASK = np.uint32(0xC0000000)
_NO_POS = np.iinfo(np.intp).max


@dataclass(frozen=True, slots=True)
class Cells:
    """Cells as columns (see the module docstring); ``tag`` is a tag id or query index.

    ``dsum`` and ``m2`` are 0 and ``vmin``, ``vmax``, ``first_v``, ``last_v`` NaN where a
    cell has no usable point (``n == 0``); ``first_ts``/``last_ts`` are then 0.
    """

    tag: Int64Array
    start: Int64Array
    end: Int64Array
    n: Int64Array
    pts: Int64Array
    bad: Int64Array
    dsum: Float64Array
    m2: Float64Array
    vmin: Float64Array
    vmax: Float64Array
    first_ts: Int64Array
    first_v: Float64Array
    last_ts: Int64Array
    last_v: Float64Array
    head_ts: Int64Array
    hold: Float64Array
    area: Float64Array
    span_ns: Int64Array
    rise: Float64Array

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The column names, in storage order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def empty(cls) -> Cells:
        """No cells."""
        return cls.from_columns({name: np.zeros(0) for name in cls.names()})

    @classmethod
    def from_columns(cls, columns: dict[str, npt.NDArray[Any]]) -> Cells:
        """Cells from arrays by name (converted to each column's dtype once)."""
        out: dict[str, npt.NDArray[Any]] = {}
        for name in cls.names():
            kind = np.float64 if name in _FLOATS else np.int64
            out[name] = np.ascontiguousarray(columns[name], dtype=kind)
        return cls(**out)

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """The arrays by name."""
        return {name: getattr(self, name) for name in self.names()}

    def take(self, index: IntpArray | BoolArray) -> Cells:
        """The cells at ``index`` (positions or a mask)."""
        return Cells(**{name: column[index] for name, column in self.columns().items()})

    @classmethod
    def concat(cls, parts: Sequence[Cells]) -> Cells:
        """All cells of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.names()}
        )

    def with_tag(self, tag: Int64Array) -> Cells:
        """The same cells under other tag numbers (ids to query positions, or back)."""
        columns = self.columns()
        columns["tag"] = np.asarray(tag, np.int64)
        return Cells(**columns)


_FLOATS = {"dsum", "m2", "vmin", "vmax", "first_v", "last_v", "hold", "area", "rise"}


def _increase(value: Float64Array, previous: Float64Array) -> Float64Array:
    """A counter's increase from ``previous`` to ``value``: a decrease is a reset."""
    out: Float64Array = np.where(value >= previous, value - previous, value)
    return out


def _run_starts(*keys: npt.NDArray[Any]) -> IntpArray:
    """Where a run of equal key tuples begins (the arrays are sorted by them)."""
    n = len(keys[0])
    if not n:
        return np.zeros(0, np.intp)
    change = np.zeros(n, np.bool_)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _sorted_order(tag: Int64Array, ts: Int64Array) -> IntpArray | None:
    """A stable permutation sorting by (tag, ts), or None when already sorted.

    A stable sort by tag alone does when each tag's times already run forward (the DuckDB
    writer's commits, rollup rows read in storage order); otherwise a full lexsort. Of
    equal times the order given is kept, as the engine keeps it.
    """

    def ordered(t: Int64Array, s: Int64Array) -> bool:
        if len(t) < 2:
            return True
        step = np.diff(t)
        return bool(np.all((step > 0) | ((step == 0) & (s[1:] >= s[:-1]))))

    if ordered(tag, ts):
        return None
    order: IntpArray = np.argsort(tag, kind="stable")
    if ordered(tag[order], ts[order]):
        return order
    full: IntpArray = np.lexsort((ts, tag))
    return full


# ------------------------------------------------------------------- from points
def cells_of_points(
    tag: npt.NDArray[np.integer],
    ts: Int64Array,
    value: Float64Array,
    quality: UInt32Array,
    edges: Int64Array,
    *,
    end_ns: int | None = None,
) -> Cells:
    """The cells of points between ``edges``: one per tag and stretch holding a point.

    Args:
        tag, ts, value, quality: the points, any order, all in ``[edges[0], edges[-1])``.
        edges: the stretches' edges, ascending.
        end_ns: where the last point's hold ends at the latest (a query's end); a
            stretch's own end otherwise.
    """
    if not len(ts):
        return Cells.empty()
    tags = np.asarray(tag, np.int64)
    order = _sorted_order(tags, ts)
    if order is not None:
        tags, ts, value, quality = tags[order], ts[order], value[order], quality[order]
    stretch = np.searchsorted(edges, ts, side="right") - 1
    starts = _run_starts(tags, stretch)
    sizes = np.diff(np.append(starts, len(ts)))
    ends = starts + sizes - 1
    run = np.repeat(np.arange(len(starts)), sizes)
    good_quality = (quality & _GOOD_MASK) == 0
    use = good_quality & ~np.isnan(value)
    kept = np.where(use, value, 0.0)
    n = np.add.reduceat(use.astype(np.int64), starts)
    masked = np.where(use, value, np.nan)
    at = np.arange(len(ts), dtype=np.intp)
    first = np.minimum.reduceat(np.where(use, at, _NO_POS), starts)
    last = np.maximum.reduceat(np.where(use, at, -1), starts)
    has = n > 0
    first, last = np.where(has, first, 0), np.where(has, last, 0)
    shifted = np.where(use, value - np.repeat(value[first], sizes), 0.0)
    dsum = np.add.reduceat(shifted, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, dsum / np.maximum(n, 1), 0.0)
    deviation = np.where(use, shifted - np.repeat(mean, sizes), 0.0)
    cell_start = edges[stretch[starts]]
    cell_end = edges[stretch[starts] + 1]
    if end_ns is not None:
        cell_end = np.minimum(cell_end, end_ns)
    following = np.empty(len(ts), np.int64)
    following[:-1] = ts[1:]
    following[ends] = cell_end
    span = np.where(use, following - ts, 0)
    rise: Float64Array = np.zeros(len(starts))
    usable_at = np.flatnonzero(use)
    if len(usable_at) > 1:
        v, r = value[usable_at], run[usable_at]
        step = np.where(r[1:] == r[:-1], _increase(v[1:], v[:-1]), 0.0)
        rise = np.bincount(r[1:], weights=step, minlength=len(starts)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        vmin = np.fmin.reduceat(masked, starts)
        vmax = np.fmax.reduceat(masked, starts)
    return Cells(
        tag=tags[starts],
        start=cell_start,
        end=cell_end,
        n=n,
        pts=sizes.astype(np.int64),
        bad=np.add.reduceat((~good_quality).astype(np.int64), starts),
        dsum=dsum,
        m2=np.add.reduceat(deviation * deviation, starts),
        vmin=vmin,
        vmax=vmax,
        first_ts=np.where(has, ts[first], 0),
        first_v=np.where(has, value[first], np.nan),
        last_ts=np.where(has, ts[last], 0),
        last_v=np.where(has, value[last], np.nan),
        head_ts=ts[starts],
        hold=np.where(use[ends], value[ends], np.nan),
        area=np.add.reduceat(span.astype(np.float64) * kept, starts),
        span_ns=np.add.reduceat(span, starts),
        rise=rise,
    )


# -------------------------------------------------------------------- merging
def merge_cells(cells: Cells, group_starts: IntpArray, lo: Int64Array, hi: Int64Array) -> Cells:
    """Merge runs of cells into one cell each.

    Args:
        cells: sorted by (tag, start), one tag per run, runs not overlapping in time.
        group_starts: where each run begins.
        lo, hi: per run, the merged cell's start and end (its holds end at ``hi``).
    """
    g = group_starts
    count = len(g)
    if not count:
        return Cells.empty()
    if count == len(cells):  # one cell a group (buckets as wide as the cells): no merging
        return _widened(cells, np.asarray(lo, np.int64), np.asarray(hi, np.int64))
    sizes = np.diff(np.append(g, len(cells)))
    ge = g + sizes - 1
    group = np.repeat(np.arange(count), sizes)
    inner = np.ones(len(cells), np.bool_)
    inner[g] = False  # a run's first cell: its head is the merged cell's head
    has = cells.n > 0
    n = np.add.reduceat(cells.n, g)
    at = np.arange(len(cells), dtype=np.intp)
    first = np.minimum.reduceat(np.where(has, at, _NO_POS), g)
    last = np.maximum.reduceat(np.where(has, at, -1), g)
    found = n > 0
    first, last = np.where(found, first, 0), np.where(found, last, 0)
    # each cell's mean relative to the merged cell's first usable value, then Chan
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(has, cells.first_v - cells.first_v[first][group], 0.0)
        own_mean = np.where(has, offset + cells.dsum / np.maximum(cells.n, 1), 0.0)
        dsum = np.add.reduceat(np.where(has, cells.dsum + cells.n * offset, 0.0), g)
        mean = np.where(found, dsum / np.maximum(n, 1), 0.0)
    spread = own_mean - mean[group]
    m2 = np.add.reduceat(np.where(has, cells.m2 + cells.n * spread * spread, 0.0), g)
    # twa: the gap between a cell's end and the next one's first point, held by its hold
    before = np.maximum(at - 1, 0)
    gap = np.where(inner, cells.head_ts - cells.end[before], 0)
    held = np.where(inner, cells.hold[before], np.nan)
    held_ok = ~np.isnan(held)
    tail = hi - cells.end[ge]
    tail_held = cells.hold[ge]
    tail_ok = ~np.isnan(tail_held)
    area = np.add.reduceat(cells.area + np.where(held_ok, held * gap, 0.0), g)
    area += np.where(tail_ok, tail_held * tail, 0.0)
    span = np.add.reduceat(cells.span_ns + np.where(held_ok, gap, 0), g)
    span += np.where(tail_ok, tail, 0)
    # delta: a cell's first usable point rises over the last usable one before it
    latest_good = np.maximum.accumulate(np.where(has, at, -1))
    prev_good = np.empty(len(cells), np.intp)
    prev_good[0] = -1
    prev_good[1:] = latest_good[:-1]
    linked = has & (prev_good >= 0)
    linked[linked] = group[prev_good[linked]] == group[linked]
    step = np.where(linked, _increase(cells.first_v, cells.last_v[np.maximum(prev_good, 0)]), 0.0)
    with np.errstate(invalid="ignore"):
        vmin = np.fmin.reduceat(cells.vmin, g)
        vmax = np.fmax.reduceat(cells.vmax, g)
    return Cells(
        tag=cells.tag[g],
        start=np.asarray(lo, np.int64),
        end=np.asarray(hi, np.int64),
        n=n,
        pts=np.add.reduceat(cells.pts, g),
        bad=np.add.reduceat(cells.bad, g),
        dsum=dsum,
        m2=m2,
        vmin=vmin,
        vmax=vmax,
        first_ts=np.where(found, cells.first_ts[first], 0),
        first_v=np.where(found, cells.first_v[first], np.nan),
        last_ts=np.where(found, cells.last_ts[last], 0),
        last_v=np.where(found, cells.last_v[last], np.nan),
        head_ts=cells.head_ts[g],
        hold=cells.hold[ge],
        area=area,
        span_ns=span,
        rise=np.add.reduceat(cells.rise + step, g),
    )


def _widened(cells: Cells, lo: Int64Array, hi: Int64Array) -> Cells:
    """Cells as their own merged cells over ``[lo, hi)``: the hold runs on to ``hi``."""
    columns = cells.columns()
    tail = hi - cells.end
    ok = ~np.isnan(cells.hold)
    columns["area"] = cells.area + np.where(ok, cells.hold * tail, 0.0)
    columns["span_ns"] = cells.span_ns + np.where(ok, tail, 0)
    columns["start"], columns["end"] = lo, hi
    return Cells(**columns)


def hour_cells(minutes: Cells) -> Cells:
    """Merge 1-minute cells (of whole hours) into 1-hour cells."""
    if not len(minutes):
        return Cells.empty()
    order = _sorted_order(minutes.tag, minutes.start)
    if order is not None:
        minutes = minutes.take(order)
    hour = minutes.start - minutes.start % HOUR_NS
    starts = _run_starts(minutes.tag, hour)
    return merge_cells(minutes, starts, hour[starts], hour[starts] + HOUR_NS)


# ------------------------------------------------------------------ summarizing
def summarize_cells(
    cells: Cells,
    buckets: Buckets,
    *,
    n_tags: int,
    start_ns: int,
    end_ns: int,
    aggregates: Sequence[Aggregate],
    prior: Prior | None = None,
    dense: bool = True,
) -> Summary:
    """The buckets of every tag from cells, as :func:`~.aggregate.summarize` answers
    them from the points.

    Args:
        cells: ``tag`` is the query position; each lies inside ``[start_ns, end_ns)`` and
            inside one bucket; cells of a tag do not overlap.
        buckets: the query's buckets.
        n_tags, start_ns, end_ns, aggregates: the query.
        prior: what lies before the range (``twa`` and ``delta``).
        dense: every cell of ``n_tags x buckets.count``, or only those with a usable
            point (the legacy :meth:`read_aggregates` shape).
    """
    wanted = list(dict.fromkeys(Aggregate(a) for a in aggregates))
    nb = buckets.count
    prior = prior if prior is not None else Prior.nothing(n_tags)
    order = _sorted_order(cells.tag, cells.start)
    if order is not None:
        cells = cells.take(order)
    bucket = buckets.index(cells.start)
    key = cells.tag * nb + bucket
    starts = _run_starts(key)
    first_bucket = bucket[starts]
    lo = np.maximum(buckets.starts(first_bucket), start_ns)
    hi = np.minimum(buckets.ends(first_bucket), end_ns)
    g = merge_cells(cells, starts, lo, hi)
    keys = key[starts]
    tag = keys // max(nb, 1)
    per_group = {agg: _per_group(agg, g, tag, prior) for agg in wanted}
    if not dense:
        has = g.n > 0
        columns = {agg: Column(v[has], ok[has]) for agg, (v, ok) in per_group.items()}
        return Summary(keys[has], nb, columns, g.bad[has])
    size = n_tags * nb
    columns = {}
    for agg, (values, valid) in per_group.items():
        column = _scatter(keys, values, valid, size)
        if agg is Aggregate.COUNT:
            column = Column(column.values, np.ones(size, np.bool_))
        elif agg is Aggregate.TWA:
            column = _held_in_empty(column, g, keys, n_tags=n_tags, nb=nb, prior=prior)
        columns[agg] = column
    bad = np.zeros(size, np.int64)
    bad[keys] = g.bad
    return Summary(np.arange(size, dtype=np.int64), nb, columns, bad)


def _scatter(keys: Int64Array, values: npt.NDArray[Any], valid: BoolArray, size: int) -> Column:
    out = np.full(size, np.nan) if values.dtype.kind == "f" else np.zeros(size, values.dtype)
    ok = np.zeros(size, np.bool_)
    out[keys] = values
    ok[keys] = valid
    return Column(out, ok)


def _per_group(
    agg: Aggregate, g: Cells, tag: Int64Array, prior: Prior
) -> tuple[npt.NDArray[Any], BoolArray]:
    """One aggregate's value (and whether defined) per merged cell."""
    has = g.n > 0
    if agg is Aggregate.COUNT:
        return g.n, np.ones(len(g), np.bool_)
    if agg is Aggregate.TWA:
        return _twa(g, tag, prior)
    if agg is Aggregate.DELTA:
        return _delta(g, tag, prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        if agg is Aggregate.AVG:
            values = g.first_v + g.dsum / np.maximum(g.n, 1)
        elif agg is Aggregate.STDDEV:
            return np.sqrt(g.m2 / np.maximum(g.n - 1, 1)), g.n >= 2
        else:
            values = {
                Aggregate.SUM: g.first_v * g.n + g.dsum,
                Aggregate.MIN: g.vmin,
                Aggregate.MAX: g.vmax,
                Aggregate.FIRST: g.first_v,
                Aggregate.LAST: g.last_v,
            }[agg]
    return values, has


def _prior_hold(prior: Prior) -> Float64Array:
    """Per tag, the value in force at the start: the last point's, if usable."""
    ok = prior.has_last & usable(prior.last_quality, prior.last_value)
    held: Float64Array = np.where(ok, prior.last_value, np.nan)
    return held


def _twa(g: Cells, tag: Int64Array, prior: Prior) -> tuple[Float64Array, BoolArray]:
    """Merged cells' own integrals plus their heads, held by the bucket before (or prior)."""
    at = np.arange(len(g))
    same = np.zeros(len(g), np.bool_)
    same[1:] = tag[1:] == tag[:-1]
    held = np.where(same, g.hold[np.maximum(at - 1, 0)], _prior_hold(prior)[tag])
    ok = ~np.isnan(held)
    head = g.head_ts - g.start
    total = g.area + np.where(ok, held * head, 0.0)
    weight = g.span_ns + np.where(ok, head, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        twa: Float64Array = total / weight
    return twa, weight > 0


def _held_in_empty(
    column: Column, g: Cells, keys: Int64Array, *, n_tags: int, nb: int, prior: Prior
) -> Column:
    """``twa`` of buckets without points: the value held by the last bucket with points
    (its last point's, if usable), or the prior."""
    size = n_tags * nb
    latest = np.full(size, -1, np.int64)
    latest[keys] = np.arange(len(keys))
    latest = np.maximum.accumulate(latest.reshape(n_tags, nb), axis=1).ravel()
    row = np.repeat(np.arange(n_tags), nb)
    fill = _prior_hold(prior)[row]
    if len(keys):
        fill = np.where(latest >= 0, g.hold[np.maximum(latest, 0)], fill)
    empty = np.ones(size, np.bool_)
    empty[keys] = False
    values = np.where(empty, fill, column.values)
    valid = np.where(empty, ~np.isnan(fill), column.valid)
    return Column(values, valid)


def _delta(g: Cells, tag: Int64Array, prior: Prior) -> tuple[Float64Array, BoolArray]:
    """Merged cells' own rises plus their first usable point's rise over the one before."""
    has = g.n > 0
    at = np.arange(len(g))
    latest_good = np.maximum.accumulate(np.where(has, at, -1)) if len(g) else at
    before = np.full(len(g), -1)
    before[1:] = latest_good[:-1]
    linked = before >= 0
    linked[linked] = tag[before[linked]] == tag[linked]
    baseline = np.where(prior.has_good, prior.good_value, np.nan)
    previous = np.where(linked, g.last_v[np.maximum(before, 0)], baseline[tag])
    with np.errstate(invalid="ignore"):
        step = np.where(np.isnan(previous), 0.0, _increase(g.first_v, previous))
    delta: Float64Array = g.rise + np.where(has, step, 0.0)
    return delta, has


@dataclass(frozen=True, slots=True)
class RollupSettings:
    """How a historian keeps and uses its rollups.

    Attributes:
        enabled: answer queries from rollups where they are exact, and keep them
            refreshed. Off, every query reads raw points; late points are still marked
            (DuckDB) or queued (PostgreSQL), so turning rollups on again catches up.
        interval_s: how often the DuckDB historian refreshes them (None: only on
            ``compact()``); PostgreSQL writes them in each compaction step.
        grace_s: a minute is rolled up this long after it ended (DuckDB), room for
            points still on their way; a point arriving later is late, and its hour is
            recomputed at the next refresh.
    """

    enabled: bool = True
    interval_s: float | None = 60.0
    grace_s: float = 120.0

    def __post_init__(self) -> None:
        if self.grace_s < 0 or (self.interval_s is not None and self.interval_s <= 0):
            raise ValueError("rollup grace_s must be >= 0 and interval_s > 0 (or None)")
