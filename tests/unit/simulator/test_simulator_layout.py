"""The plant's layout and tag metadata: ISA-95 paths, units, ranges, TOML loading."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.errors import ConfigError
from shopfloor.model import DataType
from shopfloor.simulator import (
    DownReason,
    MachineKind,
    MachineSpec,
    Plant,
    PlantLayout,
    State,
    default_layout,
    load_layout,
)

SEGMENT = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
TAG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def test_default_layout_is_a_small_two_line_plant() -> None:
    layout = default_layout()
    kinds = Counter(m.kind for m in layout.machines)
    assert 8 <= len(layout.machines) <= 14
    assert kinds[MachineKind.CNC_MILL] >= 2
    assert kinds[MachineKind.INJECTION_PRESS] >= 2
    assert kinds[MachineKind.CONVEYOR] >= 2
    assert kinds[MachineKind.AIR_COMPRESSOR] >= 1
    assert kinds[MachineKind.ENERGY_METER] >= 1
    production = {(m.area, m.line) for m in layout.machines if m.kind is MachineKind.CNC_MILL}
    production |= {
        (m.area, m.line) for m in layout.machines if m.kind is MachineKind.INJECTION_PRESS
    }
    assert len(production) == 2


def test_every_tag_path_has_seven_isa95_segments_and_is_unique() -> None:
    metas = Plant.default(seed=1).tags()
    paths = [m.path for m in metas]
    assert len(paths) == len(set(paths))
    for path in paths:
        segments = path.split("/")
        assert len(segments) == 7, path
        assert all(SEGMENT.match(s) for s in segments[:6]), path
        assert TAG_NAME.match(segments[6]), path
    assert "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp" in paths


def test_every_tag_has_unit_description_type_and_a_sane_range() -> None:
    for meta in Plant.default(seed=1).tags():
        assert meta.description, meta.path
        if meta.data_type is DataType.FLOAT:
            assert meta.unit, meta.path
        if meta.eng_low is not None and meta.eng_high is not None:
            assert meta.eng_low < meta.eng_high, meta.path


def test_enumerated_tags_carry_their_labels() -> None:
    metas = {m.path: m for m in Plant.default(seed=1).tags()}
    state = metas["acme/plant-1/machining/line-1/cell-1/cnc-01/state"]
    assert state.data_type is DataType.INT
    assert dict(state.states) == {1: "running", 2: "idle", 3: "setup", 4: "down"}
    reason = metas["acme/plant-1/machining/line-1/cell-1/cnc-01/down_reason"]
    labels = dict(reason.states)
    assert labels[0] == "none"
    assert labels[DownReason.MECHANICAL_FAILURE] == "mechanical failure"
    assert len(labels) == len(DownReason)
    assert [int(s) for s in State] == [1, 2, 3, 4]


def test_values_stay_inside_the_engineering_ranges(day: Any) -> None:
    metas = {m.path: m for m in Plant.default(seed=1).tags()}
    for path, values in day.value.items():
        meta = metas[path]
        if meta.eng_low is not None:
            assert values.min() >= meta.eng_low, path
        if meta.eng_high is not None:
            assert values.max() <= meta.eng_high, path
        if meta.data_type in (DataType.INT, DataType.BOOL):
            np.testing.assert_array_equal(values, np.round(values), err_msg=path)
        if meta.states:
            assert set(np.unique(values)) <= {v for v, _ in meta.states}, path


def test_layout_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(
        'enterprise = "acme"\nsite = "plant-9"\n'
        '[[machine]]\nid = "cnc-07"\nkind = "cnc-mill"\narea = "machining"\n'
        'line = "line-4"\ncell = "cell-2"\nideal_cycle_s = 50.0\n'
        '[[machine]]\nid = "mtr-4"\nkind = "energy-meter"\narea = "utilities"\n'
        'line = "power"\ncell = "line-4"\nfeeds = ["cnc-07"]\n'
    )
    layout = load_layout(path)
    assert layout.site == "plant-9"
    assert layout.machines[0] == MachineSpec(
        "cnc-07", MachineKind.CNC_MILL, "machining", "line-4", "cell-2", ideal_cycle_s=50.0
    )
    assert layout.meter_feeds(layout.machines[1]) == ("cnc-07",)
    tags = [m.path for m in Plant(layout, seed=0).tags()]
    assert "acme/plant-9/machining/line-4/cell-2/cnc-07/part_count" in tags
    assert "acme/plant-9/utilities/power/line-4/mtr-4/energy_kwh" in tags


def test_bad_layout_names_every_problem_by_key(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(
        'enterprise = "acme"\nsite = "plant-1"\n'
        '[[machine]]\nid = "cnc-01"\nkind = "lathe"\narea = "a"\nline = "l"\ncell = "c"\n'
        '[[machine]]\nid = "x"\nkind = "conveyor"\narea = "a"\nline = "l"\ncolour = "red"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_layout(path)
    problems = info.value.problems
    assert any(p.startswith("machine[0].kind") and "lathe" in p for p in problems)
    assert "machine[1].colour: unknown key" in problems
    assert "machine[1].cell: required" in problems


def test_unreadable_layout_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_layout(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("enterprise = ")
    with pytest.raises(ConfigError):
        load_layout(bad)


def test_layout_rejects_duplicate_ids_bad_segments_and_bad_feeds() -> None:
    cnc = MachineSpec("cnc-01", MachineKind.CNC_MILL, "machining", "line-1", "cell-1")
    with pytest.raises(ValueError, match="unique"):
        PlantLayout("acme", "plant-1", (cnc, cnc))
    with pytest.raises(ValueError, match="hyphens"):
        MachineSpec("CNC 1", MachineKind.CNC_MILL, "machining", "line-1", "cell-1")
    meter = MachineSpec(
        "mtr-1", MachineKind.ENERGY_METER, "utilities", "power", "main", feeds=("nope",)
    )
    with pytest.raises(ValueError, match="unknown machine"):
        PlantLayout("acme", "plant-1", (cnc, meter))
