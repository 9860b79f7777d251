"""Injected faults: breakdowns, bearing wear to a vibration trip, overheating, dead sensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shopfloor.model import Quality
from shopfloor.simulator import DownReason, Fault, Plant, State
from shopfloor.simulator.profiles import CNC_MILL

T0 = 1_704_067_200 * 10**9
SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


def test_breakdown_holds_the_machine_down_then_it_runs_again(split: Any) -> None:
    plant = Plant.default(seed=2)
    plant.inject(
        "imm-01", Fault.breakdown(DownReason.JAM, duration_ns=45 * MINUTE, at_ns=T0 + HOUR)
    )
    day = split(plant.advance(start_ns=T0, steps=3 * 3600))
    state, reason = day.find("imm-01", "state"), day.find("imm-01", "down_reason")
    parts, power = day.find("imm-01", "part_count"), day.find("imm-01", "power_kw")
    down = slice(3600, 3600 + 45 * 60)
    assert np.all(state[down] == State.DOWN)
    assert np.all(reason[down] == DownReason.JAM)
    assert state[3600 + 45 * 60] == State.RUNNING
    assert parts[down.stop - 1] - parts[down.start] <= 1  # a part done at the instant it stops
    assert power[down].mean() < 0.1 * power[state == State.RUNNING].mean()


def test_a_fault_changes_only_what_comes_after_it(split: Any) -> None:
    clean = split(Plant.default(seed=2).advance(start_ns=T0, steps=2 * 3600))
    plant = Plant.default(seed=2)
    first = split(plant.advance(start_ns=T0, steps=1800))
    plant.inject("cnc-02", Fault.breakdown(at_ns=T0 + HOUR))
    rest = split(plant.advance(steps=2 * 3600 - 1800))
    for path, values in clean.value.items():
        joined = np.concatenate([first.value[path], rest.value[path]])
        np.testing.assert_array_equal(joined[:3600], values[:3600], err_msg=path)
        if "/cnc-02/" not in path and "/mtr-main/" not in path:
            np.testing.assert_array_equal(joined, values, err_msg=path)
    state = np.concatenate([first.find("cnc-02", "state"), rest.find("cnc-02", "state")])
    assert state[3600] == State.DOWN


def test_bearing_wear_drives_vibration_up_to_a_trip_and_repair_resets_it(split: Any) -> None:
    assert CNC_MILL.wear is not None
    trip, healthy = CNC_MILL.wear.trip, CNC_MILL.wear.healthy
    plant = Plant.default(seed=3)
    plant.inject("cnc-01", Fault.bearing_wear(20.0, at_ns=T0))
    day = split(plant.advance(start_ns=T0, steps=12 * 3600, period_ns=SECOND))
    state = day.find("cnc-01", "state")
    reason = day.find("cnc-01", "down_reason")
    vib = day.find("cnc-01", "vibration_rms")
    (tripped,) = np.flatnonzero(reason == DownReason.MECHANICAL_FAILURE)[:1]
    assert state[tripped] == State.DOWN
    before = np.flatnonzero(state[:tripped] == State.RUNNING)
    # just before the trip vibration is at the limit, far above where it started
    assert np.median(vib[before[-30:]]) > 0.9 * trip
    assert np.median(vib[before[:60]]) < 0.8 * trip
    # and it grew steadily: running minute-medians rise with time
    minutes = [np.median(vib[before[i : i + 60]]) for i in range(0, len(before) - 59, 60)]
    assert np.corrcoef(np.arange(len(minutes)), minutes)[0, 1] > 0.8
    # after the repair the machine runs with a renewed bearing
    repaired = tripped + np.flatnonzero(state[tripped:] == State.RUNNING)[0]
    assert reason[repaired - 1] == DownReason.MECHANICAL_FAILURE
    assert repaired - tripped > 30 * 60
    assert np.median(vib[repaired : repaired + 300]) < healthy + 1.0


def test_natural_mechanical_failures_follow_a_vibration_trip(split: Any) -> None:
    assert CNC_MILL.wear is not None
    trips = 0
    for seed in range(4):
        plant = Plant.default(seed=seed)
        day = split(plant.advance(start_ns=T0, steps=2 * 8640, period_ns=10 * SECOND))
        for machine in ("cnc-01", "cnc-02", "cnc-03", "imm-01", "imm-02"):
            reason = day.find(machine, "down_reason")
            state = day.find(machine, "state")
            vib = day.find(machine, "vibration_rms")
            starts = np.flatnonzero(
                (reason[1:] == DownReason.MECHANICAL_FAILURE) & (state[:-1] == State.RUNNING)
            )
            for s in starts:
                assert np.median(vib[s - 5 : s + 1]) > 0.85 * CNC_MILL.wear.trip
                trips += 1
    assert trips >= 1


def test_overheat_raises_temperature_and_scrap(split: Any) -> None:
    clean = split(Plant.default(seed=6).advance(start_ns=T0, steps=4 * 3600))
    plant = Plant.default(seed=6)
    plant.inject("imm-01", Fault.overheat(20.0, at_ns=T0 + HOUR, duration_ns=3 * HOUR))
    hot = split(plant.advance(start_ns=T0, steps=4 * 3600))
    window = slice(2 * 3600, 4 * 3600)  # after an hour of heating up
    running = hot.find("imm-01", "state")[window] == State.RUNNING
    warmer = hot.find("imm-01", "mould_temp")[window] - clean.find("imm-01", "mould_temp")[window]
    assert np.median(warmer[running]) > 10.0
    scrap_hot = np.ptp(hot.find("imm-01", "scrap_count")[window])
    scrap_clean = np.ptp(clean.find("imm-01", "scrap_count")[window])
    assert scrap_hot > 2 * scrap_clean + 5


def test_sensor_failure_reads_nan_with_bad_quality_for_its_window(split: Any) -> None:
    plant = Plant.default(seed=1)
    plant.inject("comp-01", Fault.sensor_failure("pressure", at_ns=T0 + 600 * SECOND))
    plant.advance(start_ns=T0, steps=300)
    cols = split(plant.advance(steps=1200))  # seconds 300 .. 1499; failure 600 .. 1199
    (path,) = [p for p in cols.value if p.endswith("/comp-01/pressure")]
    bad = np.flatnonzero(cols.quality[path] == Quality.BAD_SENSOR_FAILURE)
    np.testing.assert_array_equal(bad, np.arange(300, 900))
    assert np.all(np.isnan(cols.value[path][bad]))
    assert not np.any(np.isnan(np.delete(cols.value[path], bad)))
    for other, quality in cols.quality.items():
        if other != path:
            assert np.all(quality == Quality.GOOD), other


def test_a_fault_injected_before_the_first_advance_starts_with_the_plant(split: Any) -> None:
    plant = Plant.default(seed=1)
    plant.inject("conv-01", Fault.breakdown(DownReason.ELECTRICAL_FAULT, duration_ns=10 * MINUTE))
    cols = split(plant.advance(start_ns=T0, steps=900))
    state = cols.find("conv-01", "state")
    assert np.all(state[:600] == State.DOWN)
    assert state[600] == State.RUNNING


def test_faults_that_cannot_apply_are_refused() -> None:
    plant = Plant.default(seed=1)
    plant.advance(start_ns=T0, steps=10)
    with pytest.raises(KeyError):
        plant.inject("cnc-99", Fault.breakdown())
    with pytest.raises(ValueError, match="before"):
        plant.inject("cnc-01", Fault.breakdown(at_ns=T0))
    with pytest.raises(ValueError, match="vibration"):
        plant.inject("conv-01", Fault.bearing_wear())
    with pytest.raises(ValueError, match="temperature"):
        plant.inject("conv-01", Fault.overheat())
    with pytest.raises(ValueError, match="meter"):
        plant.inject("mtr-main", Fault.breakdown())
    with pytest.raises(ValueError, match="no tag"):
        plant.inject("cnc-01", Fault.sensor_failure("pressure"))
    with pytest.raises(ValueError, match="reason"):
        Fault.breakdown(DownReason.NONE)
    with pytest.raises(ValueError, match=">= 1"):
        Fault.bearing_wear(0.5)
