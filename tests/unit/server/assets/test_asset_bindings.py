"""Bindings: a plant file says which connector reads each machine and where each
measurement sits; ``shopfloor assets tags`` writes the connector's tag list from it, and
an edge configuration reads that list back with the plant's paths and units."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import load_edge_config

TEMPLATE = """\
type = "pump"
description = "Centrifugal pump"

[[measurements]]
name = "flow"
unit = "m3/h"
range = [0.0, 60.0]

[[measurements]]
name = "state"
data_type = "int"
states = { "0" = "stopped", "1" = "running" }
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
connector = "plc-1"
bindings.flow = { address = "hr:100", data_type = "int16", scale = 0.1 }
bindings.state = { address = "hr:101", data_type = "uint16" }

[[equipment]]
id = "p-02"
template = "pump"
area = "water"
line = "cooling"
cell = "pumps"
connector = "plc-1"
bindings.flow = { address = "hr:200", data_type = "int16", scale = 0.1 }
bindings.state = { address = "hr:201", data_type = "uint16" }
"""

EDGE = """\
[edge]
id = "edge-water"

[uplink]
url = "http://127.0.0.1:8000"

[[connectors]]
kind = "modbus"
name = "plc-1"
host = "10.0.0.7"
tags_file = "plc-1.csv"
"""


def plant(tmp_path: Path, text: str = PLANT) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "pump.toml").write_text(TEMPLATE)
    (tmp_path / "plant.toml").write_text(text)
    return tmp_path / "plant.toml"


def test_the_edge_reads_the_tags_the_plant_binds(tmp_path: Path) -> None:
    path = plant(tmp_path)
    runner = CliRunner()
    checked = runner.invoke(app, ["assets", "check", "--plant", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "2 equipment, 4 tags, 0 alarms" in checked.output
    out = tmp_path / "plc-1.csv"
    made = runner.invoke(
        app, ["assets", "tags", "--plant", str(path), "--connector", "plc-1", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    (tmp_path / "edge.toml").write_text(EDGE)
    (connector,) = load_edge_config(tmp_path / "edge.toml").connectors
    tags = {t.path: t for t in connector.tags}  # type: ignore[attr-defined]
    flow = tags["acme/plant-2/water/cooling/pumps/p-02/flow"]
    assert (flow.address, flow.data_type, flow.scale, flow.unit) == ("hr:200", "int16", 0.1, "m3/h")
    assert (flow.eng_low, flow.eng_high) == (0.0, 60.0)
    state = tags["acme/plant-2/water/cooling/pumps/p-01/state"]
    assert state.states == {"0": "stopped", "1": "running"}
    assert len(tags) == 4


def test_unbound_measurements_and_unknown_connectors_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    unbound = plant(
        tmp_path,
        PLANT.replace('bindings.state = { address = "hr:101", data_type = "uint16" }\n', ""),
    )
    result = runner.invoke(app, ["assets", "check", "--plant", str(unbound)])
    assert result.exit_code == 2
    assert "equipment.0.bindings (line 11): measurements without a binding: state" in result.output
    path = plant(tmp_path)
    result = runner.invoke(app, ["assets", "tags", "--plant", str(path), "--connector", "plc-9"])
    assert result.exit_code == 2
    assert "no equipment is read by connector 'plc-9' (connectors: plc-1)" in result.output
    stray = plant(tmp_path, PLANT.replace("bindings.flow =", "bindings.flux =", 1))
    result = runner.invoke(app, ["assets", "check", "--plant", str(stray)])
    assert "not measurements of pump: flux" in result.output
