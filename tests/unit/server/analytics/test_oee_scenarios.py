"""OEE on hand-built scenarios whose answers are worked out by hand in the comments."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shopfloor.config.analytics import DowntimeSection, ShiftsSection
from shopfloor.server.analytics.oee import (
    COMPONENTS,
    Counter,
    Slices,
    compute_slices,
    counter_increments,
    summarize,
)
from shopfloor.server.analytics.shifts import ShiftCalendar

from .scenario import H, M, S, machine, utc

DOWNTIME = DowntimeSection()  # micro_stop 2m; running 1, setup 3; demo reason classes
DAY_SHIFT = ShiftsSection.model_validate(
    {
        "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
        "breaks": [{"start": "10:00", "end": "10:30"}],
    }
)


def sums(slices: Slices, mask: Any = None) -> dict[str, float]:
    pick = np.ones(len(slices), bool) if mask is None else mask
    return {k: float(v[pick].sum()) for k, v in slices.values.items()}


def test_a_shift_with_a_break_a_breakdown_a_setup_across_the_break_and_a_micro_stop() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T14:00")
    series = machine(
        state=[
            (t0 - H, 1),
            (utc("2026-03-02T07:00"), 4),  # down 30 min, electrical fault (failure)
            (utc("2026-03-02T07:30"), 1),
            (utc("2026-03-02T09:50"), 3),  # setup 09:50-10:40, across the 10:00 break
            (utc("2026-03-02T10:40"), 1),
            (utc("2026-03-02T12:00"), 2),  # idle 1 min: a micro-stop
            (utc("2026-03-02T12:01"), 1),
        ],
        reason=[
            (t0 - H, 0),
            (utc("2026-03-02T07:00"), 4),
            (utc("2026-03-02T07:30"), 0),
            (utc("2026-03-02T09:50"), 7),
            (utc("2026-03-02T10:40"), 0),
            (utc("2026-03-02T12:00"), 3),
            (utc("2026-03-02T12:01"), 0),
        ],
        parts=[(t0 - M, 1000), (utc("2026-03-02T08:00"), 1100), (t1 - M, 1380)],
        good=[(t0 - M, 900), (t1 - M, 1270)],
        scrap=[(t0 - M, 100), (t1 - M, 110)],
        read=(t0 - 2 * M, t1 + 2 * M),
    )
    slices = compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t1)
    assert len(slices) == 8  # 06..14, one slice an hour
    out = summarize(sums(slices))
    # planned = 8 h - 30 min break = 450 min
    assert out["planned_s"] == 450 * 60
    # setup 09:50-10:40 is 50 min, of which 10:00-10:30 is the break: 20 min planned
    # run = 450 - 30 (breakdown) - 20 (setup) - 1 (micro-stop) = 399 min
    assert out["run_s"] == 399 * 60
    # total = 1380 - 1000 = 380 parts, ideal 60 s each = 380 min; good 1270-900 = 370
    assert (out["total"], out["good"], out["scrap"]) == (380, 370, 10)
    assert out["availability"] == pytest.approx(399 / 450)
    assert out["performance"] == pytest.approx(380 / 399)
    assert out["quality"] == pytest.approx(370 / 380)
    assert out["oee"] == pytest.approx(370 / 450)  # = A*P*Q, the products cancel
    assert out["performance_capped"] is False
    losses = out["losses"]
    assert losses == {
        "breakdowns_s": 30 * 60,
        "setup_adjustments_s": 20 * 60,
        "small_stops_s": 1 * 60,
        "reduced_speed_s": (399 - 380) * 60,  # run - ideal
        "rejects_s": 10 * 60,  # 10 scrapped x 60 s
    }
    # the six big losses add up to planned - ideal time of the good parts: 450 - 370
    assert sum(losses.values()) == (450 - 370) * 60
    assert (out["stops"], out["micro_stops"]) == (2, 1)
    # by hour: 09-10 holds 10 min of setup, 10-11 the other 10 (and 30 min of break)
    hour = (slices.start - t0) // H
    assert sums(slices, hour == 3)["setup_ns"] == 10 * M
    assert sums(slices, hour == 4)["setup_ns"] == 10 * M
    assert sums(slices, hour == 4)["planned_ns"] == 30 * M


def test_overlapping_planned_stops_are_excluded_once_and_never_go_negative() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T14:00")
    section = ShiftsSection.model_validate(
        {
            "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
            "breaks": [{"start": "10:00", "end": "10:30"}],
            "maintenance": [
                {"start": "2026-03-02T10:15", "end": "2026-03-02T11:00", "equipment": ["m1"]},
                # a second window inside the first: no extra time
                {"start": "2026-03-02T10:20", "end": "2026-03-02T10:40"},
            ],
        }
    )
    state = [
        (t0 - H, 1),
        (utc("2026-03-02T09:45"), 4),  # down 09:45-11:15 across break and maintenance
        (utc("2026-03-02T11:15"), 1),
    ]
    reason = [(t0 - H, 0), (utc("2026-03-02T09:45"), 6), (utc("2026-03-02T11:15"), 0)]
    read = (t0 - 2 * M, t1 + 2 * M)
    cal = ShiftCalendar(section)
    m1 = summarize(
        sums(compute_slices(machine(state, reason=reason, read=read), cal, DOWNTIME, t0, t1))
    )
    # planned stops: 10:00-10:30 u 10:15-11:00 u 10:20-10:40 = 10:00-11:00, 60 min
    # planned = 480 - 60 = 420; down in planned time = 09:45-10:00 + 11:00-11:15 = 30
    assert m1["planned_s"] == 420 * 60
    assert m1["run_s"] == 390 * 60
    assert m1["losses"]["breakdowns_s"] == 30 * 60
    assert m1["availability"] == pytest.approx(390 / 420)
    # m2 is not under the first window: its stops are the break and 10:20-10:40
    # = 10:00-10:40, 40 min; planned 440, down 09:45-10:00 + 10:40-11:15 = 50
    m2_series = machine(state, reason=reason, read=read, equipment="m2", path="acme/p1/a/l/c/m2")
    m2 = summarize(sums(compute_slices(m2_series, cal, DOWNTIME, t0, t1)))
    assert m2["planned_s"] == 440 * 60
    assert m2["run_s"] == 390 * 60
    assert m2["losses"]["breakdowns_s"] == 50 * 60


def test_a_machine_down_through_a_whole_break_is_not_negative() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T14:00")
    # down the whole shift: availability 0, not below
    series = machine([(t0 - H, 4)], reason=[(t0 - H, 4)], read=(t0 - 2 * M, t1 + 2 * M))
    out = summarize(sums(compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t1)))
    assert out["availability"] == 0.0
    assert out["oee"] == 0.0
    assert out["losses"]["breakdowns_s"] == 450 * 60
    assert out["stops"] == 1  # down since before the shift: one stop of this shift


def test_counter_reset_counts_from_zero() -> None:
    # 500 before; then 510, 520, reset, 5, 15: 10 + 10 + 5 + 10 = 35 parts
    ts = np.arange(4, dtype=np.int64)
    _, inc = counter_increments(Counter(ts, np.array([510.0, 520.0, 5.0, 15.0]), 500.0))
    assert inc.tolist() == [10.0, 10.0, 5.0, 10.0]
    # unknown baseline: the first point adds nothing
    _, inc = counter_increments(Counter(ts, np.array([510.0, 520.0, 5.0, 15.0]), None))
    assert inc.tolist() == [0.0, 10.0, 5.0, 10.0]


def test_counter_reset_inside_a_shift() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T14:00")
    parts = [
        (t0 - M, 9000),
        (utc("2026-03-02T07:00"), 9060),  # +60
        (utc("2026-03-02T08:00"), 40),  # PLC restarted: +40 (from 0)
        (utc("2026-03-02T09:00"), 100),  # +60
        (utc("2026-03-02T10:10"), 150),  # during the break: not counted (+50)
        (utc("2026-03-02T13:00"), 300),  # +150
    ]
    scrap = [(t0 - M, 70), (utc("2026-03-02T08:00"), 2), (utc("2026-03-02T13:00"), 12)]
    series = machine([(t0 - H, 1)], parts=parts, scrap=scrap, read=(t0 - 2 * M, t1 + 2 * M))
    out = summarize(sums(compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t1)))
    # total = 60 + 40 + 60 + 150 = 310; scrap = 2 (reset, from 0) + 10 = 12
    assert out["total"] == 310
    assert out["scrap"] == 12
    assert out["good"] == 310 - 12  # no good counter: total - scrap
    # always running: run = planned = 450 min; ideal 310 min
    assert out["availability"] == 1.0
    assert out["performance"] == pytest.approx(310 / 450)
    assert out["quality"] == pytest.approx(298 / 310)


def test_a_night_shift_crossing_midnight_in_local_time() -> None:
    section = ShiftsSection.model_validate(
        {
            "timezone": "Europe/Berlin",  # UTC+1 in January
            "shifts": [
                {"name": "day", "start": "06:00", "end": "22:00"},
                {"name": "night", "start": "22:00", "end": "06:00"},
            ],
        }
    )
    # the night from 14 January 22:00 local (21:00 UTC) to 15 January 06:00 (05:00 UTC)
    t0, t1 = utc("2026-01-14T21:00"), utc("2026-01-15T05:00")
    series = machine(
        state=[(t0 - H, 1), (utc("2026-01-14T22:30"), 4), (utc("2026-01-14T23:30"), 1)],
        reason=[(t0 - H, 0), (utc("2026-01-14T22:30"), 4), (utc("2026-01-14T23:30"), 0)],
        read=(t0 - 2 * M, t1 + 2 * M),
    )
    cal = ShiftCalendar(section)
    slices = compute_slices(series, cal, DOWNTIME, t0, t1)
    night = cal.names.index("night")
    assert set(slices.shift.tolist()) == {night}
    assert set(slices.shift_start.tolist()) == {t0}  # one shift worked, across midnight
    whole = summarize(sums(slices))
    # 8 h planned, down 23:30-00:30 local (22:30-23:30 UTC): run 7 h
    assert whole["planned_s"] == 8 * 3600
    assert whole["run_s"] == 7 * 3600
    # by local day: 22:00-24:00 on the 14th (half the stop), 00:00-06:00 on the 15th
    days = np.array([cal.day_of(int(t)) for t in slices.start])
    first = summarize(sums(slices, days == "2026-01-14"))
    second = summarize(sums(slices, days == "2026-01-15"))
    assert (first["planned_s"], first["run_s"]) == (120 * 60, 90 * 60)
    assert (second["planned_s"], second["run_s"]) == (360 * 60, 330 * 60)
    assert first["stops"] == 1  # counted once, where it began
    assert second["stops"] == 0


def test_micro_stops_are_judged_on_the_whole_stop() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T07:00")
    section = ShiftsSection.model_validate(
        {"shifts": [{"name": "all", "start": "00:00", "end": "24:00"}]}
    )
    series = machine(
        state=[
            (t0 - H, 1),
            (t0 + 5 * M, 2),  # idle 60 s: micro
            (t0 + 6 * M, 1),
            (t0 + 10 * M, 2),  # idle 60 s then down 90 s: one 150 s stop, not micro
            (t0 + 11 * M, 4),
            (t0 + 12 * M + 30 * S, 1),
            (t0 + 20 * M, 4),  # down 119 s: micro
            (t0 + 21 * M + 59 * S, 1),
        ],
        read=(t0 - 2 * M, t1 + 2 * M),
    )
    out = summarize(sums(compute_slices(series, ShiftCalendar(section), DOWNTIME, t0, t1)))
    assert out["micro_stops"] == 2
    assert out["stops"] == 2  # the idle and the down run of the long stop
    assert out["losses"]["small_stops_s"] == 60 + 119
    # no reason given: the long stop's 150 s are breakdowns (the default class)
    assert out["losses"]["breakdowns_s"] == 150
    assert out["run_s"] == 3600 - 60 - 150 - 119


def test_performance_above_one_is_capped_and_flagged() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T07:00")
    section = ShiftsSection.model_validate(
        {"shifts": [{"name": "all", "start": "00:00", "end": "24:00"}]}
    )
    # 70 parts of 60 s ideal in one hour of running: P = 70/60, capped at 1
    series = machine(
        [(t0 - H, 1)], parts=[(t0 - M, 0), (t0 + 30 * M, 70)], read=(t0 - 2 * M, t1 + 2 * M)
    )
    out = summarize(sums(compute_slices(series, ShiftCalendar(section), DOWNTIME, t0, t1)))
    assert out["performance"] == 1.0
    assert out["performance_capped"] is True
    assert out["losses"]["reduced_speed_s"] == 0.0


def test_nothing_planned_has_no_ratios() -> None:
    t0 = utc("2026-03-02T15:00")  # outside the day shift
    series = machine([(t0 - H, 1)], read=(t0 - 2 * M, t0 + H + 2 * M))
    out = summarize(sums(compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t0 + H)))
    assert out["planned_s"] == 0
    assert out["availability"] is None
    assert out["oee"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())


def test_operator_reason_moves_a_stop_between_losses() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T07:00")
    section = ShiftsSection.model_validate(
        {"shifts": [{"name": "all", "start": "00:00", "end": "24:00"}]}
    )
    stop = t0 + 10 * M
    state = [(t0 - H, 1), (stop, 4), (stop + 20 * M, 1)]
    read = (t0 - 2 * M, t1 + 2 * M)
    cal = ShiftCalendar(section)
    before = summarize(sums(compute_slices(machine(state, read=read), cal, DOWNTIME, t0, t1)))
    assert before["losses"]["breakdowns_s"] == 20 * 60  # no reason: a breakdown
    assigned = machine(state, read=read, overrides={stop: 7})  # changeover: setup
    after = summarize(sums(compute_slices(assigned, cal, DOWNTIME, t0, t1)))
    assert after["losses"]["breakdowns_s"] == 0
    assert after["losses"]["setup_adjustments_s"] == 20 * 60


def test_components_are_the_stored_columns() -> None:
    t0 = utc("2026-03-02T06:00")
    series = machine([(t0 - H, 1)], read=(t0 - 2 * M, t0 + H + 2 * M))
    slices = compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t0 + H)
    assert tuple(slices.values) == COMPONENTS


def test_time_before_the_first_state_ever_is_not_planned() -> None:
    t0, t1 = utc("2026-03-02T06:00"), utc("2026-03-02T14:00")
    # first connected at 08:00; communication lost 12:00-12:10 (a Bad point: NaN)
    state = [(utc("2026-03-02T08:00"), 1), (utc("2026-03-02T12:00"), float("nan"))]
    state.append((utc("2026-03-02T12:10"), 1))
    series = machine(state, read=(t0 - 2 * M, t1 + 2 * M))
    out = summarize(sums(compute_slices(series, ShiftCalendar(DAY_SHIFT), DOWNTIME, t0, t1)))
    # planned = 06:00-14:00 less the break, less 06:00-08:00 = 450 - 120 = 330 min
    assert out["planned_s"] == 330 * 60
    # the 10 minutes without data are a stop (no reason: a breakdown)
    assert out["run_s"] == 320 * 60
    assert out["losses"]["breakdowns_s"] == 10 * 60
