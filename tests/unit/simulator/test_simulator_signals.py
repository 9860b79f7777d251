"""Plausibility of a simulated day, checked by independent computation on the samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shopfloor.simulator import DownReason, MachineKind, Plant, State, default_layout
from shopfloor.simulator.profiles import PROFILES, CompressorProfile, MachineProfile

T0 = 1_704_067_200 * 10**9
PRODUCTION = ("cnc-01", "cnc-02", "cnc-03", "imm-01", "imm-02")
STATEFUL = (*PRODUCTION, "conv-01", "conv-02", "comp-01", "comp-02")


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start index, length, value) of each run of equal values."""
    starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
    return starts, np.diff(np.r_[starts, len(values)]), values[starts]


def test_counters_never_go_backwards(day: Any) -> None:
    counters = [p for p in day.value if p.endswith(("_count", "energy_kwh"))]
    assert len(counters) >= 5 * 3 + 10
    for path in counters:
        assert np.all(np.diff(day.value[path]) >= 0), path


@pytest.mark.parametrize("machine", PRODUCTION)
def test_good_plus_scrap_is_parts_and_scrap_is_a_few_percent(day: Any, machine: str) -> None:
    parts = day.find(machine, "part_count")
    good = day.find(machine, "good_count")
    scrap = day.find(machine, "scrap_count")
    np.testing.assert_array_equal(good + scrap, parts)
    made = parts[-1] - parts[0]
    assert made > 100
    assert 0.003 <= (scrap[-1] - scrap[0]) / made <= 0.08


@pytest.mark.parametrize("machine", PRODUCTION)
def test_parts_come_no_faster_than_the_ideal_cycle(day: Any, machine: str) -> None:
    spec = default_layout().machine(machine)
    profile = PROFILES[spec.kind]
    assert isinstance(profile, MachineProfile)
    assert profile.output is not None
    ideal = spec.ideal_cycle_s or profile.output.ideal_cycle_s
    state = day.find(machine, "state")
    parts = day.find(machine, "part_count")
    running_s = np.count_nonzero(state == State.RUNNING)
    _, _, values = _runs(state)
    resumes = np.count_nonzero(values == State.RUNNING)
    made = parts[-1] - parts[0]
    # performance (ideal time of the parts made / running time) is below 100 % but not poor
    assert made <= running_s / ideal + resumes
    assert made * ideal / running_s > 0.7
    # parts are only completed while running (a part done at the instant of a stop counts)
    increments = np.flatnonzero(np.diff(parts) > 0) + 1
    assert np.all(state[increments - 1] == State.RUNNING)
    cycle = day.find(machine, "cycle_time")
    assert cycle.min() >= ideal - 1e-9


@pytest.mark.parametrize("machine", PRODUCTION)
def test_energy_is_the_integral_of_power(day: Any, machine: str) -> None:
    power = day.find(machine, "power_kw")
    energy = day.find(machine, "energy_kwh")
    hours = np.arange(len(power)) / 3600.0
    integral = np.concatenate([[0.0], np.cumsum(np.diff(hours) * (power[1:] + power[:-1]) / 2)])
    np.testing.assert_allclose(energy - energy[0], integral, rtol=1e-9, atol=1e-6)
    assert energy[-1] - energy[0] == pytest.approx(np.trapezoid(power, hours), rel=1e-9)


def test_meter_reads_its_feeds_plus_a_base_load(day: Any) -> None:
    feeds = sum(day.find(m, "power_kw") for m in STATEFUL)
    meter = day.find("mtr-main", "power_kw")
    base = meter - feeds
    assert base.min() > 5.0
    assert base.max() < 40.0
    energy = day.find("mtr-main", "energy_kwh")
    hours = np.arange(len(meter)) / 3600.0
    assert energy[-1] - energy[0] == pytest.approx(np.trapezoid(meter, hours), rel=1e-9)


def test_power_follows_state(day: Any) -> None:
    for machine in PRODUCTION:
        state = day.find(machine, "state")
        power = day.find(machine, "power_kw")
        mean = {s: power[state == s].mean() for s in State if np.any(state == s)}
        assert mean[State.RUNNING] > mean[State.IDLE] > mean[State.DOWN], machine
        assert mean[State.DOWN] < 0.1 * mean[State.RUNNING], machine


@pytest.mark.parametrize(
    ("machine", "tag"),
    [
        ("cnc-01", "spindle_temp"),
        ("cnc-03", "spindle_temp"),
        ("imm-01", "barrel_temp"),
        ("imm-01", "mould_temp"),
        ("imm-02", "mould_temp"),
        ("comp-01", "outlet_temp"),
    ],
)
def test_temperatures_have_thermal_inertia(day: Any, machine: str, tag: str) -> None:
    temp = day.find(machine, tag)
    # second to second only sensor noise: no step of even 3 K
    assert np.abs(np.diff(temp)).max() < 3.0
    # minute means move at most a few K per minute, even across state changes
    minute = temp.reshape(-1, 60).mean(axis=1)
    assert np.abs(np.diff(minute)).max() < 6.0


def test_a_stopped_spindle_keeps_cooling_for_minutes(day: Any) -> None:
    checked = 0
    for machine in ("cnc-01", "cnc-02", "cnc-03"):
        state = day.find(machine, "state")
        temp = day.find(machine, "spindle_temp")
        for start, length, value in zip(*_runs(state), strict=True):
            if value == State.RUNNING or length < 20 * 60 or start < 3600:
                continue
            if not np.all(state[start - 1800 : start] == State.RUNNING):
                continue  # only stops that follow half an hour of running (warm spindle)
            first = temp[start : start + 60].mean()
            later = temp[start + 15 * 60 : start + 16 * 60].mean()
            assert later < first - 3.0, (machine, start)
            checked += 1
    assert checked >= 2


def test_down_reason_is_set_exactly_when_not_running(day: Any) -> None:
    for machine in STATEFUL:
        state = day.find(machine, "state")
        reason = day.find(machine, "down_reason")
        np.testing.assert_array_equal(reason == DownReason.NONE, state == State.RUNNING)


def test_state_durations_are_plausible(day: Any) -> None:
    running, stops = [], []
    for machine in PRODUCTION:
        starts, lengths, values = _runs(day.find(machine, "state"))
        inner = slice(1, -1)  # the first and last runs are cut by the day's edges
        assert 4 <= len(starts) <= 150, machine
        running += list(lengths[inner][values[inner] == State.RUNNING])
        stops += list(lengths[inner][values[inner] != State.RUNNING])
    assert 10 * 60 <= np.median(running) <= 4 * 3600
    assert max(running) >= 1800
    assert 2 * 60 <= np.median(stops) <= 60 * 60
    assert min(stops) >= 20
    assert max(stops) <= 12 * 3600


@pytest.mark.parametrize("seed", [1, 2])
def test_availability_over_a_day_is_in_a_sensible_range(seed: int, split: Any) -> None:
    day = split(Plant.default(seed=seed).advance(start_ns=T0, steps=86_400, period_ns=10**10))
    running = [np.mean(day.find(m, "state") == State.RUNNING) for m in PRODUCTION]
    assert 0.6 <= np.mean(running) <= 0.95
    assert min(running) > 0.3


def test_conveyors_move_only_while_running(day: Any) -> None:
    for machine in ("conv-01", "conv-02"):
        state = day.find(machine, "state")
        speed = day.find(machine, "speed")
        assert np.all(speed[state != State.RUNNING] == 0)
        assert np.all(speed[state == State.RUNNING] > 0.2)


def test_compressors_cycle_between_load_and_unload_pressure(day: Any) -> None:
    for machine in ("comp-01", "comp-02"):
        profile = PROFILES[MachineKind.AIR_COMPRESSOR]
        assert isinstance(profile, CompressorProfile)
        state = day.find(machine, "state")
        loaded = day.find(machine, "loaded")
        pressure = day.find(machine, "pressure")
        power = day.find(machine, "power_kw")
        up = state == State.RUNNING
        assert up.mean() > 0.5
        band = pressure[up]
        assert band.min() > profile.p_load - 0.1
        assert band.max() < profile.p_unload + 0.1
        rising = np.diff(pressure)[(loaded[:-1] == 1) & up[:-1]].mean()
        falling = np.diff(pressure)[(loaded[:-1] == 0) & up[:-1]].mean()
        assert rising > 0 > falling
        cycles_per_hour = np.count_nonzero(np.diff(loaded) > 0) / 24
        assert 2 <= cycles_per_hour <= 60
        assert power[(loaded == 1) & up].mean() > 2 * power[(loaded == 0) & up].mean()
