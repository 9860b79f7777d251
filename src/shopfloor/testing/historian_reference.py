"""Historian query answers computed the slow, obvious way: the reference for the tests.

Plain Python loops over one tag's points, written from the definitions in
docs/historian.md ("Query semantics") and nothing else, so the numpy engine
(:mod:`shopfloor.server.historian.aggregate`) and both backends are checked against an
independent computation. Bucket edges come from the caller (the tests compute them from
:mod:`datetime` and :mod:`zoneinfo`), not from :mod:`shopfloor.server.historian.buckets`.

A point is ``(ts_ns, value, quality)``; a tag's points are passed all of them, before
and after the query's range too, in any order; timestamps of one tag must be unique.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

__all__ = ["Row", "reference_at", "reference_buckets", "usable"]

Point = tuple[int, float, int]
Row = dict[str, float | int | None]


def usable(point: Point) -> bool:
    """Good quality (severity bits clear) and a numeric value."""
    return point[2] & 0xC0000000 == 0 and not math.isnan(point[1])


def _is_good_quality(point: Point) -> bool:
    return point[2] & 0xC0000000 == 0


def reference_buckets(
    points: Sequence[Point], edges: Sequence[int], start: int, end: int
) -> list[Row]:
    """Every aggregate and ``bad`` of one tag for the buckets between ``edges``.

    Only points in ``[start, end)`` are aggregated; ``twa`` and ``delta`` also look
    before ``start``. One row per bucket, ``None`` for a null.
    """
    ordered = sorted(points, key=lambda p: p[0])
    inside = [p for p in ordered if start <= p[0] < end]
    before = [p for p in ordered if p[0] < start]
    rows: list[Row] = []
    for lo, hi in itertools.pairwise(edges):
        a, b = max(lo, start), min(hi, end)
        mine = [p for p in inside if lo <= p[0] < hi]
        good = [p for p in mine if usable(p)]
        values = [p[1] for p in good]
        row: Row = {
            "count": len(good),
            "bad": sum(1 for p in mine if not _is_good_quality(p)),
            "avg": sum(values) / len(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "sum": sum(values) if values else None,
            "stddev": statistics.stdev(values) if len(values) >= 2 else None,
            "first": good[0][1] if good else None,
            "last": good[-1][1] if good else None,
            "twa": _twa(before, inside, (a, b), start, end),
            "delta": _delta(before, inside, lo, hi) if good else None,
        }
        rows.append(row)
    return rows


def _twa(
    before: list[Point], inside: list[Point], bucket: tuple[int, int], start: int, end: int
) -> float | None:
    """Integrate the step function over the bucket: each point holds until the next one."""
    steps: list[tuple[int, int, Point]] = []  # (from, until, point)
    if before:  # the last point before the range holds from the start to the first inside
        steps.append((start, inside[0][0] if inside else end, before[-1]))
    for i, p in enumerate(inside):
        steps.append((p[0], inside[i + 1][0] if i + 1 < len(inside) else end, p))
    a, b = bucket
    area = time = 0.0
    for since, until, p in steps:
        overlap = min(until, b) - max(since, a)
        if usable(p) and overlap > 0:
            area += p[1] * overlap
            time += overlap
    return area / time if time > 0 else None


def _delta(before: list[Point], inside: list[Point], lo: int, hi: int) -> float:
    """Sum the increases of the usable points in ``[lo, hi)`` over their predecessors."""
    previous: float | None = None
    for p in before:
        if usable(p):
            previous = p[1]
    total = 0.0
    for p in inside:
        if not usable(p):
            continue
        if previous is not None and lo <= p[0] < hi:
            total += p[1] - previous if p[1] >= previous else p[1]
        previous = p[1]
    return total


def reference_at(points: Sequence[Point], times: Sequence[int], method: str) -> list[float | None]:
    """The value at each time: ``previous`` or ``linear`` over the usable points."""
    good = sorted((p for p in points if usable(p)), key=lambda p: p[0])
    out: list[float | None] = []
    for t in times:
        left = [p for p in good if p[0] <= t]
        right = [p for p in good if p[0] > t]
        if not left:
            out.append(None)
        elif method == "previous" or left[-1][0] == t:
            out.append(left[-1][1])
        elif not right:
            out.append(None)
        else:
            (t0, v0, _), (t1, v1, _) = left[-1], right[0]
            out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
    return out
