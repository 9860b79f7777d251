"""Calculated tags: the columnar Calculator against a plain point-by-point loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from shopfloor.errors import ConfigError
from shopfloor.model import PointBatch, Quality
from shopfloor.model.points import is_good
from shopfloor.server.analytics.calc import Calculation, Calculator
from shopfloor.server.assets import load_asset_model
from shopfloor.simulator import Plant

S = 10**9
T0 = 1_750_000_000 * S
M = "acme/site/area/line/cell/m-1"
GOOD, UNCERTAIN, BAD = 0, int(Quality.UNCERTAIN), int(Quality.BAD_SENSOR_FAILURE)


def _ratio(a: float, b: float, c: float) -> float:
    try:
        return a * b - c / 2 + max(a, c) / b
    except ZeroDivisionError:
        return math.inf


def reference(
    batches: list[list[tuple[str, int, float, int]]],
    names: dict[str, str],
    fn: Callable[..., float],
) -> list[tuple[int, float, int]]:
    """Point by point: apply every point of a moment in arrival order, then evaluate once."""
    last: dict[str, tuple[float, int]] = {}
    out: list[tuple[int, float, int]] = []
    for batch in batches:
        by_name = {path: name for name, path in names.items()}
        rows = [
            (ts, order, by_name[path], value, quality)
            for order, (path, ts, value, quality) in enumerate(batch)
            if path in by_name
        ]
        rows.sort(key=lambda r: (r[0], r[1]))  # by time, then by arrival
        for i, (ts, _, name, value, quality) in enumerate(rows):
            last[name] = (value, quality)
            if i + 1 < len(rows) and rows[i + 1][0] == ts:
                continue
            if len(last) < len(names):
                continue
            qualities = [q for _, q in last.values()]
            if any(q & 0x80000000 for q in qualities):
                out.append((ts, math.nan, 0x80000000))
                continue
            result = fn(*(last[n][0] for n in names))
            if not math.isfinite(result):
                out.append((ts, math.nan, 0x80000000))
                continue
            uncertain = any(q & 0xC0000000 == 0x40000000 for q in qualities)
            out.append((ts, result, 0x40000000 if uncertain else 0))
    return out


def random_batches(
    rng: np.random.Generator, tags: list[str], count: int
) -> list[list[tuple[str, int, float, int]]]:
    """Batches of points in consecutive time ranges; inputs share moments at random."""
    batches = []
    start = T0
    for _ in range(count):
        rows = []
        for tag in tags:
            n = int(rng.choice([0, 1, 3, 8, 12]))
            times = start + rng.choice(30, size=n) * S  # repeats: the later point wins
            for t in times:
                value = float(rng.choice([0.0, 1.5, -2.0, float(rng.normal(10, 5))]))
                quality = int(rng.choice([GOOD, GOOD, GOOD, UNCERTAIN, BAD]))
                rows.append((tag, int(t), value, quality))
        order = rng.permutation(len(rows))
        batches.append([rows[i] for i in order])
        start += 30 * S
    return batches


@pytest.mark.parametrize("seed", range(8))
def test_the_calculator_matches_a_point_by_point_loop(seed: int) -> None:
    """Three machines of one template in every batch, each input of each machine present
    or not at random: each machine against its own loop."""
    rng = np.random.default_rng(seed)
    machines = [f"{M}{i}" for i in range(3)]
    names = {m: {"a": f"{m}/a", "b": f"{m}/b", "c": f"{m}/c"} for m in machines}
    expression = "a * b - c / 2 + max(a, c) / b"
    calc = Calculator([Calculation(f"{m}/r", expression, names[m]) for m in machines])
    tags = [p for m in machines for p in names[m].values()] + [f"{M}/other"]
    batches = random_batches(rng, tags, 6)
    got: dict[str, list[tuple[int, float, int]]] = {m: [] for m in machines}
    for rows in batches:
        derived = calc.derive(PointBatch.from_points(rows))
        assert set(derived.tags) <= {f"{m}/r" for m in machines}
        for t, ts, v, q in zip(
            derived.tag_index,
            derived.ts.tolist(),
            derived.value.tolist(),
            derived.quality.tolist(),
            strict=True,
        ):
            got[derived.tags[t].rsplit("/", 1)[0]].append((ts, v, q))
    qualities: set[int] = set()
    for m in machines:
        want = reference(batches, names[m], _ratio)
        qualities |= {q for _, _, q in want}
        mine = sorted(got[m], key=lambda r: r[0])  # one calculation's points are in time order
        assert mine == got[m]
        assert [(t, q) for t, _, q in mine] == [(t, q) for t, _, q in want]
        np.testing.assert_allclose([v for _, v, _ in mine], [v for _, v, _ in want], equal_nan=True)
    assert qualities == {0, 0x40000000, 0x80000000}  # the data reached every case


def test_nothing_until_every_input_has_a_value_then_the_last_is_carried() -> None:
    calc = Calculator([Calculation(f"{M}/sum", "x + y", {"x": f"{M}/x", "y": f"{M}/y"})])
    assert not len(calc.derive(PointBatch.from_points([(f"{M}/x", T0, 1.0, GOOD)])))
    out = calc.derive(PointBatch.from_points([(f"{M}/y", T0 + S, 2.0, GOOD)]))
    assert (out.ts.tolist(), out.value.tolist()) == ([T0 + S], [3.0])
    out = calc.derive(PointBatch.from_points([(f"{M}/x", T0 + 2 * S, 10.0, GOOD)]))
    assert out.value.tolist() == [12.0]  # y = 2 carried from the batch before


def test_a_calculation_reads_another_in_the_same_pass_and_quality_follows() -> None:
    calc = Calculator(
        [
            Calculation(f"{M}/double", "2 * total", {"total": f"{M}/total"}),
            Calculation(f"{M}/total", "x + y", {"x": f"{M}/x", "y": f"{M}/y"}),
        ]
    )
    out = calc.derive(
        PointBatch.from_points(
            [
                (f"{M}/x", T0, 1.0, GOOD),
                (f"{M}/y", T0, 2.0, GOOD),
                (f"{M}/x", T0 + S, 5.0, BAD),
                (f"{M}/x", T0 + 2 * S, 5.0, UNCERTAIN),
            ]
        )
    )
    rows = sorted(
        zip(
            [out.tags[i] for i in out.tag_index],
            out.ts.tolist(),
            out.value.tolist(),
            out.quality.tolist(),
            strict=True,
        )
    )
    assert [(p.rsplit("/", 1)[1], (t - T0) // S, q) for p, t, _, q in rows] == [
        ("double", 0, 0),
        ("double", 1, 0x80000000),
        ("double", 2, 0x40000000),
        ("total", 0, 0),
        ("total", 1, 0x80000000),
        ("total", 2, 0x40000000),
    ]
    values = {(p.rsplit("/", 1)[1], (t - T0) // S): v for p, t, v, _ in rows}
    assert (values["total", 0], values["double", 0], values["double", 2]) == (3.0, 6.0, 14.0)
    assert math.isnan(values["double", 1])


def test_late_points_are_computed_among_themselves_and_do_not_move_the_carry() -> None:
    calc = Calculator([Calculation(f"{M}/d", "x - y", {"x": f"{M}/x", "y": f"{M}/y"})])
    calc.derive(
        PointBatch.from_points(
            [(f"{M}/x", T0 + 100 * S, 50.0, GOOD), (f"{M}/y", T0 + 100 * S, 1.0, GOOD)]
        )
    )
    backlog = calc.derive(
        PointBatch.from_points(
            [
                (f"{M}/x", T0, 7.0, GOOD),
                (f"{M}/x", T0 + S, 8.0, GOOD),
                (f"{M}/y", T0 + S, 3.0, GOOD),
            ]
        )
    )
    assert (backlog.ts.tolist(), backlog.value.tolist()) == ([T0 + S], [5.0])
    out = calc.derive(PointBatch.from_points([(f"{M}/y", T0 + 101 * S, 10.0, GOOD)]))
    assert out.value.tolist() == [40.0]  # x = 50 still carried, not the backlog's 8


def test_cycles_and_bad_expressions_are_refused() -> None:
    with pytest.raises(ConfigError, match="cycle"):
        Calculator(
            [
                Calculation(f"{M}/a", "b + 1", {"b": f"{M}/b"}),
                Calculation(f"{M}/b", "a + 1", {"a": f"{M}/a"}),
            ]
        )
    with pytest.raises(ConfigError, match="unknown name"):
        Calculator([Calculation(f"{M}/a", "b + z", {"b": f"{M}/b"})])


def test_a_batch_without_inputs_gives_nothing() -> None:
    calc = Calculator([Calculation(f"{M}/a", "b + 1", {"b": f"{M}/b"})])
    assert not len(calc.derive(PointBatch.from_points([(f"{M}/other", T0, 1.0, GOOD)])))
    assert not len(calc.derive(PointBatch.empty()))


def test_the_demo_plants_calculations_give_good_values_from_the_simulator() -> None:
    demo = Path(str(resources.files("shopfloor") / "demo_plant"))
    model = load_asset_model(demo / "plant.toml", demo / "templates")
    calc = Calculator(model.calculations)
    plant = Plant.default(seed=1)
    plant.advance(start_ns=T0, steps=1)
    derived = PointBatch.concat([calc.derive(plant.advance(steps=60)) for _ in range(5)])
    assert set(derived.tags) == {c.path for c in model.calculations}
    assert is_good(derived.quality).mean() > 0.9
    energy = derived.value[
        np.char.endswith(np.array(derived.tags)[derived.tag_index], "specific_energy")
    ]
    assert 0 < np.nanmedian(energy) < 2  # kWh per part of a mill or a press


def test_three_levels_of_calculations_over_many_machines_in_one_batch() -> None:
    machines = [f"{M[:-2]}-{i}" for i in range(5)]
    calcs = []
    for m in machines:
        calcs += [
            Calculation(f"{m}/c", "b + 1", {"b": f"{m}/b"}),
            Calculation(f"{m}/a", "x * 2", {"x": f"{m}/x"}),
            Calculation(f"{m}/b", "a * 10", {"a": f"{m}/a"}),
        ]
    calc = Calculator(calcs)
    rows = [
        (f"{m}/x", T0 + k * S, float(i + k), GOOD) for i, m in enumerate(machines) for k in range(3)
    ]
    out = calc.derive(PointBatch.from_points(rows))
    got = {
        (out.tags[t], int(ts)): v
        for t, ts, v in zip(out.tag_index, out.ts, out.value.tolist(), strict=True)
    }
    assert len(got) == len(out) == 3 * len(machines) * 3
    for i, m in enumerate(machines):
        for k in range(3):
            x = i + k
            assert got[f"{m}/c", T0 + k * S] == x * 2 * 10 + 1


def test_machines_at_one_moment_each_get_their_result() -> None:
    machines = [f"{M}{i}" for i in range(4)]
    calc = Calculator([Calculation(f"{m}/y", "x + 1", {"x": f"{m}/x"}) for m in machines])
    out = calc.derive(
        PointBatch.from_points([(f"{m}/x", T0, float(i), GOOD) for i, m in enumerate(machines)])
    )
    got = {out.tags[t]: v for t, v in zip(out.tag_index, out.value.tolist(), strict=True)}
    assert got == {f"{m}/y": i + 1.0 for i, m in enumerate(machines)}


def test_attributes_are_constants_of_each_machine() -> None:
    calc = Calculator(
        [
            Calculation(f"{M}{i}/load_pct", "100 * p / rated", {"p": f"{M}{i}/p"}, {"rated": r})
            for i, r in enumerate([10.0, 40.0])
        ]
    )
    out = calc.derive(PointBatch.from_points([(f"{M}{i}/p", T0, 8.0, GOOD) for i in range(2)]))
    got = {out.tags[t]: v for t, v in zip(out.tag_index, out.value.tolist(), strict=True)}
    assert got == {f"{M}0/load_pct": 80.0, f"{M}1/load_pct": 20.0}
