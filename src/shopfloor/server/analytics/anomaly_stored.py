"""Anomaly scores as stored, for the API servers that do not score a machine.

Scaled out (``analytics.partitions``) one API server scores each machine
(:mod:`~.anomaly_monitor`); the others hold nothing of it in memory. What it stores is in
the shared historian for all of them: ``<equipment>/anomaly_score`` (the batch's largest
score) and, beside it at the same time, ``<equipment>/anomaly_cause`` (which detector and
tag gave it, :func:`cause_code`). So every server answers ``GET /api/v1/anomaly``'s
``latest`` and ``events`` from these, and any server behind a load balancer gives the
same answer. An event is a stored score above 1 (as the monitor's in-memory events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.errors import UnknownTagError
from shopfloor.server.analytics.anomaly_monitor import (
    AnomalyEvent,
    WatchedMachine,
    cause_name,
    cause_tag,
    score_tag,
)
from shopfloor.server.historian.base import Historian

__all__ = ["MAX_EVENTS", "stored_events", "stored_latest"]

MAX_EVENTS: Final = 1000
"""Events answered at most (the newest), as many as the monitor keeps in memory."""

Latest = tuple[int, float, str | None]
"""Time, score and cause (None: not stored) of a machine's last score."""


async def _latest(historian: Historian, paths: list[str]) -> dict[str, tuple[int, float]]:
    try:
        table = await historian.latest(paths)
    except UnknownTagError:  # a tag not registered yet: ask for the others one by one
        out: dict[str, tuple[int, float]] = {}
        if len(paths) > 1:
            for path in paths:
                out |= await _latest(historian, [path])
        return out
    ts = table.column("ts").cast("int64").to_pylist()
    values = table.column("value").to_pylist()
    return {
        p: (int(t), float(v))
        for p, t, v in zip(table.column("path").to_pylist(), ts, values, strict=True)
        if v is not None
    }


async def stored_latest(
    historian: Historian, machines: Sequence[WatchedMachine]
) -> dict[str, Latest]:
    """Per machine path, its last stored score and the cause stored with it."""
    got = await _latest(
        historian, [tag for m in machines for tag in (score_tag(m.path), cause_tag(m.path))]
    )
    out: dict[str, Latest] = {}
    for m in machines:
        score = got.get(score_tag(m.path))
        if score is None:
            continue
        cause = got.get(cause_tag(m.path))
        name = None if cause is None or cause[0] != score[0] else cause_name(cause[1], m.names)
        out[m.path] = (score[0], score[1], name)
    return out


async def _points(
    historian: Historian, path: str, start_ns: int, end_ns: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    try:
        table = await historian.read_raw(path, start_ns, end_ns)
    except UnknownTagError:
        return np.empty(0, np.int64), np.empty(0)
    ts = table.column("ts").cast("int64").to_numpy()
    values = table.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
    return ts, values


async def stored_events(
    historian: Historian, machines: Sequence[WatchedMachine], start_ns: int, end_ns: int
) -> list[AnomalyEvent]:
    """The stored scores above 1 of ``machines`` in ``[start_ns, end_ns)``, with their
    causes: the newest :data:`MAX_EVENTS`, newest last."""
    events: list[AnomalyEvent] = []
    for m in machines:
        ts, scores = await _points(historian, score_tag(m.path), start_ns, end_ns)
        above = scores > 1.0
        if not above.any():
            continue
        cause_ts, codes = await _points(historian, cause_tag(m.path), start_ns, end_ns)
        causes = dict(zip(cause_ts.tolist(), codes.tolist(), strict=True))
        for t, score in zip(ts[above].tolist(), scores[above].tolist(), strict=True):
            code = causes.get(t)
            cause = "" if code is None else cause_name(code, m.names)
            events.append(AnomalyEvent(m.path, t, score, cause))
    events.sort(key=lambda e: (e.ts_ns, e.equipment))
    return events[-MAX_EVENTS:]
