"""Intervals and the shift calendar: worked examples, daylight saving, config errors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shopfloor.config.analytics import DowntimeSection, ShiftsSection
from shopfloor.server.analytics.intervals import Intervals
from shopfloor.server.analytics.shifts import ShiftCalendar

from .scenario import H, M, utc


def test_union_minus_and_measure() -> None:
    u = Intervals.union([5, 0, 20, 8], [10, 3, 30, 12])  # 0-3, 5-12, 20-30
    assert (u.start.tolist(), u.end.tolist()) == ([0, 5, 20], [3, 12, 30])
    assert u.total() == 3 + 7 + 10
    # measure of [2, 25): 1 + 7 + 5
    assert u.measure([2], [25]).tolist() == [13]
    assert u.measure([25], [2]).tolist() == [0]  # never negative
    d = u.minus(Intervals.union([1, 9], [6, 22]))  # 0-1, 6-9, 22-30
    assert (d.start.tolist(), d.end.tolist()) == ([0, 6, 22], [1, 9, 30])
    assert u.contains(np.array([3, 4, 5, 29, 30])).tolist() == [False, False, True, True, False]


def test_a_night_shift_on_the_night_clocks_go_back_is_nine_hours() -> None:
    section = ShiftsSection.model_validate(
        {"timezone": "Europe/Berlin", "shifts": [{"name": "n", "start": "22:00", "end": "06:00"}]}
    )
    cal = ShiftCalendar(section)
    # 24/25 October 2026: CEST (+2) until 03:00, then CET (+1)
    start = utc("2026-10-24T20:00")  # 22:00 local
    worked = cal.instances(start, start + 1)
    assert worked.start.tolist() == [start]
    assert worked.end.tolist() == [utc("2026-10-25T05:00")]  # 06:00 CET: 9 hours
    assert cal.planned(start - H, start + 12 * H).total() == 9 * H
    assert cal.day_of(start) == "2026-10-24"


def test_breaks_and_maintenance_by_line_path() -> None:
    section = ShiftsSection.model_validate(
        {
            "shifts": [{"name": "d", "start": "06:00", "end": "14:00"}],
            "breaks": [{"start": "13:50", "end": "14:10"}],  # half of it outside the shift
            "maintenance": [
                {"start": "2026-03-02T06:00Z", "end": "2026-03-02T07:00Z", "equipment": ["a/l1"]}
            ],
        }
    )
    cal = ShiftCalendar(section)
    day = (utc("2026-03-02T00:00"), utc("2026-03-03T00:00"))
    assert cal.planned(*day, equipment="m1", path="a/l1/c/m1").total() == 8 * H - 10 * M - H
    assert cal.planned(*day, equipment="m9", path="a/l2/c/m9").total() == 8 * H - 10 * M
    assert cal.planned(*day, equipment="m9", path="a/l10/c/m9").total() == 8 * H - 10 * M


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            {
                "shifts": [
                    {"name": "a", "start": "06:00", "end": "15:00"},
                    {"name": "b", "start": "14:00", "end": "22:00"},
                ]
            },
            "overlap",
        ),
        ({"shifts": [{"name": "a", "start": "6:00", "end": "14:00"}]}, "time of day"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        (
            {"maintenance": [{"start": "2026-03-02T10:00", "end": "2026-03-02T09:00"}]},
            "after start",
        ),
    ],
)
def test_bad_calendars_are_refused(data: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ShiftsSection.model_validate(data)


def test_bad_downtime_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="duration"):
        DowntimeSection.model_validate({"micro_stop": "two minutes"})
    with pytest.raises(ValidationError, match="integers"):
        DowntimeSection.model_validate({"reason_classes": {"jam": "minor"}})
