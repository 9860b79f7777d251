"""The shift calendar: when production is planned, shift by shift.

Planned production time is the union of the shift windows minus the planned stops (daily
breaks and dated maintenance windows). OEE's availability is measured against it, so a
break is never a loss and a machine stopped outside every shift costs nothing.

Shift and break times are local wall-clock times in the calendar's time zone, turned
into UTC day by day, so a daylight-saving night shift is 7 or 9 hours long, as worked.
A shift whose end is not after its start ends the next day (a night shift crossing
midnight); it belongs to the day it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from shopfloor.config.analytics import ShiftsSection
from shopfloor.server.analytics.intervals import Int64Array, Intervals

__all__ = ["ShiftCalendar", "ShiftInstances"]

_NS = 10**9


@dataclass(frozen=True, slots=True)
class ShiftInstances:
    """Worked shifts as columns, sorted by start: which shift, from when to when."""

    shift: Int64Array
    start: Int64Array
    end: Int64Array

    def at(self, t: Int64Array) -> Int64Array:
        """Per time, the index of the instance containing it, or -1."""
        k = np.searchsorted(self.start, t, side="right") - 1
        if not len(self.start):
            return np.full(len(t), -1, dtype=np.int64)
        inside = (k >= 0) & (t < self.end[np.maximum(k, 0)])
        out: Int64Array = np.where(inside, k, -1)
        return out


def _ns(moment: datetime) -> int:
    return round(moment.timestamp()) * _NS


class ShiftCalendar:
    """The calendar of ``section``; pure and cheap, so callers build windows freely."""

    def __init__(self, section: ShiftsSection) -> None:
        self.section = section
        self.zone: ZoneInfo = section.zone
        self.names: tuple[str, ...] = tuple(s.name for s in section.shifts)
        self._shift_minutes = [s.minutes for s in section.shifts]
        self._break_minutes = [b.minutes for b in section.breaks]

    # ------------------------------------------------------------------ days
    def _local_date(self, t_ns: int) -> date:
        return datetime.fromtimestamp(t_ns / _NS, self.zone).date()

    def _midnight(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=self.zone)

    def _days(self, a: int, b: int) -> list[date]:
        # a day's shifts and breaks may reach into the next day: start one day early
        first = self._local_date(a) - timedelta(days=1)
        last = self._local_date(max(a, b - 1))
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def _daily(self, minutes: list[tuple[int, int]], a: int, b: int) -> tuple[list[int], ...]:
        idx: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        for day in self._days(a, b):
            midnight = self._midnight(day)
            for i, (lo, hi) in enumerate(minutes):
                # wall-clock arithmetic, then the zone's offset at that wall time
                s = _ns(midnight + timedelta(minutes=lo))
                e = _ns(midnight + timedelta(minutes=hi))
                if e > a and s < b and e > s:
                    idx.append(i)
                    starts.append(s)
                    ends.append(e)
        return idx, starts, ends

    def day_starts(self, a: int, b: int) -> Int64Array:
        """Local midnights strictly inside ``(a, b)``."""
        out = [_ns(self._midnight(d)) for d in self._days(a, b)]
        return np.array([t for t in out if a < t < b], dtype=np.int64)

    def day_of(self, t_ns: int) -> str:
        """The local calendar date of a time, ISO formatted."""
        return self._local_date(t_ns).isoformat()

    # ------------------------------------------------------------ shifts
    def instances(self, a: int, b: int) -> ShiftInstances:
        """The shifts worked overlapping ``[a, b)``, unclipped, sorted by start."""
        idx, starts, ends = self._daily(self._shift_minutes, a, b)
        order = np.argsort(np.array(starts, dtype=np.int64), kind="stable")
        return ShiftInstances(
            np.array(idx, dtype=np.int64)[order],
            np.array(starts, dtype=np.int64)[order],
            np.array(ends, dtype=np.int64)[order],
        )

    def planned_stops(self, a: int, b: int, *, equipment: str = "", path: str = "") -> Intervals:
        """Breaks and the maintenance windows of this machine inside ``[a, b)``.

        Args:
            a: window start (UTC ns).
            b: window end (UTC ns).
            equipment: the machine's id, matched against a window's ``equipment``.
            path: the machine's path, matched as a prefix (a line's path stops its machines).
        """
        _, starts, ends = self._daily(self._break_minutes, a, b)
        for window in self.section.maintenance:
            if window.equipment and not any(
                e in (equipment, path) or path.startswith(e.rstrip("/") + "/")
                for e in window.equipment
            ):
                continue
            lo, hi = window.start, window.end
            if lo.tzinfo is None:
                lo, hi = lo.replace(tzinfo=self.zone), hi.replace(tzinfo=self.zone)
            starts.append(_ns(lo))
            ends.append(_ns(hi))
        return Intervals.union(starts, ends).clip(a, b)

    def planned(self, a: int, b: int, *, equipment: str = "", path: str = "") -> Intervals:
        """Planned production time inside ``[a, b)``: shifts minus planned stops."""
        _, starts, ends = self._daily(self._shift_minutes, a, b)
        shifts = Intervals.union(starts, ends).clip(a, b)
        return shifts.minus(self.planned_stops(a, b, equipment=equipment, path=path))
