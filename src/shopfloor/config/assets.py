"""The files that describe a plant: equipment templates and the plant itself (ISA-95).

A **template** (one TOML file per equipment type) declares what every machine of the
type has: attributes with defaults, measured tags with unit and range, and alarm rules::

    type = "cnc-mill"
    description = "3-axis CNC machining centre"

    [attributes]
    rated_kw = 18.0

    [[measurements]]
    name = "vibration_rms"
    unit = "mm/s"
    description = "Vibration velocity RMS"
    range = [0.0, 20.0]

    [[alarms]]
    measurement = "vibration_rms"
    kind = "H"
    limit = 4.5
    priority = "medium"

The **plant** file places instances: each is one line (plus metadata)::

    enterprise = "acme"
    site = "plant-1"

    [[equipment]]
    id = "cnc-01"
    template = "cnc-mill"
    area = "machining"
    line = "line-1"
    cell = "cell-1"
    manufacturer = "DMG Mori"
    criticality = "high"
    attributes = { rated_kw = 22.0 }
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.alarms import AlarmSpec, repeated
from shopfloor.model.units import is_known_unit

__all__ = [
    "AssetsSection",
    "EquipmentEntry",
    "MeasurementEntry",
    "PlantFile",
    "TemplateAlarm",
    "TemplateFile",
]

SEGMENT = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
Attribute = str | float | int | bool | list[str]


def _segment(value: str) -> str:
    if not SEGMENT.match(value):
        raise ValueError(
            f"{value!r} must be lower-case letters and digits joined by '-' or '_' "
            "(a segment of a tag path)"
        )
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasurementEntry(_Section):
    """A tag every machine of the type has."""

    name: str = Field(description="The tag's name, the last segment of its path.")
    unit: str = Field("", description="Engineering unit (`degC`, `kW`, `mm/s`; `` for none).")
    description: str = Field("", description="What it is, for people.")
    data_type: Literal["float", "int", "bool", "string"] = Field("float")
    range: tuple[float, float] | None = Field(None, description="Engineering range [low, high].")
    states: dict[str, str] = Field(
        default_factory=dict, description='Labels of integer values: `{ "1" = "running" }`.'
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _segment(value)

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if not is_known_unit(value):
            raise ValueError(f"unknown unit {value!r} (units are case-sensitive: kW, degC)")
        return value

    @field_validator("range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("a range is [low, high] with low < high")
        return value

    @field_validator("states")
    @classmethod
    def _states(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"state {key!r}: states are keyed by integers")
        return value


class TemplateAlarm(AlarmSpec):
    """An alarm every machine of the type has, on one of its measurements."""

    measurement: str = Field(description="The measurement it watches.")


class TemplateFile(_Section):
    """One equipment type."""

    type: str = Field(description="The type's name, used by `template` in the plant file.")
    description: str = ""
    attributes: dict[str, Attribute] = Field(
        default_factory=dict, description="Static properties with their defaults."
    )
    measurements: list[MeasurementEntry] = Field(default_factory=list)
    alarms: list[TemplateAlarm] = Field(default_factory=list)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _segment(value)

    @model_validator(mode="after")
    def _consistent(self) -> TemplateFile:
        names = [m.name for m in self.measurements]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"measurements named twice: {', '.join(dupes)}")
        for i, alarm in enumerate(self.alarms):
            if alarm.measurement not in names:
                raise ValueError(
                    f"alarms[{i}] watches {alarm.measurement!r}, which is no measurement"
                )
            unknown = sorted(set(alarm.inputs.values()) - set(names))
            if unknown:
                raise ValueError(f"alarms[{i}] reads {', '.join(unknown)}: no measurements")
            if alarm.setpoint is not None and alarm.setpoint not in names:
                raise ValueError(
                    f"alarms[{i}] deviates from {alarm.setpoint!r}, which is no measurement"
                )
        keys = [(a.measurement, a.kind) for a in self.alarms]
        if len(set(keys)) != len(keys):
            raise ValueError("two alarms of one kind on one measurement")
        return self


class EquipmentEntry(_Section):
    """One machine: its template, its place in the ISA-95 tree, its metadata."""

    id: str = Field(description="Equipment name, the last segment of its path.")
    template: str = Field(description="The equipment type (a template's `type`).")
    area: str
    line: str
    cell: str
    description: str = ""
    location: str = ""
    manufacturer: str = ""
    serial: str = ""
    criticality: Literal["low", "medium", "high", "critical"] = "medium"
    attributes: dict[str, Attribute] = Field(
        default_factory=dict, description="Values for the template's attributes."
    )
    connector: str | None = Field(
        None,
        description="The edge connector that reads this machine (its `name` in the edge "
        "configuration); then every measurement needs a binding.",
    )
    bindings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per measurement, the connector's tag settings: `address`, `data_type`, "
        "`scale`, … (the keys of `[[connectors.tags]]`).",
    )

    @model_validator(mode="after")
    def _bound_with_a_connector(self) -> EquipmentEntry:
        if self.bindings and self.connector is None:
            raise ValueError("bindings need the connector that reads them")
        return self

    @field_validator("id", "template", "area", "line", "cell")
    @classmethod
    def _segments(cls, value: str) -> str:
        return _segment(value)


class PlantFile(_Section):
    """A site and its equipment."""

    enterprise: str
    site: str
    equipment: list[EquipmentEntry] = Field(min_length=1)

    @field_validator("enterprise", "site")
    @classmethod
    def _segments(cls, value: str) -> str:
        return _segment(value)

    @model_validator(mode="after")
    def _unique(self) -> PlantFile:
        dupes = repeated([e.id for e in self.equipment])
        if dupes:
            raise ValueError(f"equipment ids used twice: {', '.join(dupes)}")
        return self


class AssetsSection(_Section):
    """Where the plant's description lives (``[assets]``)."""

    plant: Path | None = Field(
        None,
        description="The plant file (ISA-95 equipment from templates; TOML, or YAML as "
        "`.yaml`/`.yml`); relative to the configuration file. Edits through the API are "
        "written back to it. None: no asset model (the demo uses its own plant).",
    )
    templates: Path | None = Field(
        None,
        description="Folder of equipment templates (`*.toml`, `*.yaml`, `*.yml`); default: "
        "`templates` beside the plant file.",
    )

    def relative_to(self, base: Path) -> AssetsSection:
        """A copy with relative paths made absolute against ``base``."""
        plant = self.plant if self.plant is None or self.plant.is_absolute() else base / self.plant
        templates = self.templates
        if templates is not None and not templates.is_absolute():
            templates = base / templates
        return self.model_copy(update={"plant": plant, "templates": templates})

    @property
    def templates_dir(self) -> Path | None:
        """The template folder in use."""
        if self.templates is not None:
            return self.templates
        return None if self.plant is None else self.plant.parent / "templates"
