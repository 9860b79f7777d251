"""OEE computed hour by hour equals OEE computed in one go, and both equal a brute-force
count second by second (an independent computation)."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.config.analytics import DowntimeSection, ShiftsSection
from shopfloor.server.analytics.oee import COMPONENTS, compute_slices, read_window, summarize
from shopfloor.server.analytics.shifts import ShiftCalendar

from .scenario import H, S, machine, utc

SECTION = ShiftsSection.model_validate(
    {
        "timezone": "Europe/Berlin",
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00"},
            {"name": "late", "start": "14:00", "end": "22:00"},
            {"name": "night", "start": "22:00", "end": "05:30"},
        ],
        "breaks": [{"start": "09:00", "end": "09:15"}, {"start": "23:45", "end": "00:15"}],
        "maintenance": [{"start": "2026-03-02T13:00", "end": "2026-03-02T15:20"}],
    }
)
DOWNTIME = DowntimeSection()


def random_plant(seed: int, t0: int, t1: int) -> dict[str, list[tuple[int, float]]]:
    """States changing every few seconds to an hour (whole seconds), reasons, counters
    with a reset now and then."""
    rng = np.random.default_rng(seed)
    t = t0 - 3 * H
    state, reason, parts, scrap = [], [], [], []
    count, bad = 1000.0, 10.0
    while t < t1 + H:
        s = int(rng.choice([1, 1, 1, 2, 3, 4]))
        state.append((t, float(s)))
        reason.append((t, 0.0 if s == 1 else float(rng.integers(0, 8))))
        if s == 1 and rng.random() < 0.8:
            count = 0.0 if rng.random() < 0.05 else count + float(rng.integers(1, 40))
            bad = 0.0 if count == 0 else bad + float(rng.integers(0, 2))
            parts.append((t + S, count))
            scrap.append((t + S, bad))
        t += int(rng.choice([5, 30, 90, 119, 121, 600, 3000])) * S
    return {"state": state, "reason": reason, "parts": parts, "scrap": scrap}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hour_by_hour_equals_one_go_and_a_count_by_the_second(seed: int) -> None:
    t0, t1 = utc("2026-03-01T20:00"), utc("2026-03-02T20:00")
    data = random_plant(seed, t0, t1)
    cal = ShiftCalendar(SECTION)

    def run(a: int, b: int) -> dict[str, float]:
        series = machine(**data, read=read_window(cal, DOWNTIME, a, b))  # type: ignore[arg-type]
        slices = compute_slices(series, cal, DOWNTIME, a, b)
        return {k: float(v.sum()) for k, v in slices.values.items()}

    whole = run(t0, t1)
    hours = [run(a, a + H) for a in range(t0, t1, H)]
    for key in COMPONENTS:
        assert sum(h[key] for h in hours) == pytest.approx(whole[key], abs=1e-6), key

    # independent: sample every second (all times are whole seconds)
    grid = np.arange(t0, t1, S, dtype=np.int64)
    planned = cal.planned(t0, t1, equipment="m1", path="acme/p1/area/line-1/cell/m1")
    in_plan = planned.contains(grid)
    st_t = np.array([p[0] for p in data["state"]])
    st_v = np.array([p[1] for p in data["state"]])
    state_now = st_v[np.searchsorted(st_t, grid, side="right") - 1]
    assert whole["planned_ns"] == in_plan.sum() * S
    assert whole["run_ns"] == (in_plan & (state_now == 1)).sum() * S
    stopped = whole["breakdown_ns"] + whole["setup_ns"] + whole["small_stop_ns"]
    assert stopped == (in_plan & (state_now != 1)).sum() * S
    # parts: increments, a drop counting from zero, at planned times
    p_t = np.array([p[0] for p in data["parts"]])
    p_v = np.array([p[1] for p in data["parts"]])
    inc = np.diff(p_v)
    inc = np.where(inc < 0, p_v[1:], inc)
    at = p_t[1:]
    keep = (at >= t0) & (at < t1) & planned.contains(at)
    assert whole["total"] == inc[keep].sum()
    out = summarize(whole)
    assert 0.0 <= out["availability"] <= 1.0  # type: ignore[operator]
