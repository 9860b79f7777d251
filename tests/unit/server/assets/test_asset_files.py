"""Plant and template files in YAML: the same model as TOML, errors with file, key and
line; and the export that writes a plant back as files (both formats round-trip)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.cli_assets import export_plant
from shopfloor.errors import ConfigError
from shopfloor.server.assets import load_asset_model

DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))

TEMPLATE = """\
# A centrifugal pump
type: pump
description: Centrifugal pump
attributes:
  rated_kw: 5.5
measurements:
  - name: flow
    unit: m3/h
    range: [0.0, 60.0]
  - name: state
    data_type: int
    states: {1: running, 2: stopped}
  - name: bearing_temp
    unit: degC
alarms:
  - measurement: bearing_temp
    kind: H
    limit: 80.0
    on_delay: 30s
    priority: high
"""

PLANT = """\
enterprise: acme
site: plant-2
equipment:
  - id: p-01
    template: pump
    area: water
    line: cooling
    cell: pumps
    serial: KSB-1
    attributes: {rated_kw: 7.5}
"""


def write(tmp_path: Path, plant: str = PLANT, template: str = TEMPLATE) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "pump.yaml").write_text(template)
    (tmp_path / "plant.yml").write_text(plant)
    return tmp_path / "plant.yml"


def test_a_yaml_plant_and_template_load_like_toml(tmp_path: Path) -> None:
    model = load_asset_model(write(tmp_path), tmp_path / "templates")
    (pump,) = model.equipment
    assert pump.path == "acme/plant-2/water/cooling/pumps/p-01"
    assert pump.attributes == {"rated_kw": 7.5}
    state = next(t for t in model.tags if t.path.endswith("/state"))
    assert state.states == ((1, "running"), (2, "stopped"))  # integer keys read as text
    (rule,) = model.alarm_rules
    assert (rule.limit, rule.on_delay_s) == (80.0, 30.0)


@pytest.mark.parametrize(
    ("plant", "template", "words"),
    [
        (PLANT, TEMPLATE.replace("m3/h", "m3/hr"), "pump.yaml: measurements.0.unit (line 8)"),
        (
            PLANT,
            TEMPLATE.replace("    kind: H\n", ""),
            "pump.yaml: alarms.0.kind (line 16): Field required",
        ),
        (
            PLANT.replace("template: pump", "template: pumpp"),
            TEMPLATE,
            "equipment.0.template (line 5)",
        ),
        (PLANT.replace("area: water", "area: Water"), TEMPLATE, "equipment.0.area (line 6)"),
        (PLANT.replace("rated_kw: 7.5", "rpm: 2"), TEMPLATE, "equipment.0.attributes (line 10)"),
        (
            PLANT + "    serial: KSB-2\n",
            TEMPLATE,
            "equipment.0.serial (line 11): the key is written twice",
        ),
        (PLANT.replace("cell: pumps", "cell: [pumps"), TEMPLATE, "not valid YAML (line 9)"),
        ("- just\n- a list\n", TEMPLATE, "the top level must be a mapping"),
        # found by tests/fuzz: these used to escape as ValueError, RecursionError,
        # yaml.ReaderError or run for minutes
        (
            PLANT,
            TEMPLATE + "metrics:\n  - {name: avg_flow, expression: avg(flw), window: 15m}\n",
            "pump.yaml: metrics.0.expression (line 22): unknown tag 'flw'",
        ),
        (PLANT + "loop: &x [*x]\n", TEMPLATE, "loop.0 (line 11): an alias refers to"),
        (PLANT + "? [a, b]\n: 1\n", TEMPLATE, "a key must be a single value"),
        (PLANT + "x: \x1f\n", TEMPLATE, "not valid YAML"),
        (
            PLANT
            + "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, n in zip("abcd", "bcde", strict=True)
            )
            + "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
            TEMPLATE,
            "more than 100000 keys and list items once its aliases are expanded",
        ),
    ],
)
def test_yaml_problems_name_file_key_and_line(
    tmp_path: Path, plant: str, template: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_asset_model(write(tmp_path, plant, template), tmp_path / "templates")
    assert any(words in p for p in [str(info.value), *info.value.problems]), info.value.problems


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_the_export_round_trips_to_an_identical_model(
    tmp_path: Path, fmt: Literal["toml", "yaml"]
) -> None:
    original = load_asset_model(DEMO / "plant.toml", DEMO / "templates")
    out = tmp_path / "out"
    written = export_plant(DEMO / "plant.toml", DEMO / "templates", out, fmt=fmt)
    assert out / f"plant.{fmt}" in written
    assert len(written) == 1 + len(original.templates)
    again = load_asset_model(out / f"plant.{fmt}", out / "templates")
    assert again == original
    if fmt == "toml":  # a file already in the format is copied with its comments
        assert (out / "plant.toml").read_text() == (DEMO / "plant.toml").read_text()
    # and back again: YAML → TOML → the same model
    back = tmp_path / "back"
    export_plant(out / f"plant.{fmt}", out / "templates", back, fmt="toml")
    assert load_asset_model(back / "plant.toml", back / "templates") == original


def test_assets_export_writes_files_that_assets_check_passes(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "mine"
    done = runner.invoke(app, ["assets", "export", "--out", str(out), "--format", "yaml"])
    assert done.exit_code == 0, done.output
    check = runner.invoke(app, ["assets", "check", "--plant", str(out / "plant.yaml")])
    assert check.exit_code == 0, check.output
    assert "10 equipment" in check.output
    again = runner.invoke(app, ["assets", "export", "--out", str(out), "--format", "yaml"])
    assert again.exit_code == 2
    assert "--force" in again.output
    wrong = runner.invoke(app, ["assets", "export", "--out", str(out), "--format", "json"])
    assert wrong.exit_code == 2
