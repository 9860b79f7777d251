"""The historian contract, part two: query semantics every backend must answer alike.

:class:`QueryContract` is mixed into :class:`~shopfloor.testing.historian_contract.
HistorianContract` and so runs over every backend. It checks :meth:`read_buckets`,
:meth:`read_at` and the new aggregates of :meth:`read_aggregates` against the plain-Python
reference (:mod:`shopfloor.testing.historian_reference`), with bucket edges worked out
here from :mod:`datetime` and :mod:`zoneinfo`: time-weighted averages over irregular
samples, a counter's increase across a reset, Bad points left out but counted, a daily
bucket across a DST change in Europe/Berlin and America/New_York, many tags in one call,
interpolation, and a value in force long before the range.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian import query
from shopfloor.server.historian.base import (
    Aggregate,
    Calendar,
    CalendarUnit,
    Historian,
    Interpolation,
)
from shopfloor.testing.historian_reference import Row, reference_at, reference_buckets

__all__ = ["QueryContract", "query_data"]

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000 * SECOND

TEMP, COUNTER, SLOW, TEXT = "q/line/temp", "q/line/counter", "q/line/slow", "q/line/state"
QPATHS = (TEMP, COUNTER, SLOW, TEXT)

Point = tuple[int, float, int]


def query_data(seed: int) -> dict[str, list[Point]]:
    """Points per tag around ``[T0, T0 + 3 h)``; the counter's true count is its step sum.

    ``temp``: irregular samples (1 to 40 s apart), some Uncertain, Bad and NaN points.
    ``counter``: counts up, is reset twice, has some Bad readings. ``slow``: a point every
    three hours, from two days before. ``state``: a text tag (Good, no number).
    """
    rng = np.random.default_rng(seed)
    good, bad = int(Quality.GOOD), int(Quality.BAD_SENSOR_FAILURE)
    qualities = np.array([good, int(Quality.UNCERTAIN), bad], np.int64)
    out: dict[str, list[Point]] = {}
    ts = T0 - HOUR + np.cumsum(rng.integers(SECOND, 40 * SECOND, 600))
    value = rng.normal(60.0, 8.0, 600)
    value[rng.random(600) < 0.02] = np.nan
    quality = rng.choice(qualities, 600, p=[0.85, 0.05, 0.10])
    out[TEMP] = _points(ts, value, quality)
    ts = T0 - 30 * MINUTE + np.arange(500) * 25 * SECOND + rng.integers(0, SECOND, 500)
    counter = np.cumsum(rng.integers(0, 30, 500)).astype(float)
    for reset in (150, 390):
        counter[reset:] -= counter[reset] - rng.integers(0, 5)
    quality = np.where(rng.random(500) < 0.06, bad, good)
    out[COUNTER] = _points(ts, counter, quality)
    ts = T0 - 2 * DAY + np.arange(18) * 3 * HOUR
    out[SLOW] = _points(ts, rng.normal(5.0, 1.0, 18), np.full(18, good))
    ts = T0 + np.arange(30) * 7 * MINUTE
    out[TEXT] = _points(ts, np.full(30, np.nan), np.full(30, good))
    return out


def _points(ts: Any, value: Any, quality: Any) -> list[Point]:
    return [(int(t), float(v), int(q)) for t, v, q in zip(ts, value, quality, strict=True)]


async def write_points(h: Historian, data: dict[str, list[Point]], *, batches: int = 5) -> None:
    """Write shuffled batches, one commit each, so storage order is not time order."""
    rows = [(path, *p) for path, points in data.items() for p in points]
    order = np.random.default_rng(2).permutation(len(rows))
    for part in np.array_split(order, batches):
        chosen = [rows[i] for i in part]
        texts = ["RUNNING" if r[0] == TEXT else None for r in chosen]
        paths = list(dict.fromkeys(r[0] for r in chosen))
        index = {p: i for i, p in enumerate(paths)}
        batch = PointBatch.from_columns(
            paths,
            [index[r[0]] for r in chosen],
            [r[1] for r in chosen],
            [r[2] for r in chosen],
            [r[3] for r in chosen],
            text=texts if any(texts) else None,
        )
        await h.write(batch)
        await h.flush()


def utc_edges(start: int, end: int, width: int) -> list[int]:
    """Multiples of ``width``: the one at or before ``start`` to the first at or after ``end``."""
    first = start - start % width
    count = -(-(end - first) // width)
    return [first + i * width for i in range(count + 1)]


def local_midnight(tz: str, day: dt.date) -> int:
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp()) * SECOND


def rows_of(table: pa.Table, path: str) -> pa.Table:
    """The rows of ``path`` in a many-tags answer."""
    paths = np.array(table.column("path").to_pylist(), dtype=object)
    return table.filter(pa.array(paths == path))


def assert_rows_match(table: pa.Table, expected: Sequence[Row], columns: Sequence[str]) -> None:
    """Every column of ``table`` equals the reference rows (None for null, close floats)."""
    assert table.num_rows == len(expected)
    for name in columns:
        got = table.column(name).to_pylist()
        want = [r[name] for r in expected]
        assert [g is None for g in got] == [w is None for w in want], name
        for g, w in zip(got, want, strict=True):
            if w is not None:
                assert g is not None
                assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (name, g, w)


def ts_list(table: pa.Table) -> list[int]:
    out: list[int] = table.column("ts").cast(pa.int64()).to_pylist()
    return out


ALL = list(Aggregate)
NAMES = [a.value for a in ALL]

DST_DAYS = [
    ("Europe/Berlin", dt.date(2024, 3, 31), 23),
    ("Europe/Berlin", dt.date(2024, 10, 27), 25),
    ("America/New_York", dt.date(2024, 3, 10), 23),
    ("America/New_York", dt.date(2024, 11, 3), 25),
]


class QueryContract:
    """Query semantics; the subclass provides the ``historian`` fixture (a started historian)."""

    async def test_read_buckets_matches_the_reference_for_every_aggregate(
        self, historian: Historian
    ) -> None:
        data = query_data(seed=1)
        await write_points(historian, data)
        start, end = T0 + 17 * SECOND, T0 + 3 * HOUR - 5 * SECOND
        table = await historian.read_buckets(
            list(QPATHS), start, end, bucket=10 * MINUTE, aggregates=ALL
        )
        assert table.column_names == ["path", "ts", *NAMES, "bad"]
        assert table.schema.field("path").type == pa.dictionary(pa.int32(), pa.string())
        assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert table.schema.field("count").type == pa.int64()
        assert table.schema.field("bad").type == pa.int64()
        assert table.schema.field("twa").type == pa.float64()
        edges = utc_edges(start, end, 10 * MINUTE)
        assert table.column("path").to_pylist() == [p for p in QPATHS for _ in edges[:-1]]
        for path in QPATHS:
            mine = rows_of(table, path)
            assert ts_list(mine) == edges[:-1]
            expected = reference_buckets(data[path], edges, start, end)
            assert_rows_match(mine, expected, [*NAMES, "bad"])

    async def test_many_tags_in_one_call_equal_one_call_per_tag(self, historian: Historian) -> None:
        await write_points(historian, query_data(seed=2))
        start, end = T0 - 20 * MINUTE, T0 + 2 * HOUR
        together = await historian.read_buckets(
            [SLOW, TEMP, COUNTER, TEMP], start, end, bucket=7 * MINUTE, aggregates=ALL
        )
        assert list(dict.fromkeys(together.column("path").to_pylist())) == [SLOW, TEMP, COUNTER]
        for path in (SLOW, TEMP, COUNTER):
            alone = await historian.read_buckets(
                [path], start, end, bucket=7 * MINUTE, aggregates=ALL
            )
            mine = rows_of(together, path)
            for name in ["ts", *NAMES, "bad"]:
                got, want = mine.column(name).to_pylist(), alone.column(name).to_pylist()
                # a tag whose every hour awaits its rollups is read raw when alone and
                # beside rollups of others together: the same sums, in another order
                assert len(got) == len(want), name
                for x, y in zip(got, want, strict=True):
                    same = x == y or (
                        isinstance(x, float) and isinstance(y, float) and math.isclose(x, y)
                    )
                    assert same, (name, x, y)

    @pytest.mark.parametrize(("tz", "day", "hours"), DST_DAYS)
    async def test_a_daily_bucket_runs_local_midnight_to_midnight_across_dst(
        self, historian: Historian, tz: str, day: dt.date, hours: int
    ) -> None:
        first, last = day - dt.timedelta(days=2), day + dt.timedelta(days=2)
        start, end = local_midnight(tz, first), local_midnight(tz, last + dt.timedelta(days=1))
        rng = np.random.default_rng(day.toordinal())
        ts = np.arange(start - 3 * HOUR, end + 3 * HOUR, HOUR) + 17 * MINUTE  # one per hour
        quality = np.where(rng.random(len(ts)) < 0.1, int(Quality.BAD), int(Quality.GOOD))
        data = {TEMP: _points(ts, rng.normal(20.0, 3.0, len(ts)), quality)}
        await write_points(historian, data, batches=3)
        days = [first + dt.timedelta(days=i) for i in range(6)]
        edges = [local_midnight(tz, d) for d in days]
        lengths = [(b - a) // HOUR for a, b in itertools.pairwise(edges)]
        assert lengths == [24, 24, hours, 24, 24]
        for bucket in (Calendar(CalendarUnit.DAY), DAY):
            table = await historian.read_buckets(
                [TEMP], start, end, bucket=bucket, aggregates=ALL, tz=tz
            )
            assert ts_list(table) == edges[:-1]
            counted = [
                a + b
                for a, b in zip(table["count"].to_pylist(), table["bad"].to_pylist(), strict=True)
            ]
            assert counted == lengths  # one point per real hour: 23 or 25 on the DST day
            assert_rows_match(table, reference_buckets(data[TEMP], edges, start, end), NAMES)

    async def test_counter_delta_counts_across_resets(self, historian: Historian) -> None:
        data = query_data(seed=3)
        await write_points(historian, data)
        start, end = T0, T0 + 3 * HOUR
        table = await historian.read_buckets(
            [COUNTER], start, end, bucket=15 * MINUTE, aggregates=[Aggregate.DELTA]
        )
        edges = utc_edges(start, end, 15 * MINUTE)
        assert_rows_match(table, reference_buckets(data[COUNTER], edges, start, end), ["delta"])
        # the total is what the counter counted: every rise, and each reset's new value
        good = [p for p in sorted(data[COUNTER]) if p[2] == int(Quality.GOOD)]
        total, previous = 0.0, None
        for t, v, _ in good:
            if start <= t < end and previous is not None:
                total += v - previous if v >= previous else v
            previous = v
        delta = [d for d in table.column("delta").to_pylist() if d is not None]
        assert sum(delta) == pytest.approx(total)
        drops = sum(1 for a, b in itertools.pairwise(good) if b[1] < a[1] and b[0] >= start)
        assert drops == 2  # both resets lie in the range, and were counted, not subtracted

    async def test_bad_points_are_left_out_but_counted(self, historian: Historian) -> None:
        data = query_data(seed=4)
        await write_points(historian, data)
        start, end = T0 - HOUR, T0 + 3 * HOUR
        table = await historian.read_buckets(
            [TEMP, TEXT], start, end, bucket=20 * MINUTE, aggregates=[Aggregate.AVG]
        )
        edges = utc_edges(start, end, 20 * MINUTE)
        for path in (TEMP, TEXT):
            points = np.array([p[0] for p in data[path]])
            quality = np.array([p[2] for p in data[path]])
            value = np.array([p[1] for p in data[path]])
            cell = np.searchsorted(edges, points, side="right") - 1
            not_good = (quality & 0xC0000000) != 0
            mine = rows_of(table, path)
            expected_bad = np.bincount(cell[not_good], minlength=len(edges) - 1)
            assert mine.column("bad").to_pylist() == expected_bad.tolist()
            for i, got in enumerate(mine.column("avg").to_pylist()):
                keep = (cell == i) & ~not_good & ~np.isnan(value)
                assert (got is None) == (not keep.any())
                if keep.any():
                    assert got == pytest.approx(float(np.mean(value[keep])), rel=1e-12)

    @pytest.mark.parametrize("method", list(Interpolation))
    async def test_read_at_between_at_before_and_after_points(
        self, historian: Historian, method: Interpolation
    ) -> None:
        data = query_data(seed=5)
        await write_points(historian, data)
        temp = sorted(p[0] for p in data[TEMP])
        times = [
            temp[0] - MINUTE,  # before the first point
            temp[0],  # at a point
            temp[10] + 3 * SECOND,  # between
            temp[200],
            (temp[300] + temp[301]) // 2,
            temp[-1],
            temp[-1] + HOUR,  # after the last point
            T0 + DAY,
        ]
        table = await historian.read_at([TEMP, SLOW, TEXT, COUNTER], times[::-1], method=method)
        assert table.column_names == ["path", "ts", "value"]
        assert table.schema.field("value").type == pa.float64()
        for path in (TEMP, SLOW, TEXT, COUNTER):
            mine = rows_of(table, path)
            assert ts_list(mine) == times[::-1]
            want = reference_at(data[path], times[::-1], method.value)
            got = mine.column("value").to_pylist()
            assert [g is None for g in got] == [w is None for w in want], path
            for g, w in zip(got, want, strict=True):
                if w is not None:
                    assert g == pytest.approx(w, rel=1e-12)

    async def test_the_value_in_force_comes_from_long_before_the_range(
        self, historian: Historian
    ) -> None:
        data = query_data(seed=6)
        await write_points(historian, data)
        last_ts, last_value, _ = max(data[SLOW])
        start, end = last_ts + 2 * DAY + 5 * MINUTE, last_ts + 2 * DAY + HOUR
        table = await historian.read_buckets(
            [SLOW], start, end, bucket=10 * MINUTE, aggregates=[Aggregate.TWA, Aggregate.AVG]
        )
        assert table.column("twa").to_pylist() == [last_value] * table.num_rows
        assert table.column("avg").null_count == table.num_rows
        at = await historian.read_at([SLOW], [start], method=Interpolation.PREVIOUS)
        assert at.column("value").to_pylist() == [last_value]

    async def test_read_aggregates_keeps_buckets_with_points_and_agrees(
        self, historian: Historian
    ) -> None:
        await write_points(historian, query_data(seed=7))
        start, end = T0 + 11 * SECOND, T0 + 2 * HOUR
        legacy = await historian.read_aggregates(
            TEMP, start, end, bucket_ns=5 * MINUTE, aggregates=ALL
        )
        dense = await historian.read_buckets([TEMP], start, end, bucket=5 * MINUTE, aggregates=ALL)
        kept = dense.filter(pa.array(np.asarray(dense.column("count")) > 0))
        assert legacy.column_names == ["ts", *NAMES]
        for name in ["ts", *NAMES]:
            assert legacy.column(name).to_pylist() == kept.column(name).to_pylist(), name

    async def test_query_errors_name_the_problem(self, historian: Historian) -> None:
        await write_points(historian, query_data(seed=8), batches=1)
        with pytest.raises(UnknownTagError) as unknown:
            await historian.read_buckets(
                [TEMP, "q/nowhere"], T0, T0 + HOUR, bucket=MINUTE, aggregates=ALL
            )
        assert unknown.value.path == "q/nowhere"
        with pytest.raises(UnknownTagError):
            await historian.read_at(["q/nowhere"], [T0])
        bad_calls: list[tuple[str, dict[str, Any]]] = [
            ("tz", {"bucket": MINUTE, "tz": "Mars/Base"}),
            ("bucket", {"bucket": 0}),
            ("bucket", {"bucket": Calendar(CalendarUnit.MONTH, 0)}),
            ("bucket", {"bucket": 1}),  # 3.6e12 buckets
            ("aggregates", {"bucket": MINUTE, "aggregates": ["median"]}),
        ]
        for field, options in bad_calls:
            kwargs: dict[str, Any] = {"aggregates": [Aggregate.AVG], **options}
            with pytest.raises(PayloadError) as err:
                await historian.read_buckets([TEMP], T0, T0 + HOUR, **kwargs)
            assert err.value.field == field
        with pytest.raises(PayloadError) as err:
            await historian.read_at([TEMP], [T0], method="cubic")  # type: ignore[arg-type]
        assert err.value.field == "method"

    async def test_a_range_holding_too_many_points_is_refused(
        self, historian: Historian, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = query_data(seed=10)
        await write_points(historian, data, batches=1)
        monkeypatch.setattr(query, "MAX_POINTS", len(data[TEMP]) - 1)
        with pytest.raises(PayloadError) as err:
            await historian.read_buckets(
                [TEMP], T0 - DAY, T0 + DAY, bucket=HOUR, aggregates=[Aggregate.AVG]
            )
        assert err.value.field == "end"
        monkeypatch.setattr(query, "MAX_POINTS", len(data[TEMP]))
        table = await historian.read_buckets(
            [TEMP], T0 - DAY, T0 + DAY, bucket=HOUR, aggregates=[Aggregate.COUNT]
        )
        assert sum(table.column("count").to_pylist()) + sum(table.column("bad").to_pylist()) > 0

    async def test_empty_questions_get_empty_answers(self, historian: Historian) -> None:
        await write_points(historian, query_data(seed=9), batches=1)
        none = await historian.read_buckets([], T0, T0 + HOUR, bucket=MINUTE, aggregates=ALL)
        assert none.num_rows == 0
        assert none.column_names == ["path", "ts", *NAMES, "bad"]
        backwards = await historian.read_buckets([TEMP], T0, T0, bucket=MINUTE, aggregates=ALL)
        assert backwards.num_rows == 0
        assert (await historian.read_at([TEMP], [])).num_rows == 0
