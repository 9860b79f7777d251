"""Rollups of the DuckDB historian: tables, background refresh and reading.

**Tables.** ``rollup_1m`` and ``rollup_1h`` hold one row per tag and UTC minute (hour)
with points: the cell state of :mod:`~shopfloor.server.historian.rollup`. ``rollup_meta``
holds the *frontier*: every minute before it is rolled up, for every tag, except the
*stale* ``(hour, tag)`` pairs.

**Stale pairs.** A point that arrives for a time before the frontier (late, backfilled)
makes its hour's rollups stale. The writer's commit records such pairs in
``compaction_todo`` (a row with ``hour`` set; see
:meth:`~shopfloor.server.historian.compaction.Todo.commit_pairs`), in the same
transaction as the points, so a reader's snapshot never holds a late point without its
mark. Readers take a stale pair's hour from raw points; the next refresh recomputes it
from raw and deletes the marks it saw (a mark committed after its snapshot stays).

**Refresh** (:func:`refresh`, on the compaction worker's thread and cursor, beside the
writer) first recomputes stale pairs below the frontier, hour by hour in chunks of at
most ``chunk_rows`` points, then moves the frontier towards ``target`` (a minute, a grace
after the wall clock) in steps of at most an hour or ``chunk_rows`` points, jumping over
stretches without points. Each chunk and step is one transaction: 1-minute rows from
raw, the 1-hour row of an hour it completes from that hour's 1-minute rows, the frontier
and the marks it covered. Killed midway, a transaction leaves all or nothing; the
rollups can always be recomputed from raw.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.model.points import Int64Array
from shopfloor.server.historian import query
from shopfloor.server.historian.aggregate import Points, Prior
from shopfloor.server.historian.planner import (
    NO_FLOOR,
    Parts,
    RollupSpan,
    all_raw,
    check_raw_floor,
    drop_stale,
    raw_ranges,
)
from shopfloor.server.historian.rollup import (
    HOUR_NS,
    MINUTE_NS,
    Cells,
    cells_of_points,
    hour_cells,
)

__all__ = [
    "DDL",
    "RefreshReport",
    "prior_from_rollups",
    "raw_floors",
    "read_frontier",
    "read_parts",
    "refresh",
    "rolled_up_before",
    "rollup_floor",
    "set_raw_floor",
    "set_rollup_floor",
]

logger = logging.getLogger(__name__)

TABLES = {MINUTE_NS: "rollup_1m", HOUR_NS: "rollup_1h"}

_COLUMNS = (
    "tag_id INTEGER NOT NULL, bucket BIGINT NOT NULL, n INTEGER NOT NULL, "
    "pts INTEGER NOT NULL, bad INTEGER NOT NULL, dsum DOUBLE NOT NULL, m2 DOUBLE NOT NULL, "
    "vmin DOUBLE NOT NULL, vmax DOUBLE NOT NULL, first_ts BIGINT NOT NULL, "
    "first_v DOUBLE NOT NULL, last_ts BIGINT NOT NULL, last_v DOUBLE NOT NULL, "
    "head_ts BIGINT NOT NULL, hold DOUBLE NOT NULL, area DOUBLE NOT NULL, "
    "span_ns BIGINT NOT NULL, rise DOUBLE NOT NULL"
)

DDL = (
    *(f"CREATE TABLE IF NOT EXISTS {table}({_COLUMNS})" for table in TABLES.values()),
    "CREATE TABLE IF NOT EXISTS rollup_meta(key VARCHAR NOT NULL, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS raw_floor(tag_id INTEGER NOT NULL, floor_ns BIGINT NOT NULL)",
    # marks of stale (hour, tag) pairs ride in compaction_todo (see the module docstring)
    "ALTER TABLE compaction_todo ADD COLUMN IF NOT EXISTS hour BIGINT",
)
"""The rollup tables (run by :func:`~shopfloor.server.historian.schema.create`)."""

_INT32 = {"n", "pts", "bad"}
_STORED = tuple(name for name in Cells.names() if name not in ("tag", "start", "end"))
_SELECT = "tag_id, bucket, " + ", ".join(_STORED)

_FRONTIER = "frontier"


# ------------------------------------------------------------------------ rows
def _table(cells: Cells) -> pa.Table:
    """Cells (``tag`` a tag id) as rows of a rollup table, in its column order."""
    arrays = [pa.array(cells.tag, pa.int32()), pa.array(cells.start, pa.int64())]
    for name in _STORED:
        column = getattr(cells, name)
        kind = pa.int32() if name in _INT32 else pa.from_numpy_dtype(column.dtype)
        arrays.append(pa.array(column, kind))
    return pa.Table.from_arrays(arrays, names=["tag_id", "bucket", *_STORED])


def _cells(table: pa.Table, level: int) -> Cells:
    """Rows of a rollup table as cells (``tag`` the tag id)."""
    columns: dict[str, npt.NDArray[Any]] = {name: table.column(name).to_numpy() for name in _STORED}
    columns["tag"] = table.column("tag_id").to_numpy()
    start = np.asarray(table.column("bucket").to_numpy(), np.int64)
    columns["start"], columns["end"] = start, start + level
    return Cells.from_columns(columns)


def _meta(con: duckdb.DuckDBPyConnection, key: str) -> int | None:
    return _one(con, "SELECT max(value) FROM rollup_meta WHERE key = $key", {"key": key})


def _set_meta(con: duckdb.DuckDBPyConnection, key: str, value: int) -> None:
    """Inside the caller's transaction."""
    con.execute("DELETE FROM rollup_meta WHERE key = ?", [key])
    con.execute("INSERT INTO rollup_meta VALUES (?, ?)", [key, value])


def read_frontier(con: duckdb.DuckDBPyConnection) -> int | None:
    """Before this time every minute is rolled up (stale pairs aside); None: never yet."""
    return _meta(con, _FRONTIER)


def raw_floors(con: duckdb.DuckDBPyConnection, tag_ids: Int64Array) -> Int64Array:
    """Per tag (in query order), the time before which retention deleted its raw points
    (:data:`~.planner.NO_FLOOR` where it deleted none)."""
    out = np.full(len(tag_ids), NO_FLOOR, np.int64)
    if not _one(con, "SELECT count(*) FROM raw_floor", {}):  # the common case: no lookup
        return out
    rows = con.execute(
        "SELECT tag_id, max(floor_ns) FROM raw_floor WHERE list_contains(?, tag_id) "
        "GROUP BY tag_id",
        [_ids_param(tag_ids)],
    ).fetchall()
    if rows:
        lut = _lookup(tag_ids)
        out[lut[np.array([r[0] for r in rows], np.int64)]] = [int(r[1]) for r in rows]
    return out


def set_raw_floor(con: duckdb.DuckDBPyConnection, tag_ids: Sequence[int], floor_ns: int) -> None:
    """Record that raw points of ``tag_ids`` before ``floor_ns`` are deleted.

    For retention, inside its deleting transaction: a query then answers that time from
    rollups, or refuses it by name, instead of counting deleted points as missing.
    """
    con.register("_floor_in", pa.table({"tag_id": pa.array(list(tag_ids), pa.int32())}))
    try:
        con.execute(
            "DELETE FROM raw_floor WHERE tag_id IN (SELECT tag_id FROM _floor_in) "
            "AND floor_ns <= ?",
            [floor_ns],
        )
        con.execute(
            "INSERT INTO raw_floor SELECT tag_id, ? FROM _floor_in WHERE tag_id NOT IN "
            "(SELECT tag_id FROM raw_floor)",
            [floor_ns],
        )
    finally:
        con.unregister("_floor_in")


def rollup_floor(con: duckdb.DuckDBPyConnection, level: int) -> int | None:
    """The time before which retention deleted rollups of ``level`` (None: it deleted none)."""
    return _meta(con, f"floor:{TABLES[level]}")


def set_rollup_floor(con: duckdb.DuckDBPyConnection, level: int, floor_ns: int) -> None:
    """Record that rows of the ``level`` rollups before ``floor_ns`` are deleted (for
    retention, inside its deleting transaction): queries read raw points there instead."""
    key = f"floor:{TABLES[level]}"
    _set_meta(con, key, max(floor_ns, _meta(con, key) or floor_ns))


def rolled_up_before(con: duckdb.DuckDBPyConnection) -> int | None:
    """Raw points before this time may be deleted: their rollups are complete and fresh.

    The frontier, or the earliest stale hour if earlier; None before the first refresh.
    """
    frontier = read_frontier(con)
    if frontier is None:
        return None
    stale = _one(
        con,
        "SELECT min(hour) FROM compaction_todo WHERE hour IS NOT NULL AND hour < $f",
        {"f": frontier},
    )
    return frontier if stale is None else min(frontier, stale)


# --------------------------------------------------------------------- refresh
_BYTES_PER_POINT = 200
"""What a refresh step holds in Python per raw point (Arrow columns plus the numpy
temporaries of :func:`cells_of_points`; measured 185)."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|k|m|g|t)(i?)b\s*$", re.IGNORECASE)


def step_points(memory_limit: str, chunk_rows: int) -> int:
    """The most raw points one refresh step reads: what ``memory_limit`` (DuckDB's setting,
    e.g. ``"512MB"``) holds at :data:`_BYTES_PER_POINT`, within ``[50_000, chunk_rows]``.

    The step's arrays live outside DuckDB's limit; sized so, they add at most about the
    limit again (a 32 MB limit: 160,000 points, 30 MB) instead of a fixed 1 M points
    (185 MB). An unreadable limit leaves ``chunk_rows``.
    """
    match = _SIZE.match(memory_limit)
    if not match:
        return chunk_rows
    unit = match.group(2).lower()
    power = "kmgt".index(unit) + 1 if unit else 0
    size = float(match.group(1)) * (1024 if match.group(3) else 1000) ** power
    return max(min(50_000, chunk_rows), min(chunk_rows, int(size) // _BYTES_PER_POINT))


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What a refresh did: rollup rows written, transactions, the longest one."""

    rows: int
    steps: int
    longest_step_s: float


def _tags_view(con: duckdb.DuckDBPyConnection, tags: list[int]) -> None:
    con.register("_rollup_tags", pa.table({"tag_id": pa.array(tags, pa.int32())}))


_CHUNK_TAGS = "tag_id BETWEEN $first AND $last AND tag_id IN (SELECT tag_id FROM _rollup_tags)"


def _points(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any]) -> pa.Table:
    return con.sql(
        f"SELECT tag_id, ts, value, quality FROM points WHERE ts >= $lo AND ts < $hi{where}",
        params=params,
    ).to_arrow_table()


def _minutes(table: pa.Table, lo: int, hi: int) -> Cells:
    edges = np.arange(lo, hi + 1, MINUTE_NS, dtype=np.int64)
    return cells_of_points(
        np.asarray(table.column("tag_id").to_numpy(), np.int64),
        np.asarray(table.column("ts").to_numpy(), np.int64),
        np.asarray(table.column("value").to_numpy(), np.float64),
        np.asarray(table.column("quality").to_numpy(), np.uint32),
        edges,
    )


def _insert(con: duckdb.DuckDBPyConnection, level: int, cells: Cells) -> int:
    if not len(cells):
        return 0
    con.register("_rollup_in", _table(cells))
    try:
        con.execute(f"INSERT INTO {TABLES[level]} SELECT * FROM _rollup_in")
    finally:
        con.unregister("_rollup_in")
    return len(cells)


def _transaction(con: duckdb.DuckDBPyConnection) -> _Txn:
    return _Txn(con)


class _Txn:
    """BEGIN ... COMMIT, rolled back on any error (the error goes on)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.begin()

    def __exit__(self, kind: object, err: object, tb: object) -> None:
        if kind is None:
            self._con.commit()
            return
        try:
            self._con.rollback()
        except duckdb.Error:
            logger.exception("rolling back a rollup refresh step failed")


def _refresh_stale(
    con: duckdb.DuckDBPyConnection, hour: int, tags: list[int], frontier: int
) -> int:
    """Recompute the rollups of ``tags`` in ``hour`` (up to the frontier); drop the marks."""
    hi = min(hour + HOUR_NS, frontier)
    params = {"lo": hour, "hi": hi, "first": min(tags), "last": max(tags)}
    _tags_view(con, tags)
    try:
        with _transaction(con):
            minutes = _minutes(_points(con, f" AND {_CHUNK_TAGS}", params), hour, hi)
            con.execute(
                f"DELETE FROM rollup_1m WHERE bucket >= $lo AND bucket < $hi AND {_CHUNK_TAGS}",
                params,
            )
            rows = _insert(con, MINUTE_NS, minutes)
            one = {"lo": hour, "first": params["first"], "last": params["last"]}
            if hour + HOUR_NS <= frontier:
                con.execute(f"DELETE FROM rollup_1h WHERE bucket = $lo AND {_CHUNK_TAGS}", one)
                rows += _insert(con, HOUR_NS, hour_cells(minutes))
            # only the marks this snapshot sees: one committed meanwhile stays
            con.execute(f"DELETE FROM compaction_todo WHERE hour = $lo AND {_CHUNK_TAGS}", one)
    finally:
        con.unregister("_rollup_tags")
    return rows


def _forget_marks(con: duckdb.DuckDBPyConnection, hour: int, tags: list[int]) -> None:
    """Drop the marks of ``tags`` in ``hour`` whose raw points retention deleted: their
    rollups stay as they are (recomputed from what raw is left they would lose the rest),
    so a point arriving after its hour was deleted is not rolled up."""
    params = {"lo": hour, "first": min(tags), "last": max(tags)}
    _tags_view(con, tags)
    try:
        with _transaction(con):
            con.execute(f"DELETE FROM compaction_todo WHERE hour = $lo AND {_CHUNK_TAGS}", params)
    finally:
        con.unregister("_rollup_tags")


def _advance(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> int:
    """Roll up every tag over ``[lo, hi)`` and move the frontier to ``hi``: 1-minute rows
    from raw points, then the 1-hour rows of every hour complete by ``hi`` from their
    minutes (those before ``lo`` read back)."""
    with _transaction(con):
        rows = 0
        if hi > lo:
            params = {"lo": lo, "hi": hi}
            minutes = _minutes(_points(con, "", params), lo, hi)
            con.execute("DELETE FROM rollup_1m WHERE bucket >= $lo AND bucket < $hi", params)
            rows = _insert(con, MINUTE_NS, minutes)
            first, done = lo - lo % HOUR_NS, hi - hi % HOUR_NS
            if done > first:  # hours [first, done) are complete
                parts = [minutes.take(minutes.start < done)]
                if first < lo:
                    stored = con.sql(
                        f"SELECT {_SELECT} FROM rollup_1m WHERE bucket >= $h AND bucket < $lo",
                        params={"h": first, "lo": lo},
                    ).to_arrow_table()
                    parts.insert(0, _cells(stored, MINUTE_NS))
                con.execute(
                    "DELETE FROM rollup_1h WHERE bucket >= $h AND bucket < $done",
                    {"h": first, "done": done},
                )
                rows += _insert(con, HOUR_NS, hour_cells(Cells.concat(parts)))
        _set_meta(con, _FRONTIER, hi)
    return rows


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> int | None:
    # fetchall: DuckDB refuses other work on a cursor whose result is not exhausted
    rows = con.execute(sql, params).fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])


_LOOK_AHEAD_NS = 7 * 24 * HOUR_NS
"""How far one step of the frontier looks for points (a week of minutes to count)."""


def _step_end(con: duckdb.DuckDBPyConnection, lo: int, target: int, chunk_rows: int) -> int:
    """Where a step of the frontier from ``lo`` ends: as far as ``chunk_rows`` points reach
    (at least the first minute with points), within a week and before ``target``; over a
    week without points, to the hour of the next point (or the target)."""
    window = min(target, lo + _LOOK_AHEAD_NS)
    counts = con.execute(
        "SELECT (ts - $lo) // 60000000000 AS m, count(*) FROM points "
        "WHERE ts >= $lo AND ts < $hi GROUP BY m ORDER BY m",
        {"lo": lo, "hi": window},
    ).fetchall()
    if not counts:
        nxt = _one(con, "SELECT min(ts) FROM points WHERE ts >= $lo", {"lo": window})
        if nxt is None or nxt >= target:
            return target
        return max(window, nxt - nxt % HOUR_NS)
    minute = np.array([c[0] for c in counts], np.int64)
    seen = np.cumsum([c[1] for c in counts])
    if seen[-1] <= chunk_rows:
        return window
    fits = int(np.searchsorted(seen, chunk_rows, side="right"))  # minutes that fit
    return lo + (int(minute[max(fits - 1, 0)]) + 1) * MINUTE_NS


def _chunks(counts: dict[int, int], tags: list[int], chunk_rows: int) -> list[list[int]]:
    """Tags packed in order into chunks of at most ``chunk_rows`` points (a bigger tag alone)."""
    out: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for tag in tags:
        n = counts.get(tag, 0)
        if current and rows + n > chunk_rows:
            out.append(current)
            current, rows = [], 0
        current.append(tag)
        rows += n
    if current:
        out.append(current)
    return out


def refresh(
    con: duckdb.DuckDBPyConnection, *, target: int, chunk_rows: int, stop: threading.Event
) -> RefreshReport:
    """Recompute stale pairs, then move the frontier to ``target`` (see the module docstring).

    Raises:
        duckdb.Error: a step failed (rolled back; earlier steps stay done).
    """
    rows = steps = 0
    longest = 0.0

    def timed(started: float) -> None:
        nonlocal steps, longest
        steps += 1
        longest = max(longest, time.perf_counter() - started)

    frontier = read_frontier(con)
    if frontier is not None:
        marks = con.execute(
            "SELECT DISTINCT hour, tag_id FROM compaction_todo "
            "WHERE hour IS NOT NULL AND hour < ? ORDER BY hour, tag_id",
            [frontier],
        ).fetchall()
        by_hour: dict[int, list[int]] = {}
        for hour, tag in marks:
            by_hour.setdefault(int(hour), []).append(int(tag))
        floors = {
            int(t): int(f)
            for t, f in con.execute(
                "SELECT tag_id, max(floor_ns) FROM raw_floor GROUP BY tag_id"
            ).fetchall()
        }
        for hour, marked in by_hour.items():
            lost = [t for t in marked if floors.get(t, NO_FLOOR) > hour]
            if lost:
                _forget_marks(con, hour, lost)
            tags = [t for t in marked if floors.get(t, NO_FLOOR) <= hour]
            if not tags:
                continue
            counts = dict(
                con.execute(
                    "SELECT tag_id, count(*) FROM points WHERE ts >= ? AND ts < ? "
                    "AND tag_id BETWEEN ? AND ? GROUP BY tag_id",
                    [hour, hour + HOUR_NS, tags[0], tags[-1]],
                ).fetchall()
            )
            for chunk in _chunks(counts, tags, chunk_rows):
                if stop.is_set():
                    return RefreshReport(rows, steps, longest)
                started = time.perf_counter()
                rows += _refresh_stale(con, hour, chunk, frontier)
                timed(started)
    else:
        first = _one(con, "SELECT min(ts) FROM points", {})
        frontier = target if first is None else min(target, first - first % HOUR_NS)
    at = frontier
    while at < target and not stop.is_set():
        hi = _step_end(con, at, target, chunk_rows)
        started = time.perf_counter()
        rows += _advance(con, at, hi)
        timed(started)
        at = hi
    if read_frontier(con) != at and not stop.is_set():
        started = time.perf_counter()
        _advance(con, at, at)  # a first refresh of a database without points
        timed(started)
    return RefreshReport(rows, steps, longest)


# ------------------------------------------------------------------------ reading
def _lookup(tag_ids: Int64Array) -> npt.NDArray[np.intp]:
    lut = np.full(int(tag_ids.max()) + 1, -1, dtype=np.intp)
    lut[tag_ids] = np.arange(len(tag_ids))
    return lut


def _ids_param(tag_ids: Int64Array) -> list[int]:
    return [int(i) for i in tag_ids]


def read_parts(
    con: duckdb.DuckDBPyConnection,
    tag_ids: Int64Array,
    plan: query.BucketPlan,
    candidates: list[RollupSpan],
    *,
    floors: Int64Array,
    fetch_range: Callable[[duckdb.DuckDBPyConnection, Int64Array, int, int], Points],
) -> Parts | None:
    """Read what ``plan`` needs from rollups and raw points, inside the caller's snapshot.

    Takes the coarsest candidate the rollups cover; None when none does (answer from
    raw). ``floors``: :func:`raw_floors` of the tags. ``fetch_range(con, ids, start,
    end)`` reads raw points as :class:`Points`.

    Raises:
        PayloadError: raw points the answer needs were deleted by retention.
    """
    meta = dict(con.execute("SELECT key, max(value) FROM rollup_meta GROUP BY key").fetchall())
    frontier = meta.get(_FRONTIER)
    if frontier is None:
        return None
    chosen = None
    for span in candidates:
        end = min(span.end, frontier - frontier % span.level)
        start = span.start
        floor = meta.get(f"floor:{TABLES[span.level]}")
        if floor is not None:
            start = max(start, -(-floor // span.level) * span.level)
        if end > start:
            chosen = RollupSpan(span.level, start, end)
            break
    if chosen is None:
        return None
    lut = _lookup(tag_ids)
    ids = _ids_param(tag_ids)
    marks = con.execute(
        "SELECT DISTINCT hour, tag_id FROM compaction_todo WHERE hour IS NOT NULL "
        "AND hour >= $lo AND hour < $hi AND list_contains($ids, tag_id)",
        {"lo": chosen.start - chosen.start % HOUR_NS, "hi": chosen.end, "ids": ids},
    ).fetchall()
    stale_hour = np.array([m[0] for m in marks], np.int64)
    stale_tag = lut[np.array([m[1] for m in marks], np.int64)] if marks else np.zeros(0, np.intp)
    ranges = raw_ranges(plan, chosen, stale_tag, stale_hour)
    check_raw_floor(ranges, floors, plan.paths)
    if all_raw(plan, ranges):  # every hour stale (a day of late points): the raw path
        return None
    table = con.sql(
        f"SELECT {_SELECT} FROM {TABLES[chosen.level]} WHERE list_contains($ids, tag_id) "
        "AND bucket >= $lo AND bucket < $hi",
        params={"ids": ids, "lo": chosen.start, "hi": chosen.end},
    ).to_arrow_table()
    cells = _cells(table, chosen.level)
    cells = cells.with_tag(lut[cells.tag])
    cells = drop_stale(cells, stale_tag, stale_hour, len(tag_ids))
    raw = [fetch_range(con, tag_ids[r.tags], r.start, r.end) for r in ranges]
    points = _join(raw, [r.tags for r in ranges])
    query.check_fetched(len(points))
    return Parts(chosen, cells, points, ranges, table.num_rows)


def _join(parts: list[Points], tags: list[npt.NDArray[np.intp]]) -> Points:
    """Points read per range (``tag`` the position among the range's tags), joined with
    ``tag`` the query position."""
    if not parts:
        return Points.empty()
    return Points(
        np.concatenate([t[p.tag] for p, t in zip(parts, tags, strict=True)]),
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.quality for p in parts]),
    )


_PRIOR_WINDOWS = (HOUR_NS, 24 * HOUR_NS, 16 * 24 * HOUR_NS, 256 * 24 * HOUR_NS)
"""How far back :func:`prior_from_rollups` looks, window by window, then everything."""


def prior_from_rollups(
    con: duckdb.DuckDBPyConnection, tag_ids: Int64Array, before_ns: int, prior: Prior, *, good: bool
) -> None:
    """Fill ``prior`` for the tags raw points had none for, from rollups before ``before_ns``.

    Where retention deleted raw points, the value in force (and a counter's baseline)
    before a range lives on in the rollups: per tag, the latest cell's ``hold`` and the
    latest usable ``last_v``. 1-minute rows for the part of an hour before ``before_ns``,
    then 1-hour rows in windows growing back in time.
    """
    lut = _lookup(tag_ids) if len(tag_ids) else np.zeros(1, np.intp)
    hour = before_ns - before_ns % HOUR_NS
    windows = [("rollup_1m", MINUTE_NS, hour, before_ns)]
    hi = hour
    for width in _PRIOR_WINDOWS:
        windows.append(("rollup_1h", HOUR_NS, hi - width, hi))
        hi -= width
    windows.append(("rollup_1h", HOUR_NS, -(2**62), hi))
    for table, level, lo, hi in windows:
        missing = ~(prior.has_good if good else prior.has_last)
        if not missing.any():
            return
        found = con.sql(
            "SELECT tag_id, arg_max(hold, bucket) AS hold, max(bucket) AS bucket, "
            "max(last_ts) FILTER (WHERE n > 0) AS good_ts, "
            "arg_max(last_v, last_ts) FILTER (WHERE n > 0) AS good_v "
            f"FROM {table} WHERE list_contains($ids, tag_id) AND bucket >= $lo "
            "AND bucket + $level <= $hi GROUP BY tag_id",
            params={
                "ids": _ids_param(tag_ids[missing]),
                "lo": lo,
                "hi": hi,
                "level": level,
            },
        ).to_arrow_table()
        at = lut[np.asarray(found.column("tag_id").to_numpy(), np.int64)]
        new = ~prior.has_last[at]  # windows go back in time: the first find is the latest
        hold = np.asarray(found.column("hold").to_numpy(), np.float64)[new]
        prior.has_last[at[new]] = True
        prior.last_ts[at[new]] = np.asarray(found.column("bucket").to_numpy(), np.int64)[new]
        prior.last_value[at[new]] = hold
        prior.last_quality[at[new]] = np.where(np.isnan(hold), _BAD, 0).astype(np.uint32)
        has_good = found.column("good_ts").is_valid().to_numpy(zero_copy_only=False)
        fresh = has_good & ~prior.has_good[at]
        good_ts = found.column("good_ts").fill_null(0).to_numpy()
        good_v = found.column("good_v").fill_null(np.nan).to_numpy()
        prior.has_good[at[fresh]] = True
        prior.good_ts[at[fresh]] = np.asarray(good_ts, np.int64)[fresh]
        prior.good_value[at[fresh]] = np.asarray(good_v, np.float64)[fresh]


_BAD = 0x80000000
