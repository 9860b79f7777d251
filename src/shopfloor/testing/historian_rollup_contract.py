"""The historian contract, part three: answers from rollups equal answers from raw points.

:class:`RollupContract` is mixed into :class:`~shopfloor.testing.historian_contract.
HistorianContract` and so runs over every backend. Each test writes the same points to a
historian with rollups, lets it build them (``compact()``), asks its questions, then asks
them again of the same storage opened with rollups off (every answer from raw points,
by the engine the query contract checks against the plain-Python reference) and of the
reference itself (:mod:`shopfloor.testing.historian_reference`): every aggregate, Bad
points, counter resets, daily buckets in Europe/Berlin across the autumn DST change (a
25-hour day), hourly buckets in Asia/Kolkata (+05:30: only 1-minute rollups fit), ragged
range ends, late points arriving after the rollups were built, the still-open tail of
the range, and raw points deleted under the rollups (retention).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest

from shopfloor.errors import PayloadError
from shopfloor.model import PointBatch, Quality
from shopfloor.server.historian.base import Aggregate, BucketSize, Calendar, CalendarUnit
from shopfloor.server.historian.rollup import RollupSettings
from shopfloor.testing.historian_reference import reference_buckets

__all__ = ["RollupContract", "rollup_data"]

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
W0 = int(dt.datetime(2024, 10, 25, tzinfo=dt.UTC).timestamp()) * SECOND
"""Four UTC days around Europe/Berlin's autumn DST change (Sunday 27 October 2024)."""
W1 = W0 + 4 * DAY

TEMP, COUNTER, SLOW, OFFSET, TEXT = "r/temp", "r/counter", "r/slow", "r/offset", "r/state"
RPATHS = [TEMP, COUNTER, SLOW, OFFSET, TEXT]
ALL = list(Aggregate)
NAMES = [a.value for a in ALL]

Point = tuple[int, float, int]
Query = tuple[BucketSize, str | None, int, int]


class _Store(Protocol):
    def open(self, **options: Any) -> Any: ...


def rollup_data(seed: int, *, start: int = W0, end: int = W1) -> dict[str, list[Point]]:
    """Points of five tags over ``[start, end)`` (one before it), unique times per tag.

    ``temp``: irregular samples 5 s to 8 min apart, some Uncertain, Bad and NaN.
    ``counter``: about two minutes apart, counts up, reset four times, a few Bad readings.
    ``slow``: a point every three hours from a day before. ``offset``: 1e9 plus
    millimetre noise (stddev must survive the offset). ``state``: a text tag.
    """
    rng = np.random.default_rng(seed)
    good, uncertain, bad = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)
    span = end - start
    out: dict[str, list[Point]] = {}
    ts = start - 2 * MINUTE + np.cumsum(rng.integers(5 * SECOND, 8 * MINUTE, span // (2 * MINUTE)))
    ts = ts[ts < end]
    value = 60.0 + np.cumsum(rng.normal(0.0, 0.8, len(ts)))
    value[rng.random(len(ts)) < 0.02] = np.nan
    quality = rng.choice(np.array([good, uncertain, bad]), len(ts), p=[0.86, 0.04, 0.10])
    out[TEMP] = _points(ts, value, quality)
    ts = start + np.arange(span // (2 * MINUTE)) * 2 * MINUTE
    ts += rng.integers(0, 30 * SECOND, len(ts))
    counter = np.cumsum(rng.integers(0, 20, len(ts))).astype(float)
    for reset in sorted(rng.choice(len(ts), 4, replace=False)):
        counter[reset:] -= counter[reset] - rng.integers(0, 3)
    out[COUNTER] = _points(ts, counter, np.where(rng.random(len(ts)) < 0.03, bad, good))
    ts = start - DAY + np.arange((span + DAY) // (3 * HOUR)) * 3 * HOUR + 7 * MINUTE
    out[SLOW] = _points(ts, rng.normal(5.0, 1.0, len(ts)), np.full(len(ts), good))
    ts = start + np.arange(span // (90 * SECOND)) * 90 * SECOND + 11 * SECOND
    out[OFFSET] = _points(ts, 1e9 + rng.normal(0.0, 1e-3, len(ts)), np.full(len(ts), good))
    ts = start + np.arange(span // (30 * MINUTE)) * 30 * MINUTE + 3 * MINUTE
    out[TEXT] = _points(ts, np.full(len(ts), np.nan), np.full(len(ts), good))
    return out


def _points(ts: Any, value: Any, quality: Any) -> list[Point]:
    return [(int(t), float(v), int(q)) for t, v, q in zip(ts, value, quality, strict=True)]


def _batches(data: dict[str, list[Point]], count: int, seed: int) -> list[PointBatch]:
    """Shuffled batches (storage order is not time order), text values for the text tag."""
    rows = [(path, *p) for path, points in data.items() for p in points]
    out = []
    for part in np.array_split(np.random.default_rng(seed).permutation(len(rows)), count):
        chosen = [rows[i] for i in part]
        paths = list(dict.fromkeys(r[0] for r in chosen))
        index = {p: i for i, p in enumerate(paths)}
        texts = ["RUNNING" if r[0] == TEXT else None for r in chosen]
        out.append(
            PointBatch.from_columns(
                paths,
                [index[r[0]] for r in chosen],
                [r[1] for r in chosen],
                [r[2] for r in chosen],
                [r[3] for r in chosen],
                text=texts if any(texts) else None,
            )
        )
    return out


async def _write(h: Any, data: dict[str, list[Point]], *, batches: int = 6, seed: int = 1) -> None:
    for batch in _batches(data, batches, seed):
        await h.write(batch)
    await h.flush()


@contextlib.asynccontextmanager
async def _running(store: _Store, **options: Any) -> AsyncIterator[Any]:
    h = store.open(compaction_interval_s=None, flush_interval_s=0.05, **options)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


def _local(tz: str, day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp()) * SECOND


BERLIN_DAYS = [_local("Europe/Berlin", dt.date(2024, 10, d)) for d in range(25, 30)]
"""Local midnights in Berlin, 25 to 29 October 2024: the 27th lasts 25 hours."""

QUERIES: list[Query] = [
    (HOUR, None, W0, W1),
    (15 * MINUTE, None, W0 + 7 * MINUTE + 13 * SECOND, W1 - 2 * HOUR - 29 * SECOND),
    (HOUR, "Asia/Kolkata", W0 + 3 * HOUR + 17 * SECOND, W1 - 5 * HOUR),
    (Calendar(CalendarUnit.DAY), "Europe/Berlin", BERLIN_DAYS[0], BERLIN_DAYS[-1]),
    (DAY, "Europe/Berlin", BERLIN_DAYS[0] + 5 * HOUR, BERLIN_DAYS[-1] - 90 * MINUTE),
    (3 * HOUR, None, W0 + 2 * DAY + 41 * MINUTE, W0 + 2 * DAY + 41 * MINUTE + 7 * HOUR),
]
"""Bucketed questions rollups can answer: UTC hours, 15 minutes with ragged ends, Kolkata
hours (1-minute rollups), Berlin days across DST (1-hour rollups), 3 hours in a day."""


async def _ask(h: Any, queries: Sequence[Query]) -> list[pa.Table]:
    return [
        await h.read_buckets(RPATHS, start, end, bucket=bucket, aggregates=ALL, tz=tz)
        for bucket, tz, start, end in queries
    ]


def _same(got: pa.Table, want: pa.Table, what: str) -> None:
    """Equal tables: nulls and integers exactly, floats to 1e-9 relative (the stddev of
    ``offset``, 1e9 plus 1e-3 of noise, included: both engines keep it exact)."""
    assert got.column_names == want.column_names, what
    assert got.num_rows == want.num_rows, what
    for name in got.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        assert [x is None for x in a] == [y is None for y in b], (what, name)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (what, name, i, x, y)
            else:
                assert x == y, (what, name, i, x, y)


def _edges(table: pa.Table, query: Query) -> list[int]:
    """The query's bucket edges, from its answer's starts plus the end of the last."""
    starts = sorted(set(table.column("ts").cast(pa.int64()).to_pylist()))
    bucket, tz, _, end = query
    if isinstance(bucket, int) and tz is None:
        return [*starts, starts[-1] + bucket]
    last = dt.datetime.fromtimestamp(starts[-1] // SECOND, ZoneInfo(tz or "UTC"))
    if isinstance(bucket, Calendar):
        after = (last + dt.timedelta(days=1)).replace(hour=0)
        nxt = int(dt.datetime(after.year, after.month, after.day, tzinfo=last.tzinfo).timestamp())
    else:
        nxt = int((last + dt.timedelta(seconds=bucket // SECOND)).timestamp())
    return [*starts, max(nxt * SECOND, end)]


def _check_reference(table: pa.Table, data: dict[str, list[Point]], query: Query) -> None:
    """The answer of every tag equals the plain-Python reference."""
    _, _, start, end = query
    edges = _edges(table, query)
    paths = np.array(table.column("path").to_pylist(), dtype=object)
    for path in (TEMP, COUNTER, OFFSET):
        mine = table.filter(pa.array(paths == path))
        rows = reference_buckets(data[path], edges, start, end)
        for name in [*NAMES, "bad"]:
            got = mine.column(name).to_pylist()
            want = [r[name] for r in rows]
            assert [g is None for g in got] == [w is None for w in want], (path, name)
            for g, w in zip(got, want, strict=True):
                if w is not None:
                    assert g is not None
                    assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (path, name, g, w)


def _joined(*parts: dict[str, list[Point]]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for part in parts:
        for path, points in part.items():
            out.setdefault(path, []).extend(points)
    return out


async def _drop_raw(store: Any, start: int, end: int, *, floor: int | None = None) -> None:
    """Delete the raw points in ``[start, end)`` (whole hours) behind the historian's back,
    as retention does, and record ``floor`` as where raw points end (if given)."""
    if hasattr(store, "path"):  # DuckDB: the file, closed
        import duckdb

        from shopfloor.server.historian import duckdb_rollup

        with duckdb.connect(str(store.path)) as con:
            con.execute("DELETE FROM points WHERE ts >= ? AND ts < ?", [start, end])
            if floor is not None:
                ids = [int(r[0]) for r in con.execute("SELECT id FROM tags").fetchall()]
                duckdb_rollup.set_raw_floor(con, ids, floor)
        return
    import psycopg

    from shopfloor.server.historian import pg_rollup

    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as con:
        await con.execute(f"SET search_path TO {store.schema}")
        for table in ("points_cold", "points_recent"):
            await con.execute(
                f"DELETE FROM {table} WHERE block >= %s AND block < %s",
                [start, end],
            )
        if floor is not None:
            cur = await con.execute("SELECT id FROM tags")
            ids = [int(r[0]) for r in await cur.fetchall()]
            await pg_rollup.set_raw_floor(con, ids, floor)


class RollupContract:
    """Rollup-served answers; the subclass provides the ``store`` fixture."""

    async def test_rollup_answers_equal_raw_answers_for_every_aggregate(
        self, store: _Store
    ) -> None:
        data = rollup_data(seed=11)
        async with _running(store) as h:
            await _write(h, data)
            report = await h.compact()
            assert report.rollup_rows > 0
            before = h.rollup_use.queries
            served = await _ask(h, QUERIES)
            assert h.rollup_use.queries - before == len(QUERIES)  # all from rollups
        async with _running(store, rollups=RollupSettings(enabled=False)) as h:
            raw = await _ask(h, QUERIES)
            assert h.rollup_use.queries == 0
        for query, got, want in zip(QUERIES, served, raw, strict=True):
            _same(got, want, f"{query}")
        for query, got in zip(QUERIES[:4], served, strict=False):
            _check_reference(got, data, query)

    async def test_late_points_land_and_their_rollups_are_refreshed(self, store: _Store) -> None:
        data = rollup_data(seed=12)
        hour = W0 + 30 * HOUR  # a compacted, rolled-up hour gets late points
        good, bad = int(Quality.GOOD), int(Quality.BAD_SENSOR_FAILURE)
        counter_before = max(p for p in data[COUNTER] if p[0] < hour)[1]
        late = {
            TEMP: [(hour + 1 * SECOND, 500.0, good), (hour + 30 * MINUTE + 1, -3.0, bad)],
            COUNTER: [  # a reset, then counting on
                (hour + 13 * MINUTE + 1, counter_before / 3, good),
                (hour + 13 * MINUTE + 2, counter_before / 3 + 4, good),
            ],
            OFFSET: [(hour + 59 * MINUTE + 59 * SECOND, 1e9 + 0.5, good)],
        }
        both = _joined(data, late)
        queries = QUERIES[:4]
        async with _running(store) as h:
            await _write(h, data)
            await h.compact()
            await _write(h, late, batches=2, seed=3)
            stale = await _ask(h, queries)  # rollups of that hour are stale: raw for it
            await h.compact()
            refreshed = await _ask(h, queries)
        for query, got in zip(queries, stale, strict=True):
            _check_reference(got, both, query)
        for query, got, want in zip(queries, refreshed, stale, strict=True):
            _same(got, want, f"refreshed {query}")
        # the refreshed rollups hold the late points: answers survive losing the raw ones
        await _drop_raw(store, W0 + DAY, W0 + 3 * DAY)
        async with _running(store) as h:
            again = await _ask(h, [QUERIES[0], QUERIES[3]])
        _same(again[0], refreshed[0], "utc hours from rollups only")
        _same(again[1], refreshed[3], "berlin days from rollups only")

    async def test_the_open_tail_comes_from_raw_points(self, store: _Store) -> None:
        data = rollup_data(seed=13)
        now = [W1 - 25 * MINUTE]  # the last half hour is not rolled up yet
        options: dict[str, Any] = {"clock": lambda: now[0], "compaction_grace_s": 0}
        query: Query = (5 * MINUTE, None, W1 - 3 * HOUR - 7 * SECOND, W1)
        async with _running(store, **options) as h:
            await _write(h, data)
            await h.compact()
            served = await _ask(h, [query])
            assert h.rollup_use.queries == 1
            await _write(h, {TEMP: [(W1 - 5 * MINUTE + 3, 1e4, int(Quality.GOOD))]}, batches=1)
            with_new = await _ask(h, [query])
        async with _running(store, rollups=RollupSettings(enabled=False)) as h:
            raw = await _ask(h, [query])
        _same(with_new[0], raw[0], "tail")
        assert served[0].num_rows == raw[0].num_rows

    async def test_deleted_raw_points_are_answered_from_rollups_or_refused(
        self, store: _Store
    ) -> None:
        data = rollup_data(seed=14)
        aligned: Query = (HOUR, None, W0 + DAY, W0 + 3 * DAY)
        kolkata: Query = (HOUR, "Asia/Kolkata", W0 + DAY + 30 * MINUTE, W0 + 3 * DAY - 30 * MINUTE)
        async with _running(store) as h:
            await _write(h, data)
            await h.compact()
            want = await _ask(h, [aligned, kolkata])
        await _drop_raw(store, W0, W0 + 3 * DAY, floor=W0 + 3 * DAY)
        async with _running(store) as h:
            got = await _ask(h, [aligned, kolkata])
            for bucket, start in [(7 * SECOND, W0 + DAY), (HOUR, W0 + DAY + 1)]:
                with pytest.raises(PayloadError) as refused:
                    await h.read_buckets(
                        RPATHS, start, W0 + 2 * DAY, bucket=bucket, aggregates=[Aggregate.AVG]
                    )
                assert refused.value.field == "start"
                assert "deleted by retention" in refused.value.message
            # a point arriving for an hour retention deleted is not rolled up: recomputed
            # from what raw is left, the hour would lose everything else
            late = {TEMP: [(W0 + DAY + 90 * MINUTE + 1, 9999.0, int(Quality.GOOD))]}
            await _write(h, late, batches=1)
            await h.compact()
            kept = await _ask(h, [aligned])
        _same(got[0], want[0], "utc hours after retention")
        _same(got[1], want[1], "kolkata hours after retention")
        _same(kept[0], want[0], "utc hours after a point came too late")
