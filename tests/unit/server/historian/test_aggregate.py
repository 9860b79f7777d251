"""The query engine against plain-Python loops written from the definitions.

The reference (shopfloor.testing.historian_reference) sees every point of a tag and
works out for itself what lies before the range; the engine gets what a backend fetches.
"""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.model import Quality
from shopfloor.server.historian.aggregate import (
    Following,
    Points,
    Prior,
    Summary,
    interpolate,
    summarize,
)
from shopfloor.server.historian.base import Aggregate, Interpolation
from shopfloor.server.historian.buckets import make_buckets
from shopfloor.testing.historian_reference import (
    Row,
    reference_at,
    reference_buckets,
    usable,
)

SECOND = 10**9
MINUTE = 60 * SECOND
T0 = int(dt.datetime(2024, 3, 30, 22, tzinfo=dt.UTC).timestamp()) * SECOND
QUALITIES = [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD_SENSOR_FAILURE, Quality.BAD]
ALL = list(Aggregate)

Rows = list[tuple[int, int, float, int]]  # (tag, ts, value, quality)


def random_rows(seed: int, tags: int = 3, per_tag: int = 300) -> Rows:
    """Irregular times (unique per tag), some non-Good points, some NaN values."""
    rng = np.random.default_rng(seed)
    rows: Rows = []
    for tag in range(tags):
        ts = T0 + np.cumsum(rng.integers(1, 40 * SECOND, per_tag))
        value = rng.normal(50, 10, per_tag)
        value[rng.random(per_tag) < 0.03] = np.nan
        quality = rng.choice(np.array(QUALITIES, np.uint32), per_tag, p=[0.8, 0.05, 0.1, 0.05])
        rows += [
            (tag, int(t), float(v), int(q)) for t, v, q in zip(ts, value, quality, strict=True)
        ]
    return rows


def fetched(
    rows: Rows, n_tags: int, start: int, end: int, order: str = "sorted"
) -> tuple[Points, Prior]:
    """What a backend would fetch: the points in range (in ``order``), the prior per tag."""
    inside = sorted((r for r in rows if start <= r[1] < end), key=lambda r: (r[0], r[1]))
    if order == "shuffled":
        inside = [inside[i] for i in np.random.default_rng(1).permutation(len(inside))]
    elif order == "chunked":  # like DuckDB: commits in time order, each sorted by (tag, ts)
        by_time = sorted(inside, key=lambda r: r[1])
        chunks = [sorted(by_time[i : i + 50]) for i in range(0, len(by_time), 50)]
        inside = [r for chunk in chunks[::-1] for r in chunk]  # newest commit first
    elif order == "interleaved":  # two commits whose times overlap: a backfill
        inside = sorted(inside[::2]) + sorted(inside[1::2])
    prior = Prior.nothing(n_tags)
    for tag, ts, value, quality in sorted(rows, key=lambda r: r[1]):
        if ts >= start:
            continue
        prior.has_last[tag], prior.last_ts[tag] = True, ts
        prior.last_value[tag], prior.last_quality[tag] = value, quality
        if usable((ts, value, quality)):
            prior.has_good[tag], prior.good_ts[tag], prior.good_value[tag] = True, ts, value
    points = Points(
        np.array([r[0] for r in inside], np.intp),
        np.array([r[1] for r in inside], np.int64),
        np.array([r[2] for r in inside], np.float64),
        np.array([r[3] for r in inside], np.uint32),
    )
    return points, prior


def per_tag(rows: Rows, tag: int) -> list[tuple[int, float, int]]:
    return [(ts, v, q) for t, ts, v, q in rows if t == tag]


def assert_summary_is(summary: Summary, expected: list[Row], cells: list[int]) -> None:
    """Compare every column of ``summary`` with reference rows for ``cells``."""
    np.testing.assert_array_equal(summary.cells, cells)
    np.testing.assert_array_equal(summary.bad, [r["bad"] for r in expected])
    for agg, column in summary.columns.items():
        want = [r[agg.value] for r in expected]
        defined = np.array([w is not None for w in want], dtype=np.bool_)
        np.testing.assert_array_equal(column.valid, defined, err_msg=agg.value)
        got = np.asarray(column.values, np.float64)[defined]
        ref = np.array([w for w in want if w is not None], np.float64)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9, err_msg=agg.value)


def check(
    rows: Rows,
    n_tags: int,
    start: int,
    end: int,
    bucket: Any,
    *,
    tz: str | None = None,
    order: str = "sorted",
) -> None:
    buckets = make_buckets(start, end, bucket, tz=tz)
    edges = buckets.edges().tolist()
    points, prior = fetched(rows, n_tags, start, end, order)
    expected = [
        row
        for tag in range(n_tags)
        for row in reference_buckets(per_tag(rows, tag), edges, start, end)
    ]
    dense = summarize(
        points, buckets, n_tags=n_tags, start_ns=start, end_ns=end, aggregates=ALL, prior=prior
    )
    assert_summary_is(dense, expected, list(range(n_tags * buckets.count)))
    sparse = summarize(
        points,
        buckets,
        n_tags=n_tags,
        start_ns=start,
        end_ns=end,
        aggregates=ALL,
        prior=prior,
        dense=False,
    )
    keep = [i for i, r in enumerate(expected) if r["count"]]
    assert_summary_is(sparse, [expected[i] for i in keep], keep)


@pytest.mark.parametrize("order", ["sorted", "chunked", "interleaved", "shuffled"])
@pytest.mark.parametrize(
    ("bucket", "tz"),
    [
        (MINUTE, None),
        (7 * SECOND, None),
        (15 * MINUTE, "Europe/Berlin"),
        (600 * MINUTE, "Asia/Kathmandu"),
    ],
)
def test_every_aggregate_matches_the_reference(order: str, bucket: int, tz: str | None) -> None:
    rows = random_rows(seed=3)
    times = sorted(r[1] for r in rows)
    # the range starts and ends between points, so prior values and clipping matter
    check(rows, 3, times[100] + 1, times[700] - 1, bucket, tz=tz, order=order)


def test_twa_holds_each_value_until_the_next_point_and_bad_ends_the_hold() -> None:
    good, bad = int(Quality.GOOD), int(Quality.BAD)
    s = SECOND
    # irregular: 10 s of 1.0 before the range, then 3.0, a Bad reading, 2.0 for the rest
    rows: Rows = [
        (0, T0 - 10 * s, 1.0, good),
        (0, T0 + 7 * s, 3.0, good),
        (0, T0 + 8 * s, 9.0, bad),
        (0, T0 + 31 * s, 2.0, good),
    ]
    check(rows, 1, T0, T0 + 60 * s, 20 * s)
    points, prior = fetched(rows, 1, T0, T0 + 60 * s)
    twa = summarize(
        points,
        make_buckets(T0, T0 + 60 * s, 20 * s),
        n_tags=1,
        start_ns=T0,
        end_ns=T0 + 60 * s,
        aggregates=[Aggregate.TWA],
        prior=prior,
    ).columns[Aggregate.TWA]
    # by hand: 7 s of 1.0 and 1 s of 3.0; nothing held; 9 s of 2.0, 20 s of 2.0
    first_bucket = (7 * 1.0 + 1 * 3.0) / 8
    assert twa.values.tolist() == [pytest.approx(first_bucket), 2.0, 2.0]
    assert twa.valid.tolist() == [True, True, True]


def test_delta_counts_across_a_counter_reset() -> None:
    rng = np.random.default_rng(5)
    steps = rng.integers(0, 20, 400).astype(float)  # what the counter really counted
    counter = np.cumsum(steps)
    reset_at = 250
    counter[reset_at:] -= counter[reset_at - 1]  # restarted from zero, then counted on
    ts = T0 + np.arange(400) * 10 * SECOND
    quality = np.where(rng.random(400) < 0.05, int(Quality.BAD), int(Quality.GOOD))
    quality[reset_at] = int(Quality.GOOD)
    rows: Rows = [
        (0, int(t), float(v), int(q)) for t, v, q in zip(ts, counter, quality, strict=True)
    ]
    start, end = int(ts[20]), int(ts[-1]) + 1
    check(rows, 1, start, end, 5 * MINUTE)
    points, prior = fetched(rows, 1, start, end)
    delta = summarize(
        points,
        make_buckets(start, end, 5 * MINUTE),
        n_tags=1,
        start_ns=start,
        end_ns=end,
        aggregates=[Aggregate.DELTA],
        prior=prior,
    ).columns[Aggregate.DELTA]
    # the buckets add up to what the counter counted since the last Good point before start
    good = np.flatnonzero(quality == int(Quality.GOOD))
    baseline = good[good < 20].max()
    assert np.nansum(np.where(delta.valid, delta.values, 0)) == pytest.approx(
        steps[baseline + 1 :].sum()
    )


def test_bad_points_are_left_out_but_counted() -> None:
    rows = random_rows(seed=9, tags=2, per_tag=200)
    start, end = T0, T0 + 10**6 * SECOND
    points, prior = fetched(rows, 2, start, end)
    buckets = make_buckets(start, end, 5 * MINUTE)
    summary = summarize(
        points,
        buckets,
        n_tags=2,
        start_ns=start,
        end_ns=end,
        aggregates=[Aggregate.COUNT],
        prior=prior,
    )
    not_good = (points.quality & 0xC0000000) != 0
    cell = points.tag * buckets.count + buckets.index(points.ts)
    np.testing.assert_array_equal(
        summary.bad, np.bincount(cell[not_good], minlength=2 * buckets.count)
    )
    counted = ~not_good & ~np.isnan(points.value)
    np.testing.assert_array_equal(
        summary.columns[Aggregate.COUNT].values,
        np.bincount(cell[counted], minlength=2 * buckets.count),
    )


def test_many_tags_at_once_equal_one_at_a_time() -> None:
    rows = random_rows(seed=11, tags=4)
    start, end = T0 + 5 * MINUTE, T0 + 3 * 3600 * SECOND
    buckets = make_buckets(start, end, 10 * MINUTE)
    points, prior = fetched(rows, 4, start, end, "chunked")
    together = summarize(
        points, buckets, n_tags=4, start_ns=start, end_ns=end, aggregates=ALL, prior=prior
    )
    for tag in range(4):
        own = [(0, ts, v, q) for t, ts, v, q in rows if t == tag]
        p, pr = fetched(own, 1, start, end)
        alone = summarize(
            p, buckets, n_tags=1, start_ns=start, end_ns=end, aggregates=ALL, prior=pr
        )
        cells = slice(tag * buckets.count, (tag + 1) * buckets.count)
        np.testing.assert_array_equal(together.bad[cells], alone.bad)
        for agg in ALL:
            a, b = together.columns[agg], alone.columns[agg]
            np.testing.assert_array_equal(a.valid[cells], b.valid, err_msg=agg.value)
            np.testing.assert_allclose(
                a.values[cells][b.valid], b.values[b.valid], rtol=1e-12, err_msg=agg.value
            )


ORDERS = ["sorted", "chunked", "interleaved", "shuffled"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("method", list(Interpolation))
def test_interpolation_between_at_and_before_points(method: Interpolation, order: str) -> None:
    rows = random_rows(seed=13, tags=2, per_tag=100)
    times_all = sorted({r[1] for r in rows})
    picks = [
        times_all[0] - 5 * SECOND,
        times_all[0],
        times_all[3] + 1,
        times_all[40],
        times_all[41] - 1,
        times_all[-1],
        times_all[-1] + SECOND,
    ]
    times = np.array(picks[::-1], np.int64)  # any order
    start, end = int(times.min()), int(times.max()) + 1
    points, prior = fetched(rows, 2, start, end, order)
    following = Following.nothing(2)
    column = interpolate(
        points, n_tags=2, times=times, method=method, prior=prior, following=following
    )
    for tag in range(2):
        want = reference_at(per_tag(rows, tag), times.tolist(), method.value)
        got = slice(tag * len(times), (tag + 1) * len(times))
        assert column.valid[got].tolist() == [w is not None for w in want]
        ok = column.valid[got]
        np.testing.assert_allclose(
            column.values[got][ok], [w for w in want if w is not None], rtol=1e-12
        )


def test_linear_uses_the_neighbours_outside_the_fetched_range() -> None:
    good = int(Quality.GOOD)
    rows: Rows = [
        (0, T0, 10.0, good),
        (0, T0 + 5 * SECOND, 99.0, int(Quality.BAD)),
        (0, T0 + 10 * SECOND, 20.0, good),
    ]
    t = T0 + 4 * SECOND
    prior = Prior.nothing(1)
    prior.has_good[0], prior.good_ts[0], prior.good_value[0] = True, T0, 10.0
    following = Following(np.array([True]), np.array([T0 + 10 * SECOND]), np.array([20.0]))
    column = interpolate(
        Points.empty(),
        n_tags=1,
        times=np.array([t]),
        method=Interpolation.LINEAR,
        prior=prior,
        following=following,
    )
    assert column.values.tolist() == pytest.approx(reference_at(per_tag(rows, 0), [t], "linear"))


point_lists = st.lists(
    st.tuples(
        st.integers(0, 2),  # tag
        st.integers(0, 400),  # seconds
        st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(float("nan"))),
        st.sampled_from([int(q) for q in QUALITIES]),
    ),
    max_size=60,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(max_examples=150, deadline=None)
@given(
    raw=point_lists,
    start=st.integers(0, 200),
    length=st.integers(1, 300),
    width=st.integers(1, 90),
    order=st.sampled_from(ORDERS),
)
def test_random_points_match_the_reference(
    raw: list[tuple[int, int, float, int]], start: int, length: int, width: int, order: str
) -> None:
    rows: Rows = [(tag, T0 + s * SECOND, v, q) for tag, s, v, q in raw]
    check(rows, 3, T0 + start * SECOND, T0 + (start + length) * SECOND, width * SECOND, order=order)


@settings(max_examples=150, deadline=None)
@given(
    raw=point_lists,
    times=st.lists(st.integers(-5, 410), min_size=1, max_size=12),
    method=st.sampled_from(list(Interpolation)),
    order=st.sampled_from(ORDERS),
)
def test_random_interpolation_matches_the_reference(
    raw: list[tuple[int, int, float, int]],
    times: list[int],
    method: Interpolation,
    order: str,
) -> None:
    rows: Rows = [(tag, T0 + s * SECOND, v, q) for tag, s, v, q in raw]
    at = np.array([T0 + t * SECOND for t in times], np.int64)
    start, end = int(at.min()), int(at.max()) + 1
    points, prior = fetched(rows, 3, start, end, order)
    following = Following.nothing(3)
    for tag, ts, value, quality in sorted(rows, key=lambda r: -r[1]):
        if ts >= end and usable((ts, value, quality)):
            following.has[tag], following.ts[tag], following.value[tag] = True, ts, value
    column = interpolate(
        points, n_tags=3, times=at, method=method, prior=prior, following=following
    )
    for tag in range(3):
        want = reference_at(per_tag(rows, tag), at.tolist(), method.value)
        got = slice(tag * len(at), (tag + 1) * len(at))
        assert column.valid[got].tolist() == [w is not None for w in want]
        ok = column.valid[got]
        np.testing.assert_allclose(
            column.values[got][ok], [w for w in want if w is not None], rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("order", ORDERS)
def test_stddev_of_a_large_offset_is_exact_however_the_points_arrive(order: str) -> None:
    """1e9 plus 1e-3 of noise: the spread lives in the last digits of the values."""
    rng = np.random.default_rng(21)
    ts = T0 + np.arange(900, dtype=np.int64) * SECOND
    values = 1e9 + rng.normal(0.0, 1e-3, len(ts))
    rows: Rows = [(0, int(t), float(v), 0) for t, v in zip(ts, values, strict=True)]
    start, end = T0, T0 + 900 * SECOND
    points, prior = fetched(rows, 1, start, end, order)
    buckets = make_buckets(start, end, 5 * MINUTE)
    got = (
        summarize(
            points,
            buckets,
            n_tags=1,
            start_ns=start,
            end_ns=end,
            aggregates=[Aggregate.STDDEV],
            prior=prior,
        )
        .columns[Aggregate.STDDEV]
        .values
    )
    for b in range(3):
        exact = [Fraction(v) for v in values[b * 300 : (b + 1) * 300]]
        mean = sum(exact) / len(exact)
        want = math.sqrt(sum((x - mean) ** 2 for x in exact) / (len(exact) - 1))
        assert math.isclose(float(got[b]), want, rel_tol=1e-12), (b, float(got[b]), want)
