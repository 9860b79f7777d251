"""Rollup cells answer every aggregate as the engine does from the points themselves.

The engine (:func:`~shopfloor.server.historian.aggregate.summarize`) is the reference
here: it is checked against plain Python in the contract suite. Cells are cut on grids
finer than the buckets (minutes, irregular cuts), merged from minutes into hours, and
mixed with cells of raw points, as a rollup-served query does.
"""

from __future__ import annotations

import datetime as dt
import statistics

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.server.historian import planner, query
from shopfloor.server.historian.aggregate import Points, Prior, Summary, summarize
from shopfloor.server.historian.base import Aggregate, Calendar, CalendarUnit
from shopfloor.server.historian.buckets import make_buckets
from shopfloor.server.historian.rollup import (
    HOUR_NS,
    MINUTE_NS,
    Cells,
    cells_of_points,
    hour_cells,
    summarize_cells,
)

ALL = list(Aggregate)
T0 = 1_700_000_000 * 10**9 // HOUR_NS * HOUR_NS
GOOD, UNCERTAIN, BAD = 0, 0x40000000, 0x80000000


def _points(seed: int, n: int, n_tags: int, span: int) -> Points:
    rng = np.random.default_rng(seed)
    value = 100.0 + np.cumsum(rng.normal(0.0, 1.0, n))
    if seed % 2:  # counters with resets
        value = np.floor(np.abs(value)) % 97
    value[rng.random(n) < 0.03] = np.nan
    quality = rng.choice(np.array([GOOD, UNCERTAIN, BAD], np.uint32), n, p=[0.85, 0.05, 0.1])
    return Points(
        rng.integers(0, n_tags, n).astype(np.intp),
        T0 + rng.integers(0, span, n).astype(np.int64),
        value,
        quality,
    )


def _prior(seed: int, n_tags: int) -> Prior:
    rng = np.random.default_rng(seed + 1000)
    prior = Prior.nothing(n_tags)
    prior.has_last[:] = rng.random(n_tags) < 0.7
    prior.last_value[:] = rng.normal(100.0, 1.0, n_tags)
    prior.last_quality[:] = np.where(rng.random(n_tags) < 0.3, BAD, GOOD)
    prior.has_good[:] = rng.random(n_tags) < 0.7
    prior.good_value[:] = rng.normal(100.0, 1.0, n_tags)
    return prior


def _inside(points: Points, start: int, end: int) -> Points:
    m = (points.ts >= start) & (points.ts < end)
    return Points(points.tag[m], points.ts[m], points.value[m], points.quality[m])


def _assert_same(got: Summary, want: Summary) -> None:
    np.testing.assert_array_equal(got.cells, want.cells)
    np.testing.assert_array_equal(got.bad, want.bad)
    for agg in want.columns:
        g, w = got.columns[agg], want.columns[agg]
        np.testing.assert_array_equal(g.valid, w.valid, err_msg=agg.value)
        np.testing.assert_allclose(g.values[g.valid], w.values[w.valid], rtol=1e-9, atol=1e-9)


def _cells(points: Points, edges: npt.NDArray[np.int64], end: int) -> Cells:
    return cells_of_points(points.tag, points.ts, points.value, points.quality, edges, end_ns=end)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 3000),
    n_tags=st.integers(1, 4),
    width=st.sampled_from([MINUTE_NS, 5 * MINUTE_NS, HOUR_NS, 2 * HOUR_NS]),
    ragged=st.tuples(st.integers(0, HOUR_NS - 1), st.integers(0, HOUR_NS - 1)),
    dense=st.booleans(),
)
def test_cells_on_a_finer_grid_answer_like_the_points(
    *,
    seed: int,
    n: int,
    n_tags: int,
    width: int,
    ragged: tuple[int, int],
    dense: bool,
) -> None:
    span = 5 * HOUR_NS
    start, end = T0 + ragged[0], T0 + span - ragged[1]
    points = _inside(_points(seed, n, n_tags, span), start, end)
    prior = _prior(seed, n_tags)
    buckets = make_buckets(start, end, width)
    want = summarize(
        points,
        buckets,
        n_tags=n_tags,
        start_ns=start,
        end_ns=end,
        aggregates=ALL,
        prior=prior,
        dense=dense,
    )
    # minute cuts plus a few irregular ones: cells finer than any bucket
    cuts = np.random.default_rng(seed).integers(start, end, 7)
    minutes = np.arange(T0, T0 + span + 1, MINUTE_NS)
    edges = np.unique(np.concatenate([[start, end], buckets.edges(), minutes, cuts]))
    edges = edges[(edges >= start) & (edges <= end)]
    got = summarize_cells(
        _cells(points, edges, end),
        buckets,
        n_tags=n_tags,
        start_ns=start,
        end_ns=end,
        aggregates=ALL,
        prior=prior,
        dense=dense,
    )
    _assert_same(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_hour_rollups_and_raw_ends_answer_like_the_points(seed: int) -> None:
    n_tags, span = 3, 8 * HOUR_NS
    points = _points(seed, 6000, n_tags, span)
    start, end = T0 + 17 * MINUTE_NS + 3, T0 + span - 2 * HOUR_NS - 11
    inside = _inside(points, start, end)
    a, b = T0 + HOUR_NS, T0 + 6 * HOUR_NS
    buckets = make_buckets(start, end, 2 * HOUR_NS)
    prior = _prior(seed, n_tags)
    want = summarize(
        inside, buckets, n_tags=n_tags, start_ns=start, end_ns=end, aggregates=ALL, prior=prior
    )
    # rollups: every point into minutes, merged into hours; the ends from raw points
    minutes = cells_of_points(
        points.tag, points.ts, points.value, points.quality, np.arange(T0, T0 + span + 1, MINUTE_NS)
    )
    hours = hour_cells(minutes)
    hours = hours.take((hours.start >= a) & (hours.start < b))
    ends = _inside(inside, start, a), _inside(inside, b, end)
    raw = Points(*(np.concatenate([getattr(e, f) for e in ends]) for f in Points.__slots__))
    edges = np.unique(np.concatenate([[start, end, a, b], buckets.edges()]))
    edges = edges[(edges >= start) & (edges <= end)]
    got = summarize_cells(
        Cells.concat([hours, _cells(raw, edges, end)]),
        buckets,
        n_tags=n_tags,
        start_ns=start,
        end_ns=end,
        aggregates=ALL,
        prior=prior,
    )
    _assert_same(got, want)


def test_stddev_of_a_large_offset_signal_is_exact() -> None:
    """Sums relative to a value of the cell: 1e9 plus 1e-3 of noise keeps every digit."""
    rng = np.random.default_rng(3)
    n = 3600
    value = 1e9 + rng.normal(0.0, 1e-3, n)
    ts = T0 + np.arange(n, dtype=np.int64) * 10**9
    minutes = cells_of_points(
        np.zeros(n, np.intp),
        ts,
        value,
        np.zeros(n, np.uint32),
        np.arange(T0, T0 + HOUR_NS + 1, MINUTE_NS),
    )
    buckets = make_buckets(T0, T0 + HOUR_NS, HOUR_NS)
    got = summarize_cells(
        hour_cells(minutes),
        buckets,
        n_tags=1,
        start_ns=T0,
        end_ns=T0 + HOUR_NS,
        aggregates=[Aggregate.STDDEV, Aggregate.AVG],
    )
    exact = statistics.stdev(value.tolist())  # exact arithmetic on the floats
    assert got.columns[Aggregate.STDDEV].values[0] == pytest.approx(exact, rel=1e-13)
    assert got.columns[Aggregate.AVG].values[0] == pytest.approx(statistics.fmean(value), rel=1e-15)


def _plan(start: int, end: int, bucket: int | Calendar, tz: str | None) -> query.BucketPlan:
    return query.plan_buckets(["a", "b"], start, end, bucket=bucket, aggregates=ALL, tz=tz)


def _midnight(tz: str, day: dt.date) -> int:
    from zoneinfo import ZoneInfo

    moment = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp()) * 10**9


@pytest.mark.parametrize(
    ("bucket", "tz", "levels"),
    [
        (HOUR_NS, None, [HOUR_NS, MINUTE_NS]),
        (15 * MINUTE_NS, None, [MINUTE_NS]),
        (HOUR_NS, "Asia/Kolkata", [MINUTE_NS]),  # +05:30: hours start at xx:30 UTC
        (HOUR_NS, "Asia/Kathmandu", [MINUTE_NS]),  # +05:45
        (Calendar(CalendarUnit.DAY), "Europe/Berlin", [HOUR_NS, MINUTE_NS]),
        (Calendar(CalendarUnit.MONTH), "Asia/Kolkata", [MINUTE_NS]),
        (7 * 10**9, None, []),
        (90 * 10**9, None, []),  # 1.5 minutes: every other edge is mid-minute
    ],
)
def test_a_query_may_use_the_rollups_its_bucket_edges_fit(
    bucket: int | Calendar, tz: str | None, levels: list[int]
) -> None:
    start = _midnight("Europe/Berlin", dt.date(2024, 10, 20)) + 17 * 10**9
    end = _midnight("Europe/Berlin", dt.date(2024, 11, 3)) - 5 * 10**9
    spans = planner.spans(_plan(start, end, bucket, tz))
    assert [s.level for s in spans] == levels
    for span in spans:  # the rollups cover whole cells inside the range
        assert start <= span.start < span.start + span.level <= span.end <= end
        assert span.start % span.level == 0
        assert span.end % span.level == 0


def test_the_ragged_ends_and_stale_hours_come_from_raw_points() -> None:
    start, end = T0 + 100, T0 + 5 * HOUR_NS + 7
    plan = _plan(start, end, HOUR_NS, None)
    (span, _) = planner.spans(plan)
    stale_tag = np.array([1, 1, 0], np.intp)
    stale_hour = np.array([T0 + 2 * HOUR_NS, T0 + 3 * HOUR_NS, T0 + 3 * HOUR_NS], np.int64)
    ranges = planner.raw_ranges(plan, span, stale_tag, stale_hour)
    got = [(r.start, r.end, r.tags.tolist()) for r in ranges]
    assert got == [
        (start, T0 + HOUR_NS, [0, 1]),
        (T0 + 2 * HOUR_NS, T0 + 3 * HOUR_NS, [1]),
        (T0 + 3 * HOUR_NS, T0 + 4 * HOUR_NS, [0, 1]),
        (T0 + 5 * HOUR_NS, end, [0, 1]),
    ]
    assert not planner.all_raw(plan, ranges)


def test_touching_stale_hours_of_the_same_tags_are_one_read() -> None:
    start, end = T0 + 100, T0 + 5 * HOUR_NS + 7
    plan = _plan(start, end, HOUR_NS, None)
    (span, _) = planner.spans(plan)
    hours = T0 + np.arange(1, 5, dtype=np.int64) * HOUR_NS
    one_tag = planner.raw_ranges(plan, span, np.ones(4, np.intp), hours)
    assert [(r.start, r.end, r.tags.tolist()) for r in one_tag] == [
        (start, T0 + HOUR_NS, [0, 1]),
        (T0 + HOUR_NS, T0 + 5 * HOUR_NS, [1]),
        (T0 + 5 * HOUR_NS, end, [0, 1]),
    ]
    both = planner.raw_ranges(plan, span, np.tile([0, 1], 4), np.repeat(hours, 2))
    assert [(r.start, r.end, r.tags.tolist()) for r in both] == [(start, end, [0, 1])]
    assert planner.all_raw(plan, both)
