"""The analytics file: stored hours, forgetting them, settings changes, reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfloor.config.analytics import DowntimeSection, ShiftsSection
from shopfloor.server.analytics.energy import EnergySeries, compute_energy, power_pieces
from shopfloor.server.analytics.energy import read_window as energy_read_window
from shopfloor.server.analytics.oee import compute_slices, read_window
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.store import AnalyticsStore

from .scenario import H, machine, utc

PATH = "acme/p1/area/line-1/cell/m1"


def test_hours_are_kept_forgotten_and_cleared_when_settings_change(tmp_path: Path) -> None:
    cal = ShiftCalendar(ShiftsSection())
    settings = DowntimeSection()
    t0 = utc("2026-03-02T06:00")
    series = machine([(t0 - H, 1)], read=read_window(cal, settings, t0, t0 + 3 * H))
    slices = compute_slices(series, cal, settings, t0, t0 + 3 * H)
    store = AnalyticsStore(tmp_path / "a.sqlite")
    try:
        assert store.settings_changed("one") is False  # a new file: nothing to clear
        days = [cal.day_of(int(t)) for t in slices.start]
        store.put_hours(PATH, slices, shift_names=cal.names, days=days, computed_ns=1)
        store.assign_reason(PATH, t0, 7, user="ana", comment="", now_ns=2)
        assert store.stored_hours([PATH], t0, t0 + 3 * H)[PATH] == {t0, t0 + H, t0 + 2 * H}
        (row,) = store.sum_hours([PATH], t0, t0 + 3 * H, "none")
        assert row.sums["planned_ns"] == 3 * H
        assert row.sums["run_ns"] == 3 * H
        store.invalidate(PATH, t0 + H + 1, t0 + H + 2)  # inside the second hour
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 2}
        assert store.settings_changed("one") is False
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 2}
    finally:
        store.close()
    store = AnalyticsStore(tmp_path / "a.sqlite")  # reopened: kept
    try:
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 2}
        assert store.settings_changed("two") is True  # another calendar: all computed again
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 0}
        assert store.reasons(PATH, t0, t0 + 1) == {t0: 7}  # an operator's word stays
    finally:
        store.close()


def test_energy_hours_are_stored_beside_oee_and_cleared_apart(tmp_path: Path) -> None:
    cal = ShiftCalendar(ShiftsSection())
    t0 = utc("2026-03-02T06:00")
    lo, hi = energy_read_window(t0, t0 + 3 * H, 10 * 60 * 10**9)
    ts = np.arange(lo, hi, 60 * 10**9, dtype=np.int64)
    pieces = power_pieces(ts, np.full(len(ts), 6.0), read_end=hi, max_gap_ns=10 * 60 * 10**9)
    empty = np.empty(0, dtype=np.int64)
    series = EnergySeries(PATH, "m1", "power", pieces, None, 1, empty, np.empty(0), lo, hi)
    energy = compute_energy(series, cal, t0, t0 + 3 * H)
    oee = compute_slices(
        machine([(t0 - H, 1)], read=read_window(cal, DowntimeSection(), t0, t0 + 3 * H)),
        cal,
        DowntimeSection(),
        t0,
        t0 + 3 * H,
    )
    store = AnalyticsStore(tmp_path / "a.sqlite")
    try:
        days = [cal.day_of(int(t)) for t in energy.start]
        store.put_hours(PATH, oee, shift_names=cal.names, days=days, computed_ns=1)
        store.put_hours(
            PATH, energy, shift_names=cal.names, days=days, computed_ns=1, kind="energy"
        )
        (row,) = store.sum_hours([PATH], t0, t0 + 3 * H, "none", kind="energy")
        assert row.sums["kwh"] == pytest.approx(18.0)  # 6 kW x 3 h
        assert row.sums["unknown_kwh"] == pytest.approx(18.0)  # no state tag
        by_hour = store.sum_hours([PATH], t0, t0 + 3 * H, "hour", kind="energy")
        assert [r.sums["kwh"] for r in by_hour] == pytest.approx([6.0, 6.0, 6.0])
        store.invalidate(PATH, t0 + H, t0 + H + 1)  # a late point: both kinds forget it
        assert store.count_hours([PATH], t0, t0 + 3 * H, kind="energy") == {PATH: 2}
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 2}
        assert store.settings_changed("e1", kind="energy") is False
        assert store.settings_changed("e2", kind="energy") is True  # energy settings only
        assert store.count_hours([PATH], t0, t0 + 3 * H, kind="energy") == {PATH: 0}
        assert store.count_hours([PATH], t0, t0 + 3 * H) == {PATH: 2}
    finally:
        store.close()
