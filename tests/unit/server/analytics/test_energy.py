"""Energy slices against hand-built scenarios whose answers are worked out here, an
independent loop, and the simulator's own meter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from shopfloor.config.analytics import ShiftsSection
from shopfloor.server.analytics.downtime import Steps
from shopfloor.server.analytics.energy import (
    COUNTER,
    POWER,
    EnergySeries,
    EnergySlices,
    Pieces,
    compute_energy,
    counter_pieces,
    good_increments,
    meter_increments,
    power_pieces,
    read_window,
    summarize_energy,
)
from shopfloor.server.analytics.oee import Counter
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.simulator import Plant

from .scenario import H, M, S, utc

GAP = 10 * M
DAY_SHIFT = ShiftsSection.model_validate(
    {
        "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
        "breaks": [{"start": "10:00", "end": "10:30"}],
    }
)
CAL = ShiftCalendar(DAY_SHIFT)
Points = Sequence[tuple[str, float]]


def t(hhmm: str, day: str = "2026-03-02") -> int:
    return utc(f"{day}T{hhmm}")


def meter(points: Points, start: int, end: int, rollover: float | None = None) -> Pieces:
    """The counter's pieces as the service reads them for ``[start, end)``."""
    lo, _ = read_window(start, end, GAP)
    pts = [(t(h), v) for h, v in points]
    before = [v for ts, v in pts if ts < lo]
    inside = [(ts, v) for ts, v in pts if ts >= lo]
    c = Counter(
        np.array([ts for ts, _ in inside], dtype=np.int64),
        np.array([v for _, v in inside]),
        before[-1] if before else None,
    )
    return counter_pieces(c, read_start=lo, max_gap_ns=GAP, rollover=rollover)


def power(points: Points, start: int, end: int) -> Pieces:
    lo, hi = read_window(start, end, GAP)
    pts = [(t(h), v) for h, v in points if lo <= t(h) < hi]
    ts = np.array([p[0] for p in pts], dtype=np.int64)
    kw = np.array([p[1] for p in pts], dtype=np.float64)
    return power_pieces(ts, kw, read_end=hi, max_gap_ns=GAP)


def series(
    pieces: Pieces,
    start: int,
    end: int,
    *,
    state: Points | None = None,
    good: tuple[np.ndarray, np.ndarray] | None = None,
) -> EnergySeries:
    lo, hi = read_window(start, end, GAP)
    steps = None
    if state is not None:
        pts = [(t(h), v) for h, v in state]
        before = [v for ts, v in pts if ts < lo]
        steps = Steps.of(
            lo, before[-1] if before else None, [p[0] for p in pts], [p[1] for p in pts]
        )
    g_ts, g_inc = good if good is not None else (np.empty(0, np.int64), np.empty(0))
    return EnergySeries(
        path="a/b/c/m1",
        equipment="m1",
        source=COUNTER,
        pieces=pieces,
        state=steps,
        running_state=1,
        good_ts=g_ts,
        good_inc=g_inc,
        read_start=lo,
        read_end=hi,
    )


def total(sl: EnergySlices, name: str = "kwh") -> float:
    return float(sl.values[name].sum())


def test_a_counter_reset_mid_slice_counts_from_zero() -> None:
    # every 10 min (= max_gap, so spread): 05:50 99 → 06:00 100 (+1, before the window),
    # 06:10 103 (+3), 06:20 1: a reset (+1, not -102), 06:30 4 (+3), 06:40 5 (+1),
    # 06:50 5 (0), 07:00 6 (+1, spread over 06:50–07:00, inside): 3 + 1 + 3 + 1 + 0 + 1
    points = [("05:50", 99), ("06:00", 100), ("06:10", 103), ("06:20", 1), ("06:30", 4)]
    points += [("06:40", 5), ("06:50", 5), ("07:00", 6)]
    a, b = t("06:00"), t("07:00")
    sl = compute_energy(series(meter(points, a, b), a, b), CAL, a, b)
    assert total(sl) == pytest.approx(3 + 1 + 3 + 1 + 0 + 1)
    assert total(sl, "data_ns") == H


def test_a_counter_rollover_is_the_shorter_way_round() -> None:
    # wraps at 1000: 998 → 999.5 (+1.5) → 2 (1000 - 999.5 + 2 = +2.5) → 5 (+3) = 7;
    # read as a reset the wrap would add 2: 6.5
    points = [("06:00", 998), ("06:10", 999.5), ("06:20", 2), ("06:30", 5)]
    a, b = t("06:00"), t("06:30")
    rolled = compute_energy(series(meter(points, a, b, rollover=1000), a, b), CAL, a, b)
    assert total(rolled) == pytest.approx(1.5 + 2.5 + 3)
    reset = compute_energy(series(meter(points, a, b), a, b), CAL, a, b)
    assert total(reset) == pytest.approx(1.5 + 2 + 3)
    # with a rollover set, 500 → 0 is still a reset (wrapping would be 500 more, not less)
    inc = meter_increments(np.array([500.0, 0.0, 4.0]), 490.0, 1000.0)
    assert inc.tolist() == [10.0, 0.0, 4.0]


def test_a_counter_increase_over_a_long_gap_is_counted_at_the_reading() -> None:
    # 06:00 10 → 06:05 11 (+1, spread) → 07:05 21 (+10 over an hour > max_gap: counted
    # at 07:05, so the 06:00–07:00 hour gets 1 and the 07:00 hour 10)
    points = [("06:00", 10), ("06:05", 11), ("07:05", 21)]
    a, b = t("06:00"), t("08:00")
    sl = compute_energy(series(meter(points, a, b), a, b), CAL, a, b)
    assert sl.values["kwh"].tolist() == pytest.approx([1.0, 10.0])
    assert sl.values["data_ns"].tolist() == [5 * M, 0]


def test_power_is_held_up_to_max_gap_and_not_across_a_longer_gap() -> None:
    # 10 kW at 06:00 and 06:05, then nothing until 07:00 (20 kW). Step/hold:
    # 06:00–06:05 10 kW = 5/60 × 10; 06:05 holds 10 min (max_gap) = 10/60 × 10;
    # total 15/60 × 10 = 2.5 kWh, 15 min of data. 07:00 is outside [06:00, 07:00).
    points = [("06:00", 10), ("06:05", 10), ("07:00", 20)]
    a, b = t("06:00"), t("07:00")
    sl = compute_energy(series(power(points, a, b), a, b), CAL, a, b)
    assert total(sl) == pytest.approx(2.5)
    assert total(sl, "data_ns") == 15 * M
    # a Bad reading (NaN) ends the hold: 10 kW 06:00–06:02 only = 2/60 × 10
    bad = [("06:00", 10), ("06:02", float("nan"))]
    sl = compute_energy(series(power(bad, a, b), a, b), CAL, a, b)
    assert total(sl) == pytest.approx(2 / 60 * 10)


def test_idle_energy_during_a_stop_and_planned_stop_energy_during_a_break() -> None:
    # 12 kW throughout, readings every 5 min. Running 06:00; down 07:00–07:30; running;
    # idle 09:50–10:40 across the 10:00–10:30 break; running to 14:00.
    #   idle (planned time, not running): 07:00–07:30 + 09:50–10:00 + 10:30–10:40 = 50 min
    #   planned stop (break, not running): 10:00–10:30 = 30 min
    #   producing: 8 h − 80 min = 400 min. Each × 12 kW / 60.
    points = [(f"{h:02d}:{m:02d}", 12.0) for h in range(6, 15) for m in range(0, 60, 5)]
    state = [("06:00", 1), ("07:00", 4), ("07:30", 1), ("09:50", 2), ("10:40", 1)]
    a, b = t("06:00"), t("14:00")
    sl = compute_energy(series(power(points, a, b), a, b, state=state), CAL, a, b)
    assert total(sl) == pytest.approx(8 * 12)
    assert total(sl, "idle_kwh") == pytest.approx(50 / 60 * 12)
    assert total(sl, "planned_stop_kwh") == pytest.approx(30 / 60 * 12)
    assert total(sl, "producing_kwh") == pytest.approx(400 / 60 * 12)
    assert total(sl, "unknown_kwh") == 0.0
    s = summarize_energy({c: total(sl, c) for c in sl.values}, has_state=True, has_parts=False)
    assert s["idle_kwh"] == pytest.approx(10.0)
    assert s["kwh_per_good_part"] is None
    assert s["good_parts"] is None


def test_a_night_shift_crossing_midnight_gets_its_energy_whole() -> None:
    # shifts day 06–14, night 22–06 (UTC); 6 kW from 21:00 to 07:00 next day, idle
    # throughout: 21–22 is outside every shift (planned stop, 6 kWh), the night shift
    # 22–06 is 8 h of idle in planned time (48 kWh) across midnight, 06–07 the day shift (6).
    cal = ShiftCalendar(
        ShiftsSection.model_validate(
            {
                "shifts": [
                    {"name": "day", "start": "06:00", "end": "14:00"},
                    {"name": "night", "start": "22:00", "end": "06:00"},
                ]
            }
        )
    )
    a, b = t("21:00"), t("07:00", "2026-03-03")
    lo, hi = read_window(a, b, GAP)
    ts = np.arange(lo, hi, 5 * M, dtype=np.int64)
    pieces = power_pieces(ts, np.full(len(ts), 6.0), read_end=hi, max_gap_ns=GAP)
    sl = compute_energy(series(pieces, a, b, state=[("20:00", 2)]), cal, a, b)
    per_shift: dict[tuple[int, int], float] = {}
    for i in range(len(sl)):
        key = (int(sl.shift[i]), int(sl.shift_start[i]))
        per_shift[key] = per_shift.get(key, 0.0) + float(sl.values["kwh"][i])
    assert per_shift == pytest.approx(
        {(-1, 0): 6.0, (1, t("22:00")): 48.0, (0, t("06:00", "2026-03-03")): 6.0}
    )
    assert total(sl, "planned_stop_kwh") == pytest.approx(6.0)
    assert total(sl, "idle_kwh") == pytest.approx(54.0)
    # cut at local midnight too: 2026-03-02 has 21:00–24:00 = 18 kWh
    first_day = sl.start < t("00:00", "2026-03-03")
    assert float(sl.values["kwh"][first_day].sum()) == pytest.approx(18.0)


def test_energy_per_good_part() -> None:
    # 30 kWh meter increase 06:00–08:00 and good parts 1000 → 1120: 120 good parts,
    # 30 / 120 = 0.25 kWh per good part. Without a good counter, parts − scrap:
    # parts 500 → 630 (+130), scrap 20 → 30 (+10): 120 again.
    a, b = t("06:00"), t("08:00")
    points = [
        (f"{h:02d}:{m:02d}", 100 + (h - 6) * 15 + m / 4) for h in (6, 7) for m in range(0, 60, 5)
    ]
    points += [("08:00", 130.0)]

    def ctr(values: list[tuple[str, float]], base: float) -> Counter:
        return Counter(
            np.array([t(h) for h, _ in values], dtype=np.int64),
            np.array([v for _, v in values]),
            base,
        )

    good = good_increments(None, ctr([("07:00", 1060), ("07:59", 1120)], 1000), None)
    sl = compute_energy(series(meter(points, a, b), a, b, good=good), CAL, a, b)
    sums = {c: total(sl, c) for c in sl.values}
    assert sums["kwh"] == pytest.approx(30.0)
    assert sums["good"] == 120
    assert summarize_energy(sums, has_state=False, has_parts=True)["kwh_per_good_part"] == (
        pytest.approx(0.25)
    )
    _ts, inc = good_increments(
        ctr([("07:00", 560), ("07:59", 630)], 500), None, ctr([("07:30", 30)], 20)
    )
    assert inc.sum() == 120
    none = summarize_energy({"kwh": 5.0, "good": 0.0}, has_state=False, has_parts=True)
    assert none["kwh_per_good_part"] is None
    assert none["good_parts"] == 0.0
    assert none["producing_kwh"] is None  # no state: the split is not known


def loop_power(ts: np.ndarray, kw: np.ndarray, a: int, b: int, gap: int) -> float:
    """Step/hold integration by a plain loop, clipped to ``[a, b)``."""
    out = 0.0
    for i in range(len(ts)):
        nxt = ts[i + 1] if i + 1 < len(ts) else b
        end = min(nxt, ts[i] + gap, b)
        lo = max(ts[i], a)
        if end > lo and not np.isnan(kw[i]):
            out += kw[i] * (end - lo) / H
    return out


def test_power_matches_a_plain_loop_and_a_day_is_the_sum_of_its_hours() -> None:
    rng = np.random.default_rng(7)
    a = t("00:00")
    b = a + 24 * H
    lo, hi = read_window(a, b, GAP)
    ts = np.unique(rng.integers(lo, hi, 3000)).astype(np.int64)
    ts = np.unique(np.concatenate((ts, lo + np.cumsum(rng.integers(1, 30 * M, 100)))))
    ts = ts[ts < hi]  # dense stretches and gaps of up to 30 min
    kw = rng.uniform(0, 40, len(ts))
    kw[rng.random(len(ts)) < 0.02] = np.nan
    state_ts = np.unique(rng.integers(lo, hi, 200)).astype(np.int64)
    state_v = rng.integers(1, 5, len(state_ts)).astype(np.float64)

    def run(wa: int, wb: int) -> EnergySlices:
        rlo, rhi = read_window(wa, wb, GAP)
        pick = (ts >= rlo) & (ts < rhi)
        before = state_v[state_ts < rlo]
        steps = Steps.of(rlo, float(before[-1]) if len(before) else 1.0, state_ts, state_v)
        pieces = power_pieces(ts[pick], kw[pick], read_end=rhi, max_gap_ns=GAP)
        empty = np.empty(0, np.int64)
        s = EnergySeries("a/m", "m", POWER, pieces, steps, 1, empty, np.empty(0), rlo, rhi)
        return compute_energy(s, CAL, wa, wb)

    whole = run(a, b)
    assert total(whole) == pytest.approx(loop_power(ts, kw, a, b, GAP), rel=1e-12)
    split = sum(total(whole, c) for c in ("producing_kwh", "idle_kwh", "planned_stop_kwh"))
    assert split + total(whole, "unknown_kwh") == pytest.approx(total(whole), rel=1e-12)
    assert total(whole, "idle_kwh") > 0
    assert total(whole, "planned_stop_kwh") > 0
    for h in range(24):
        ha, hb = a + h * H, a + (h + 1) * H
        hour = run(ha, hb)
        in_hour = (whole.start >= ha) & (whole.start < hb)
        for c in hour.values:
            assert float(hour.values[c].sum()) == pytest.approx(
                float(whole.values[c][in_hour].sum()), abs=1e-9
            ), (h, c)


def test_the_simulators_meter_and_its_power_agree_over_a_day() -> None:
    # The simulator's energy_kwh is the trapezoid integral of its power at its sample
    # times; step/hold over the same samples differs by a telescoping sum:
    # Σ (p[i] - p[i+1]) dt / 2 = (p[0] - p[n]) dt / 2, at most 1.5 × rated kW × 10 s / 2.
    day = 24 * H
    t0 = 1_750_000_000 * S // day * day
    step = 10 * S
    plant = Plant.default(seed=3)
    batches = [plant.advance(start_ns=t0, steps=360, period_ns=step)]
    batches += [plant.advance(steps=360, period_ns=step) for _ in range(23)]
    checked = 0
    for path in [p for p in batches[0].tags if p.endswith("/energy_kwh")]:
        base = path.rsplit("/", 1)[0]
        cols = {}
        for name in ("energy_kwh", "power_kw"):
            ts, vs = [], []
            for bt in batches:
                k = bt.tags.index(f"{base}/{name}")
                ts.append(bt.ts[bt.tag_index == k])
                vs.append(bt.value[bt.tag_index == k])
            cols[name] = (np.concatenate(ts), np.concatenate(vs).astype(np.float64))
        e_ts, e_v = cols["energy_kwh"]
        p_ts, p_v = cols["power_kw"]
        a, b = int(e_ts[0]), int(e_ts[-1])
        by_counter = counter_pieces(Counter(e_ts, e_v, None), read_start=a, max_gap_ns=GAP).total()
        by_power = power_pieces(p_ts, p_v, read_end=b, max_gap_ns=GAP).total()
        assert by_counter == pytest.approx(e_v[-1] - e_v[0], rel=1e-12)
        bound = abs(p_v[0] - p_v[-1]) * step / 2 / H
        assert abs(by_counter - by_power) <= bound + 1e-9, path
        assert by_counter > 1.0  # a real day's energy, not two zeros agreeing
        checked += 1
    assert checked >= 5
