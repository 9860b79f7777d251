"""The CNC mills' spindle speed set point: written, it is what the spindle runs at, and
nothing else of the seeded plant changes; the templates declare it writable."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from shopfloor.model import PointBatch
from shopfloor.server.assets.model import load_templates
from shopfloor.simulator import Plant

T0 = 1_704_067_200 * 10**9
CNC = "acme/plant-1/machining/line-1/cell-1/cnc-01"
SP = f"{CNC}/spindle_speed_sp"
SPEED = f"{CNC}/spindle_speed"
STATE = f"{CNC}/state"


def _columns(batch: PointBatch) -> dict[str, np.ndarray]:
    return {path: batch.value[batch.tag_index == i] for i, path in enumerate(batch.tags)}


def test_a_written_set_point_is_followed_and_changes_nothing_else() -> None:
    written, untouched = Plant.default(seed=3), Plant.default(seed=3)
    for plant in (written, untouched):
        plant.advance(start_ns=T0, steps=600)
    before = _columns(untouched.advance(steps=1))[SP]
    written.advance(steps=1)
    assert written.write_setpoint(SP, 7000.0) == 7000.0
    a = _columns(written.advance(steps=3600))
    b = _columns(untouched.advance(steps=3600))
    assert before[0] != 7000.0  # the job's own set point was another
    assert (a[SP] == 7000.0).all()
    running = a[STATE] == 1
    assert running.any()
    assert np.allclose(a[SPEED][running], 7000.0, rtol=0.02)
    assert (a[SPEED][~running] == 0.0).all()
    changed = {p for p in a if not np.array_equal(a[p], b[p], equal_nan=True)}
    assert changed == {SP, SPEED}


def test_a_set_point_is_clamped_to_its_range_and_only_set_points_take_writes() -> None:
    plant = Plant.default(seed=1)
    with pytest.raises(ValueError, match="not started"):
        plant.write_setpoint(SP, 5000.0)
    plant.advance(start_ns=T0, steps=1)
    assert plant.write_setpoint(SP, 20_000.0) == 15_000.0
    assert plant.write_setpoint(SP, -5.0) == 0.0
    with pytest.raises(ValueError, match="finite"):
        plant.write_setpoint(SP, float("nan"))
    with pytest.raises(KeyError):
        plant.write_setpoint(SPEED, 5000.0)
    assert sorted(plant.setpoints()) == [
        f"acme/plant-1/machining/line-1/cell-{k}/cnc-0{k}/spindle_speed_sp" for k in (1, 2, 3)
    ]


def test_the_demo_templates_declare_exactly_the_simulated_set_points_writable() -> None:
    folder = Path(str(resources.files("shopfloor").joinpath("demo_plant/templates")))
    templates = load_templates(folder)
    declared = {
        (kind, m.name) for kind, t in templates.items() for m in t.measurements if m.writable
    }
    plant = Plant.default(seed=1)
    kinds = {m.id: m.kind for m in plant.layout.machines}
    simulated = {(str(kinds[machine]), tag) for machine, tag in plant.setpoints().values()}
    assert declared == simulated == {("cnc-mill", "spindle_speed_sp")}
