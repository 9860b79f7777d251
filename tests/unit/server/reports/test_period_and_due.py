"""Report periods in the plant's zone and when scheduled reports fall due."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from shopfloor.config.analytics import ShiftsSection
from shopfloor.config.reports import ReportSchedule
from shopfloor.errors import PayloadError
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.reports.period import parse_day, period_of
from shopfloor.server.reports.schedule import next_due

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600 * 10**9


def ns(*args: int) -> int:
    return round(datetime(*args, tzinfo=BERLIN).timestamp()) * 10**9  # type: ignore[misc]


@pytest.fixture
def calendar() -> ShiftCalendar:
    return ShiftCalendar(
        ShiftsSection.model_validate(
            {
                "timezone": "Europe/Berlin",
                "shifts": [
                    {"name": "early", "start": "06:00", "end": "14:00"},
                    {"name": "late", "start": "14:00", "end": "22:00"},
                    {"name": "night", "start": "22:00", "end": "06:00"},
                ],
            }
        )
    )


def test_a_day_is_local_midnight_to_midnight_and_dst_days_are_23_hours(
    calendar: ShiftCalendar,
) -> None:
    p = period_of(calendar, "day", date(2026, 11, 27))
    assert (p.start_ns, p.end_ns, p.label) == (ns(2026, 11, 27), ns(2026, 11, 28), "2026-11-27")
    spring = period_of(calendar, "day", date(2026, 3, 29))
    assert spring.end_ns - spring.start_ns == 23 * H


def test_a_week_is_the_iso_week_monday_to_monday(calendar: ShiftCalendar) -> None:
    p = period_of(calendar, "week", date(2026, 11, 27))  # a Friday
    assert (p.start_ns, p.end_ns, p.label) == (ns(2026, 11, 23), ns(2026, 11, 30), "2026-W48")
    assert parse_day("2026-W48") == date(2026, 11, 23)


def test_a_night_shift_belongs_to_the_day_it_starts(calendar: ShiftCalendar) -> None:
    p = period_of(calendar, "shift", date(2026, 11, 27), shift="night")
    assert (p.start_ns, p.end_ns) == (ns(2026, 11, 27, 22), ns(2026, 11, 28, 6))
    assert p.stem == "shopfloor-shift-2026-11-27-night"


@pytest.mark.parametrize(
    ("kind", "shift", "field"),
    [("shift", None, "shift"), ("shift", "swing", "shift"), ("day", "early", "shift")],
)
def test_bad_shifts_name_the_field(
    calendar: ShiftCalendar, kind: str, shift: str | None, field: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        period_of(calendar, kind, date(2026, 11, 27), shift=shift)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_bad_date_names_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_day("yesterday")
    assert caught.value.field == "date"


def test_a_day_report_falls_due_at_its_time_for_the_day_before(calendar: ShiftCalendar) -> None:
    entry = ReportSchedule(kind="day", channels=["x"], at="06:30")
    due, period = next_due(entry, calendar, ns(2026, 11, 27, 5))
    assert (due, period.label) == (ns(2026, 11, 27, 6, 30), "2026-11-26")
    due, period = next_due(entry, calendar, ns(2026, 11, 27, 6, 30))  # exclusive
    assert (due, period.label) == (ns(2026, 11, 28, 6, 30), "2026-11-27")


def test_a_week_report_falls_due_on_its_weekday_for_the_last_full_week(
    calendar: ShiftCalendar,
) -> None:
    entry = ReportSchedule(kind="week", channels=["x"], at="07:00", weekday="wed")
    due, period = next_due(entry, calendar, ns(2026, 11, 27, 12))  # a Friday
    assert (due, period.label) == (ns(2026, 12, 2, 7), "2026-W48")


def test_a_shift_report_falls_due_after_each_shift_plus_settle(calendar: ShiftCalendar) -> None:
    entry = ReportSchedule(kind="shift", channels=["x"], settle="15m")
    due, period = next_due(entry, calendar, ns(2026, 11, 27, 14, 10))
    assert (due, period.label) == (ns(2026, 11, 27, 14, 15), "2026-11-27 early")
    due, period = next_due(entry, calendar, due)
    assert (due, period.label) == (ns(2026, 11, 27, 22, 15), "2026-11-27 late")
    due, period = next_due(entry, calendar, due)
    assert (due, period.label) == (ns(2026, 11, 28, 6, 15), "2026-11-27 night")
