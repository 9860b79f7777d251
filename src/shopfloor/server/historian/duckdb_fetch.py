"""The DuckDB historian's side of a query: fetch points of many tags as columns.

Everything runs on one reader thread inside one read transaction, so the points of the
range and those before and after it come from the same snapshot.

``points`` has no index: DuckDB skips row groups by their min/max ``ts`` (and ``tag_id``)
only. The range is one scan of the row groups it touches, filtered by a list of tag ids,
returned unsorted as Arrow (an ``ORDER BY`` costs more than the whole computation; the
engine works in storage order: sorted by (tag, ts) within each commit, or each compacted
day). The last point before the range is looked for in windows that grow sixteenfold (a
minute, 16 minutes, 4 hours, ... then everything), each only for the tags not found yet,
so a tag sampled every second costs a scan of one minute and a tag silent for a month a
few more.

A bucketed query whose buckets are whole UTC hours or minutes reads rollups where they
are complete and raw points for the rest (:mod:`~shopfloor.server.historian.planner`,
:mod:`~shopfloor.server.historian.duckdb_rollup`), in the same snapshot. Where retention
deleted raw points, a query that needs them is refused by name, and the value before a
range comes from rollups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.errors import PayloadError
from shopfloor.server.historian import duckdb_rollup, planner, query
from shopfloor.server.historian.aggregate import Following, Points, Prior
from shopfloor.server.historian.planner import RawRange, RollupUse
from shopfloor.server.historian.query import AtPlan, BucketPlan

__all__ = ["answer_at", "answer_buckets"]

_FIRST_WINDOW_NS = 60 * 10**9
_GROWTH = 16
_WINDOWS = 6
"""Windows before the last, unbounded one: 1 min, 16 min, 4.3 h, 2.8 d, 45 d, 2 years."""

_GOOD = "(quality & 3221225472) = 0 AND NOT isnan(value)"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

IdArray = npt.NDArray[np.int64]


def answer_buckets(
    con: duckdb.DuckDBPyConnection,
    tag_ids: IdArray,
    plan: BucketPlan,
    *,
    rollups: RollupUse | None = None,
) -> pa.Table:
    """Fetch what ``plan`` needs for the tags ``tag_ids`` (in plan order) and answer it.

    With ``rollups`` (counting their use), from rollups where they answer exactly.

    Raises:
        PayloadError: the answer needs raw points that retention deleted.
    """
    if plan.empty:
        return plan.empty_answer()
    candidates = planner.spans(plan) if rollups is not None else []
    with _snapshot(con):
        floors = duckdb_rollup.raw_floors(con, tag_ids)
        parts = None
        if candidates:
            parts = duckdb_rollup.read_parts(
                con, tag_ids, plan, candidates, floors=floors, fetch_range=fetch_range
            )
        if parts is None:
            every = np.arange(len(tag_ids), dtype=np.intp)
            whole = [RawRange(plan.start_ns, plan.end_ns, every)]
            planner.check_raw_floor(whole, floors, plan.paths)
            points = fetch_range(con, tag_ids, plan.start_ns, plan.end_ns)
        prior = None
        if plan.prior_last or plan.prior_good:
            prior = fetch_prior(con, tag_ids, plan.start_ns, good=plan.prior_good)
            _prior_after_retention(con, tag_ids, plan.start_ns, prior, floors, good=plan.prior_good)
    if parts is None:
        return plan.answer(points, prior)
    assert rollups is not None
    rollups.count(parts.rollup_rows)
    return planner.answer(plan, parts, prior)


def answer_at(con: duckdb.DuckDBPyConnection, tag_ids: IdArray, plan: AtPlan) -> pa.Table:
    """Fetch what ``plan`` needs for the tags ``tag_ids`` (in plan order) and answer it.

    Raises:
        PayloadError: a time lies where retention deleted the raw points.
    """
    if plan.empty:
        return plan.answer(Points.empty(), None, None)
    with _snapshot(con):
        floors = duckdb_rollup.raw_floors(con, tag_ids)
        if len(floors) and plan.start_ns < int(floors.max()):
            floor = int(floors.max())
            raise PayloadError(
                "times",
                f"raw points of {plan.paths[int(floors.argmax())]} before "
                f"{planner.iso(floor)} were deleted by retention: ask for values at later "
                "times (or for bucketed aggregates of whole UTC minutes or hours)",
            )
        points = fetch_range(con, tag_ids, plan.start_ns, plan.end_ns, usable_only=True)
        prior = fetch_prior(con, tag_ids, plan.start_ns, good=True)
        _prior_after_retention(con, tag_ids, plan.start_ns, prior, floors, good=True)
        following = fetch_following(con, tag_ids, plan.end_ns) if plan.following else None
    return plan.answer(points, prior, following)


def _prior_after_retention(
    con: duckdb.DuckDBPyConnection,
    tag_ids: IdArray,
    before_ns: int,
    prior: Prior,
    floors: npt.NDArray[np.int64],
    *,
    good: bool,
) -> None:
    """Where retention deleted a tag's raw points, the rollups remember its prior.

    A raw prior older than the tag's floor (or none) may not be the last point: then the
    latest rollup cell before the range has it.
    """
    if not len(floors) or int(floors.max()) == planner.NO_FLOOR:
        return
    kept = floors > planner.NO_FLOOR
    need_last = kept & (~prior.has_last | (prior.last_ts < floors))
    need_good = kept & good & (~prior.has_good | (prior.good_ts < floors))
    picked = np.flatnonzero(need_last | need_good)
    if not len(picked):
        return
    found = Prior.nothing(len(picked))
    duckdb_rollup.prior_from_rollups(con, tag_ids[picked], before_ns, found, good=good)
    planner.merge_prior(prior, found, picked, last=need_last[picked], good=need_good[picked])


@contextlib.contextmanager
def _snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One read transaction: every query inside sees the same committed data."""
    con.begin()
    try:
        yield
    finally:
        con.rollback()


def _id_filter(tag_ids: IdArray) -> tuple[str, dict[str, Any]]:
    if len(tag_ids) == 1:
        return "tag_id = $id", {"id": int(tag_ids[0])}
    return "list_contains($ids, tag_id)", {"ids": [int(i) for i in tag_ids]}


def _lookup(tag_ids: IdArray) -> npt.NDArray[np.intp]:
    """Tag id to position in the query's tag list."""
    lut = np.full(int(tag_ids.max()) + 1, -1, dtype=np.intp)
    lut[tag_ids] = np.arange(len(tag_ids))
    return lut


def _numpy(table: pa.Table, name: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.asarray(table.column(name).to_numpy(), dtype=dtype)


def fetch_range(
    con: duckdb.DuckDBPyConnection,
    tag_ids: IdArray,
    start_ns: int,
    end_ns: int,
    *,
    usable_only: bool = False,
) -> Points:
    """Every point of ``tag_ids`` in ``[start_ns, end_ns)``, in storage order."""
    where, params = _id_filter(tag_ids)
    if usable_only:
        where += f" AND {_GOOD}"
    table = con.sql(
        f"SELECT tag_id, ts, value, quality FROM points WHERE {where} "
        "AND ts >= $start AND ts < $end LIMIT $limit",
        params={**params, "start": start_ns, "end": end_ns, "limit": query.MAX_POINTS + 1},
    ).to_arrow_table()
    query.check_fetched(table.num_rows)
    return Points(
        _lookup(tag_ids)[_numpy(table, "tag_id", np.int64)],
        _numpy(table, "ts", np.int64),
        _numpy(table, "value", np.float64),
        _numpy(table, "quality", np.uint32),
    )


def _windows(before_ns: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` windows going back from ``before_ns``, the last one unbounded."""
    out = []
    hi, width = before_ns, _FIRST_WINDOW_NS
    for _ in range(_WINDOWS):
        lo = max(hi - width, _INT64_MIN)
        out.append((lo, hi))
        hi, width = lo, width * _GROWTH
    out.append((_INT64_MIN, hi))
    return out


def fetch_prior(
    con: duckdb.DuckDBPyConnection, tag_ids: IdArray, before_ns: int, *, good: bool
) -> Prior:
    """Per tag, its last point and (if ``good``) its last usable point before ``before_ns``."""
    n = len(tag_ids)
    prior = Prior.nothing(n)
    lut = _lookup(tag_ids)
    for lo, hi in _windows(before_ns):
        missing = ~(prior.has_good if good else prior.has_last)
        if not missing.any() or hi <= lo:
            break
        where, params = _id_filter(tag_ids[missing])
        table = con.sql(
            "SELECT tag_id, max(ts) AS ts, arg_max(value, ts) AS value, "
            "arg_max(quality, ts) AS quality, "
            f"max(ts) FILTER (WHERE {_GOOD}) AS good_ts, "
            f"arg_max(value, ts) FILTER (WHERE {_GOOD}) AS good_value "
            f"FROM points WHERE {where} AND ts >= $lo AND ts < $hi GROUP BY tag_id",
            params={**params, "lo": lo, "hi": hi},
        ).to_arrow_table()
        at = lut[_numpy(table, "tag_id", np.int64)]
        new = ~prior.has_last[at]  # windows go back in time: the first find is the last
        prior.has_last[at[new]] = True
        prior.last_ts[at[new]] = _numpy(table, "ts", np.int64)[new]
        prior.last_value[at[new]] = _numpy(table, "value", np.float64)[new]
        prior.last_quality[at[new]] = _numpy(table, "quality", np.uint32)[new]
        found = table.column("good_ts").is_valid().to_numpy(zero_copy_only=False)
        fresh = found & ~prior.has_good[at]
        prior.has_good[at[fresh]] = True
        good_ts = table.column("good_ts").fill_null(0).to_numpy()
        good_value = table.column("good_value").fill_null(np.nan).to_numpy()
        prior.good_ts[at[fresh]] = np.asarray(good_ts, np.int64)[fresh]
        prior.good_value[at[fresh]] = np.asarray(good_value, np.float64)[fresh]
    return prior


def fetch_following(con: duckdb.DuckDBPyConnection, tag_ids: IdArray, at_ns: int) -> Following:
    """Per tag, its first usable point at or after ``at_ns`` (windows growing forward)."""
    following = Following.nothing(len(tag_ids))
    lut = _lookup(tag_ids)
    lo, width = at_ns, _FIRST_WINDOW_NS
    for step in range(_WINDOWS + 1):
        missing = ~following.has
        if not missing.any() or lo >= _INT64_MAX:
            break
        hi = _INT64_MAX if step == _WINDOWS else min(lo + width, _INT64_MAX)
        where, params = _id_filter(tag_ids[missing])
        table = con.sql(
            "SELECT tag_id, min(ts) AS ts, arg_min(value, ts) AS value FROM points "
            f"WHERE {where} AND {_GOOD} AND ts >= $lo AND ts < $hi GROUP BY tag_id",
            params={**params, "lo": lo, "hi": hi},
        ).to_arrow_table()
        at = lut[_numpy(table, "tag_id", np.int64)]
        following.has[at] = True
        following.ts[at] = _numpy(table, "ts", np.int64)
        following.value[at] = _numpy(table, "value", np.float64)
        lo, width = hi, width * _GROWTH
    return following
