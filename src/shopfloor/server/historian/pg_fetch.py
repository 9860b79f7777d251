"""The PostgreSQL historian's side of a query: fetch points of many tags as columns.

One statement per query, so everything comes from one snapshot in one round trip: the
range of every tag, and, when the query needs them, per tag the last point and the last
usable point before the range and the first usable point after it. It reads through the
schema's functions ``points_between``, ``points_before`` and ``points_after`` (see
:mod:`~shopfloor.server.historian.pg_blocks`), which reach the right blocks or rows by
index whatever the layout; ``LATERAL (... LIMIT 1)`` stops at the first point found, however
old. Results come back as one row of binary arrays decoded by numpy
(:func:`~shopfloor.server.historian.pg_schema.decode_array`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.server.historian import query
from shopfloor.server.historian.aggregate import Following, Points, Prior
from shopfloor.server.historian.pg_schema import decode_array
from shopfloor.server.historian.planner import NO_FLOOR

__all__ = ["Fetch", "Fetched"]

_GOOD = "(quality & -1073741824) = 0 AND value <> 'NaN'::float8"
"""Usable points: severity Good (top two bits clear) and a number."""

_EMPTY = (
    "SELECT NULL::int4 AS tag_id, NULL::int8 AS ts, NULL::float8 AS value, "
    "NULL::int4 AS quality WHERE false"
)

_IDS = "unnest(%(ids)s::int4[]) WITH ORDINALITY AS u(id, i)"

_RANGE = (
    "SELECT array_agg(tag_id) AS r_tag, array_agg(ts) AS r_ts, array_agg(value) AS r_value, "
    "array_agg(quality) AS r_quality FROM ({source}{usable} LIMIT %(limit)s) AS r"
)
_BETWEEN = (
    "SELECT tag_id, ts, value, quality "
    "FROM points_between(%({ids})s::int4[], %({lo})s::int8, %({hi})s::int8)"
)
_FLOORS = (
    "SELECT array_agg(tag_id) AS fl_tag, array_agg(floor_ns) AS fl_ns FROM raw_floor "
    "WHERE tag_id = ANY(%(ids)s::int4[])"
)
_PRIOR_LAST = (
    "SELECT array_agg(u.i) AS l_i, array_agg(p.ts) AS l_ts, array_agg(p.value) AS l_value, "
    f"array_agg(p.quality) AS l_quality FROM {_IDS} CROSS JOIN LATERAL ("
    "  SELECT ts, value, quality FROM points_before(u.id, %(start)s::int8) LIMIT 1) AS p"
)
_PRIOR_GOOD = (
    "SELECT array_agg(u.i) AS g_i, array_agg(p.ts) AS g_ts, array_agg(p.value) AS g_value "
    f"FROM {_IDS} CROSS JOIN LATERAL ("
    "  SELECT ts, value, quality FROM points_before(u.id, %(start)s::int8)"
    f"  WHERE {_GOOD} LIMIT 1) AS p"
)
_FOLLOWING = (
    "SELECT array_agg(u.i) AS f_i, array_agg(p.ts) AS f_ts, array_agg(p.value) AS f_value "
    f"FROM {_IDS} CROSS JOIN LATERAL ("
    "  SELECT ts, value, quality FROM points_after(u.id, %(end)s::int8)"
    f"  WHERE {_GOOD} LIMIT 1) AS p"
)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch brought back, ready for the engine."""

    points: Points
    prior: Prior | None
    following: Following | None
    floors: npt.NDArray[np.int64]
    """Per tag, when retention deleted its raw points before (``NO_FLOOR``: never)."""
    rest: list[bytes | None]
    """Cells of the row after those this fetch asked for (parts a caller appended)."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """One fetch: the tags (ids in query order), the range and what else is needed.

    Attributes:
        usable_only: only usable points of the range (interpolation needs no others).
        prior_last: per tag, the last point of any quality before the range.
        prior_good: per tag, the last usable point before the range.
        following: per tag, the first usable point at or after the range's end.
        ranges: read these ``(tag positions, start, end)`` stretches instead of the whole
            range (a query answered partly from rollups); the prior is still before
            ``start_ns``.
        floors: also read, per tag, when retention deleted its raw points before
            (:attr:`Fetched.floors`).
    """

    tag_ids: npt.NDArray[np.int64]
    start_ns: int
    end_ns: int
    usable_only: bool = False
    prior_last: bool = False
    prior_good: bool = False
    following: bool = False
    ranges: tuple[tuple[npt.NDArray[np.intp], int, int], ...] | None = None
    floors: bool = False

    def statement(self) -> str:
        """The one statement, its row a cell per array (only fixed SQL is formatted in)."""
        if self.ranges is None:
            source = _BETWEEN.format(ids="ids", lo="start", hi="end")
        else:
            branches = [
                _BETWEEN.format(ids=f"ids{i}", lo=f"lo{i}", hi=f"hi{i}")
                for i in range(len(self.ranges))
            ]
            source = " UNION ALL ".join(branches) if branches else _EMPTY
        usable = f" WHERE {_GOOD}" if self.usable_only else ""
        if self.ranges is not None and usable:
            source = f"SELECT * FROM ({source}) AS u"
        parts = [_RANGE.format(source=source, usable=usable)]
        if self.prior_last:
            parts.append(_PRIOR_LAST)
        if self.prior_good:
            parts.append(_PRIOR_GOOD)
        if self.following:
            parts.append(_FOLLOWING)
        if self.floors:
            parts.append(_FLOORS)
        return "SELECT * FROM " + " CROSS JOIN ".join(
            f"({part}) AS q{i}" for i, part in enumerate(parts)
        )

    def params(self) -> dict[str, Any]:
        """The statement's bound parameters."""
        out: dict[str, Any] = {
            "ids": [int(i) for i in self.tag_ids],
            "start": int(self.start_ns),
            "end": int(self.end_ns),
            "limit": query.MAX_POINTS + 1,
        }
        for i, (tags, lo, hi) in enumerate(self.ranges or ()):
            out[f"ids{i}"] = [int(t) for t in self.tag_ids[tags]]
            out[f"lo{i}"], out[f"hi{i}"] = int(lo), int(hi)
        return out

    def decode(self, row: Sequence[bytes | None]) -> Fetched:
        """Decode the statement's row (numpy only, no object per point)."""
        n = len(self.tag_ids)
        lut = np.full(int(self.tag_ids.max()) + 1 if n else 1, -1, dtype=np.intp)
        lut[self.tag_ids] = np.arange(n)
        tag = decode_array(row[0], ">i4")
        query.check_fetched(len(tag))
        points = Points(
            lut[tag],
            decode_array(row[1], ">i8"),
            decode_array(row[2], ">f8"),
            decode_array(row[3], ">i4").view(np.uint32),
        )
        cells = list(row[4:])
        prior = Prior.nothing(n) if self.prior_last or self.prior_good else None
        if self.prior_last:
            assert prior is not None
            at, ts, value, quality = _ordinal(cells.pop(0)), *cells[:3]
            del cells[:3]
            prior.has_last[at] = True
            prior.last_ts[at] = decode_array(ts, ">i8")
            prior.last_value[at] = decode_array(value, ">f8")
            prior.last_quality[at] = decode_array(quality, ">i4").view(np.uint32)
        if self.prior_good:
            assert prior is not None
            at, ts, value = _ordinal(cells.pop(0)), cells[0], cells[1]
            del cells[:2]
            prior.has_good[at] = True
            prior.good_ts[at] = decode_array(ts, ">i8")
            prior.good_value[at] = decode_array(value, ">f8")
        following = None
        if self.following:
            following = Following.nothing(n)
            at = _ordinal(cells[0])
            following.has[at] = True
            following.ts[at] = decode_array(cells[1], ">i8")
            following.value[at] = decode_array(cells[2], ">f8")
            del cells[:3]
        floors = np.full(n, NO_FLOOR, np.int64)
        if self.floors:
            floors[lut[decode_array(cells[0], ">i4")]] = decode_array(cells[1], ">i8")
            del cells[:2]
        return Fetched(points, prior, following, floors, cells)


def _ordinal(raw: bytes | None) -> npt.NDArray[np.intp]:
    """``WITH ORDINALITY`` numbers (1-based) as positions in the query's tag list."""
    out: npt.NDArray[np.intp] = decode_array(raw, ">i8").astype(np.intp) - 1
    return out
