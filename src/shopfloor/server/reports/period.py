"""The period a report covers: a named shift of a date, a day, or an ISO week, in the
plant's time zone (``[analytics.shifts] timezone``).

A day is local midnight to local midnight, so a daylight-saving day is 23 or 25 hours, as
worked; a week is the ISO week (Monday to Monday). A shift belongs to the date it starts
on, also when it ends the next morning (the shift calendar's rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from shopfloor.errors import PayloadError
from shopfloor.server.analytics.shifts import ShiftCalendar

__all__ = ["KINDS", "Period", "ReportKind", "parse_day", "period_of"]

ReportKind = Literal["shift", "day", "week"]
KINDS: tuple[ReportKind, ...] = ("shift", "day", "week")

_NS = 10**9
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, slots=True)
class Period:
    """One report's time span.

    Attributes:
        kind: shift, day or week.
        label: how people name it: ``2026-11-27 early``, ``2026-11-27``, ``2026-W48``.
        start_ns: the first instant (UTC ns, inclusive).
        end_ns: the end (UTC ns, exclusive).
        zone: the plant's IANA time zone.
    """

    kind: ReportKind
    label: str
    start_ns: int
    end_ns: int
    zone: str

    @property
    def stem(self) -> str:
        """A file name without extension: ``shopfloor-day-2026-11-27``."""
        return f"shopfloor-{self.kind}-{self.label.replace(' ', '-')}"


def _ns(moment: datetime) -> int:
    return round(moment.timestamp()) * _NS


def parse_day(text: str, *, field: str = "date") -> date:
    """An ISO date (``2026-11-27``) or, for weeks, an ISO week (``2026-W48``: its Monday).

    Raises:
        PayloadError: naming ``field`` when it is neither.
    """
    week = _WEEK.match(text)
    try:
        if week:
            return date.fromisocalendar(int(week[1]), int(week[2]), 1)
        return date.fromisoformat(text)
    except ValueError as err:
        raise PayloadError(
            field, f"expected a date like 2026-11-27 or a week like 2026-W48, got {text!r}"
        ) from err


def period_of(
    calendar: ShiftCalendar, kind: ReportKind, day: date, *, shift: str | None = None
) -> Period:
    """The period of ``kind`` containing ``day`` (for a shift: the one starting that day).

    Raises:
        PayloadError: ``shift`` missing for a shift report, unknown, or given for another
            kind (the field is named).
    """
    zone = calendar.zone
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    if kind != "shift" and shift:
        raise PayloadError("shift", f"only for shift reports, not {kind} reports")
    if kind == "day":
        nxt = day + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
        return Period("day", day.isoformat(), _ns(midnight), _ns(end), zone.key)
    if kind == "week":
        year, week, weekday = day.isocalendar()
        monday = day - timedelta(days=weekday - 1)
        nxt = monday + timedelta(days=7)
        a = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
        b = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
        return Period("week", f"{year}-W{week:02d}", _ns(a), _ns(b), zone.key)
    if not shift:
        known = ", ".join(calendar.names) or "none configured"
        raise PayloadError("shift", f"a shift report needs the shift's name ({known})")
    if shift not in calendar.names:
        known = ", ".join(calendar.names) or "none configured"
        raise PayloadError("shift", f"no shift {shift!r} ({known})")
    index = calendar.names.index(shift)
    lo, hi = _ns(midnight), _ns(midnight + timedelta(days=1))
    shifts = calendar.instances(lo, hi)
    for i, s, e in zip(shifts.shift, shifts.start, shifts.end, strict=True):
        if int(i) == index and lo <= int(s) < hi:
            return Period("shift", f"{day.isoformat()} {shift}", int(s), int(e), zone.key)
    raise PayloadError("shift", f"{shift!r} is not worked on {day.isoformat()}")
