"""The asset model: templates and plant files, checked with file and line; the demo plant."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from shopfloor.errors import ConfigError
from shopfloor.server.assets import load_asset_model
from shopfloor.simulator import Plant

DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-1/cnc-01"

TEMPLATE = """\
type = "pump"
description = "Centrifugal pump"

[attributes]
rated_kw = 5.5

[[measurements]]
name = "flow"
unit = "m3/h"
range = [0.0, 60.0]

[[measurements]]
name = "bearing_temp"
unit = "degC"

[[alarms]]
measurement = "bearing_temp"
kind = "H"
limit = 80.0
priority = "high"
"""

PLANT = """\
enterprise = "acme"
site = "plant-2"

[[equipment]]
id = "p-01"
template = "pump"
area = "water"
line = "cooling"
cell = "pumps"
serial = "KSB-1"
attributes = { rated_kw = 7.5 }
"""


def write(tmp_path: Path, plant: str = PLANT, **templates: str) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in (templates or {"pump": TEMPLATE}).items():
        (folder / f"{name}.toml").write_text(text)
    (tmp_path / "plant.toml").write_text(plant)
    return tmp_path / "plant.toml"


def test_an_instance_gets_its_templates_tags_alarms_and_metadata(tmp_path: Path) -> None:
    model = load_asset_model(write(tmp_path), tmp_path / "templates")
    (pump,) = model.equipment
    assert pump.path == "acme/plant-2/water/cooling/pumps/p-01"
    assert pump.attributes == {"rated_kw": 7.5}
    assert (pump.metadata["serial"], pump.metadata["description"]) == ("KSB-1", "Centrifugal pump")
    assert [(t.path, t.unit, t.eng_high) for t in model.tags] == [
        (f"{pump.path}/flow", "m3/h", 60.0),
        (f"{pump.path}/bearing_temp", "degC", None),
    ]
    (rule,) = model.alarm_rules
    assert (rule.name, rule.limit, rule.priority) == (f"{pump.path}/bearing_temp.H", 80.0, "high")
    tree = model.tree()
    cell = tree["children"][0]["children"][0]["children"][0]["children"][0]
    assert (cell["level"], cell["path"]) == ("cell", "acme/plant-2/water/cooling/pumps")
    assert cell["children"][0]["tags"] == ["flow", "bearing_temp"]


@pytest.mark.parametrize(
    ("plant", "words"),
    [
        (PLANT.replace('"pump"', '"pumpp"'), "equipment.0.template (line 6): no template 'pumpp'"),
        (PLANT.replace("rated_kw = 7.5", "rpm = 2"), "equipment.0.attributes (line 11)"),
        (PLANT + PLANT.split("\n\n", 1)[1], "equipment ids used twice: p-01"),
        (PLANT.replace('area = "water"', 'area = "Water Treatment"'), "equipment.0.area (line 7)"),
    ],
)
def test_plant_problems_name_file_key_and_line(tmp_path: Path, plant: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_asset_model(write(tmp_path, plant), tmp_path / "templates")
    assert any(words in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("template", "words"),
    [
        (TEMPLATE.replace('"m3/h"', '"m3/hr"'), "measurements.0.unit (line 9): unknown unit"),
        (TEMPLATE.replace('measurement = "bearing_temp"', 'measurement = "temp"'), "'temp'"),
        (TEMPLATE.replace("limit = 80.0\n", ""), "kind H needs a limit"),
        (TEMPLATE.replace("range = [0.0, 60.0]", "range = [60.0, 0.0]"), "low < high"),
        (
            TEMPLATE.replace('kind = "H"', 'kind = "deviation"\nsetpoint = "flow_sp"'),
            "deviates from 'flow_sp', which is no measurement",
        ),
        (TEMPLATE.replace('kind = "H"', 'kind = "deviation"'), "a setpoint goes with kind"),
    ],
)
def test_template_problems_name_file_key_and_line(
    tmp_path: Path, template: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_asset_model(write(tmp_path, pump=template), tmp_path / "templates")
    assert any(p.startswith("pump.toml") and words in p for p in info.value.problems), (
        info.value.problems
    )


def test_the_demo_plant_is_ten_machines_whose_templates_match_the_simulator() -> None:
    model = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    assert len(model.equipment) == 10
    simulated = {t.path: t for t in Plant.default().tags()}
    derived = {c.path for c in model.calculations} | {m.path for m in model.metrics}
    described = {t.path: t for t in model.tags if t.path not in derived}  # the measurements
    assert set(described) == set(simulated)  # every simulated tag, and nothing else
    for path, tag in described.items():
        sim = simulated[path]
        assert (tag.unit, tag.data_type, tag.states) == (sim.unit, sim.data_type, sim.states), path
    vibration = [r for r in model.alarm_rules if r.tag.endswith("/vibration_rms")]
    assert len(vibration) == 2 * 5  # H and HH on every mill and press
    assert not derived & set(simulated)  # calculations and metrics are the platform's own
    assert f"{MILL}/specific_energy" in derived
    assert f"{MILL}/parts_per_window" in derived


DERIVED = (
    TEMPLATE
    + """
[[calculations]]
name = "hydraulic_kw"
unit = "kW"
range = [0.0, 50.0]
description = "Hydraulic power"
expression = "q * dp / 36"
inputs = { q = "flow", dp = "head_bar" }

[[calculations]]
name = "hot_flow"
unit = ""
expression = "hydraulic_kw * (bearing_temp > 60)"

[[calculations]]
name = "load_pct"
unit = "%"
expression = "100 * hydraulic_kw / rated_kw"

[[metrics]]
name = "avg_flow"
unit = "m3/h"
expression = "avg(flow)"
window = "5m"

[[metrics]]
name = "energy_kwh"
unit = "kWh"
expression = "twa(hydraulic_kw) * 5 / 60"
window = "5m"
grace = "30s"

[[alarms]]
measurement = "hydraulic_kw"
kind = "H"
limit = 40.0
"""
).replace(
    '[[measurements]]\nname = "bearing_temp"',
    '[[measurements]]\nname = "head_bar"\nunit = "bar"\n\n[[measurements]]\nname = "bearing_temp"',
)


def test_calculations_and_metrics_are_tags_of_every_instance(tmp_path: Path) -> None:
    model = load_asset_model(write(tmp_path, pump=DERIVED), tmp_path / "templates")
    (pump,) = model.equipment
    p = pump.path
    tags = {t.path: t for t in model.tags}
    assert (tags[f"{p}/hydraulic_kw"].unit, tags[f"{p}/hydraulic_kw"].eng_high) == ("kW", 50.0)
    assert tags[f"{p}/avg_flow"].unit == "m3/h"
    hydraulic, hot, load = model.calculations
    assert (dict(load.inputs), dict(load.constants)) == (
        {"hydraulic_kw": f"{p}/hydraulic_kw"},
        {"rated_kw": 7.5},  # the instance's value, not the template's 5.5
    )
    assert (hydraulic.path, dict(hydraulic.inputs)) == (
        f"{p}/hydraulic_kw",
        {"q": f"{p}/flow", "dp": f"{p}/head_bar"},
    )
    assert dict(hot.inputs) == {
        "hydraulic_kw": f"{p}/hydraulic_kw",
        "bearing_temp": f"{p}/bearing_temp",
    }
    avg, energy = model.metrics
    assert (avg.path, dict(avg.inputs), avg.window_ns, avg.grace_ns) == (
        f"{p}/avg_flow",
        {"flow": f"{p}/flow"},
        300 * 10**9,
        10 * 10**9,
    )
    assert (dict(energy.inputs), energy.grace_ns) == (
        {"hydraulic_kw": f"{p}/hydraulic_kw"},
        30 * 10**9,
    )
    assert f"{p}/hydraulic_kw.H" in {r.name for r in model.alarm_rules}


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('dp = "head_bar"', 'dp = "head"', "calculations.0.inputs (line 32): reads head: no"),
        (
            '"hydraulic_kw * (bearing_temp > 60)"',
            '"hydraulic_kw * (bearing > 60)"',
            "calculations.1.expression (line 37): reads bearing: no measurement, calculation or "
            "numeric attribute",
        ),
        (
            'dp = "head_bar"',
            'dp = "hot_flow"',
            "calculations.0.inputs (line 32): feeds itself: hydraulic_kw → hot_flow → hydraulic_kw",
        ),
        ('unit = "kW"\nrange', 'unit = "kw"\nrange', "calculations.0.unit (line 28): unknown unit"),
        (
            "q * dp / 36",
            "q * dp / 36 * z",
            "calculations.0.expression (line 31): unknown name 'z' at column 15",
        ),
        ('"avg(flow)"', '"avg(flows)"', "metrics.0.expression (line 47): unknown tag 'flows'"),
        ('"avg(flow)"', '"flow * 2"', "metrics.0.expression (line 47): 'flow' at column 1 needs"),
        ('window = "5m"\n\n', 'window = "0.5s"\n\n', "metrics.0.window (line 48): a window of 1s"),
        ('name = "avg_flow"', 'name = "flow"', "tags named twice"),
        (
            '"100 * hydraulic_kw / rated_kw"',
            '"100 * rated_kw"',
            "calculations.2.expression (line 42): reads no tag, only attributes",
        ),
        (
            "rated_kw = 5.5",
            'rated_kw = "big"',
            "calculations.2.expression (line 42): reads rated_kw: no measurement, calculation "
            "or numeric attribute",
        ),
    ],
)
def test_calculation_and_metric_problems_name_file_key_and_line(
    tmp_path: Path, old: str, new: str, words: str
) -> None:
    assert old in DERIVED
    with pytest.raises(ConfigError) as info:
        load_asset_model(write(tmp_path, pump=DERIVED.replace(old, new, 1)), tmp_path / "templates")
    assert any(p.startswith("pump.toml") and words in p for p in info.value.problems), (
        info.value.problems
    )


def test_an_instance_gives_numbers_to_the_attributes_its_calculations_read(
    tmp_path: Path,
) -> None:
    plant = write(tmp_path, PLANT.replace("rated_kw = 7.5", 'rated_kw = "big"'), pump=DERIVED)
    with pytest.raises(ConfigError) as info:
        load_asset_model(plant, tmp_path / "templates")
    assert any(
        "equipment.0.attributes (line 11): read by calculations, so numbers: rated_kw" in p
        for p in info.value.problems
    ), info.value.problems
