"""Build a machine's series from hand-written points, as the historian would give them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from shopfloor.server.analytics.downtime import Steps
from shopfloor.server.analytics.oee import Counter, MachineSeries

S = 10**9
M = 60 * S
H = 3600 * S

Points = Sequence[tuple[int, float]]


def utc(text: str) -> int:
    """``2026-03-02T06:00`` (UTC) in ns."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return round(moment.timestamp()) * S


def steps(points: Points, start: int) -> Steps:
    before = [v for t, v in points if t < start]
    ts = np.array([t for t, _ in points], dtype=np.int64)
    values = np.array([v for _, v in points], dtype=np.float64)
    return Steps.of(start, before[-1] if before else None, ts, values)


def counter(points: Points | None, start: int, end: int) -> Counter | None:
    if points is None:
        return None
    before = [v for t, v in points if t < start]
    inside = [(t, v) for t, v in points if start <= t < end]
    return Counter(
        np.array([t for t, _ in inside], dtype=np.int64),
        np.array([v for _, v in inside], dtype=np.float64),
        before[-1] if before else None,
    )


def machine(
    state: Points,
    *,
    read: tuple[int, int],
    reason: Points | None = None,
    parts: Points | None = None,
    good: Points | None = None,
    scrap: Points | None = None,
    ideal_cycle_s: float = 60.0,
    equipment: str = "m1",
    path: str = "acme/p1/area/line-1/cell/m1",
    overrides: Mapping[int, int] | None = None,
) -> MachineSeries:
    """The series read over ``[read[0], read[1])``."""
    a, b = read
    return MachineSeries(
        path=path,
        equipment=equipment,
        ideal_cycle_s=ideal_cycle_s,
        state=steps([p for p in state if p[0] < b], a),
        reason=None if reason is None else steps([p for p in reason if p[0] < b], a),
        parts=counter(parts, a, b),
        good=counter(good, a, b),
        scrap=counter(scrap, a, b),
        read_end=b,
        overrides=dict(overrides or {}),
    )
