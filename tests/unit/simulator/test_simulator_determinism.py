"""Same seed, same calls, same batches; machines' streams independent of each other."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from shopfloor.model import PointBatch
from shopfloor.simulator import MachineKind, MachineSpec, Plant, default_layout

T0 = 1_704_067_200 * 10**9
SECOND = 10**9
HOUR_STEPS = 3600


def _batch_equal(a: PointBatch, b: PointBatch) -> bool:
    return (
        a.tags == b.tags
        and np.array_equal(a.tag_index, b.tag_index)
        and np.array_equal(a.ts, b.ts)
        and np.array_equal(a.value, b.value, equal_nan=True)
        and np.array_equal(a.quality, b.quality)
    )


def test_same_seed_and_calls_give_bit_identical_batches() -> None:
    calls = [(T0, 1800, SECOND), (None, 600, 5 * SECOND), (T0 + 3 * 3600 * SECOND, 100, SECOND)]
    first, second = Plant.default(seed=7), Plant.default(seed=7)
    for start, steps, period in calls:
        a = first.advance(start_ns=start, steps=steps, period_ns=period)
        b = second.advance(start_ns=start, steps=steps, period_ns=period)
        assert _batch_equal(a, b)


def test_different_seeds_give_different_plants(split: Any) -> None:
    a = split(Plant.default(seed=1).advance(start_ns=T0, steps=HOUR_STEPS))
    b = split(Plant.default(seed=2).advance(start_ns=T0, steps=HOUR_STEPS))
    differing = [p for p in a.value if not np.array_equal(a.value[p], b.value[p])]
    # every noisy signal differs; at most a few constant ones (e.g. a state) may agree
    assert len(differing) >= 0.8 * len(a.value)


def test_history_does_not_depend_on_how_time_is_chopped(split: Any) -> None:
    whole = split(Plant.default(seed=3).advance(start_ns=T0, steps=2 * HOUR_STEPS))
    plant = Plant.default(seed=3)
    pieces = [plant.advance(start_ns=T0, steps=1000)]
    pieces += [plant.advance(steps=1) for _ in range(50)]
    pieces.append(plant.advance(steps=2 * HOUR_STEPS - 1050))
    chopped = [split(p) for p in pieces]
    for path, values in whole.value.items():
        joined = np.concatenate([c.value[path] for c in chopped])
        np.testing.assert_array_equal(joined, values, err_msg=path)
        ts = np.concatenate([c.ts[path] for c in chopped])
        np.testing.assert_array_equal(ts, whole.ts[path])


def test_machine_streams_ignore_layout_order(split: Any) -> None:
    layout = default_layout()
    shuffled = dataclasses.replace(layout, machines=tuple(reversed(layout.machines)))
    a = split(Plant(layout, seed=5).advance(start_ns=T0, steps=HOUR_STEPS))
    b = split(Plant(shuffled, seed=5).advance(start_ns=T0, steps=HOUR_STEPS))
    assert set(a.value) == set(b.value)
    for path in a.value:
        np.testing.assert_array_equal(a.value[path], b.value[path], err_msg=path)


def test_adding_a_machine_leaves_the_others_alone(split: Any) -> None:
    layout = default_layout()
    extra = MachineSpec("cnc-04", MachineKind.CNC_MILL, "machining", "line-1", "cell-4")
    bigger = dataclasses.replace(layout, machines=(extra, *layout.machines))
    a = split(Plant(layout, seed=5).advance(start_ns=T0, steps=HOUR_STEPS))
    b = split(Plant(bigger, seed=5).advance(start_ns=T0, steps=HOUR_STEPS))
    assert set(b.value) - set(a.value) == {p for p in b.value if "/cnc-04/" in p}
    meters = {m.id for m in layout.machines if m.kind is MachineKind.ENERGY_METER}
    for path in a.value:
        if path.split("/")[5] in meters:
            continue  # the main meter measures the new machine too
        np.testing.assert_array_equal(a.value[path], b.value[path], err_msg=path)


def test_tags_match_the_batch_and_timestamps_follow_the_period(split: Any) -> None:
    plant = Plant.default(seed=1)
    period = 250_000_000
    batch = plant.advance(start_ns=T0, steps=400, period_ns=period)
    metas = plant.tags()
    assert list(batch.tags) == [m.path for m in metas]
    assert len(batch) == 400 * len(metas)
    cols = split(batch)
    assert set(cols.ts) == set(batch.tags)
    expected = T0 + np.arange(400, dtype=np.int64) * period
    for ts in cols.ts.values():
        np.testing.assert_array_equal(ts, expected)
    assert plant.now_ns == T0 + 400 * period
    follow = plant.advance(steps=3, period_ns=period)
    assert int(follow.ts.min()) == T0 + 400 * period


def test_time_only_moves_forward() -> None:
    plant = Plant.default(seed=1)
    with pytest.raises(ValueError, match="start_ns"):
        plant.advance(steps=10)
    plant.advance(start_ns=T0, steps=10)
    with pytest.raises(ValueError, match="forward"):
        plant.advance(start_ns=T0, steps=10)
    empty = plant.advance(steps=0)
    assert len(empty) == 0


def test_a_gap_between_calls_keeps_counters_consistent(split: Any) -> None:
    plant = Plant.default(seed=4)
    metas = {m.path: m for m in plant.tags()}
    before = split(plant.advance(start_ns=T0, steps=600))
    gap_h = 2.0
    after = split(plant.advance(start_ns=T0 + (600 + int(gap_h * 3600)) * SECOND, steps=600))
    made = 0.0
    for path in before.value:
        name = path.rsplit("/", 1)[1]
        if name.endswith("_count") or name == "energy_kwh":
            assert after.value[path][0] >= before.value[path][-1], path
        if name == "part_count":
            made += after.value[path][0] - before.value[path][-1]
        limit = metas[path.replace("energy_kwh", "power_kw")].eng_high
        if name == "energy_kwh" and limit is not None:
            spent = after.value[path][0] - before.value[path][-1]
            assert 0 < spent <= limit * gap_h, path
    assert made > 0  # the plant kept producing while nobody watched
