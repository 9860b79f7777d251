"""The files that describe a plant: equipment templates and the plant itself (ISA-95).

A **template** (one TOML file per equipment type) declares what every machine of the
type has: attributes with defaults, measured tags with unit and range, calculated tags,
metrics and alarm rules (the property kinds of an AWS IoT SiteWise asset model)::

    type = "cnc-mill"
    description = "3-axis CNC machining centre"

    [attributes]
    rated_kw = 18.0

    [[measurements]]
    name = "vibration_rms"
    unit = "mm/s"
    description = "Vibration velocity RMS"
    range = [0.0, 20.0]

    [[calculations]]                       # a tag computed from the machine's others
    name = "specific_energy"
    unit = "kWh/part"
    expression = "power_kw * cycle_time / 3600"

    [[metrics]]                            # one value per window from aggregates
    name = "parts_per_window"
    unit = "parts"
    expression = "last(part_count) - first(part_count)"
    window = "5m"

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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shopfloor.config.alarms import AlarmSpec, repeated
from shopfloor.config.durations import parse_duration_s
from shopfloor.model.expressions import (
    compile_expression,
    compile_window_expression,
    expression_names,
)
from shopfloor.model.units import is_known_unit

__all__ = [
    "AssetsSection",
    "CalculationEntry",
    "EquipmentEntry",
    "MeasurementEntry",
    "MetricEntry",
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


class _TagEntry(_Section):
    """What every tag of a template has: a name, a unit, a description, a range."""

    name: str = Field(description="The tag's name, the last segment of its path.")
    unit: str = Field("", description="Engineering unit (`kW`, `kWh/part`; `` for none).")
    description: str = Field("", description="What it is, for people.")
    range: tuple[float, float] | None = Field(None, description="Engineering range [low, high].")

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


class MeasurementEntry(_TagEntry):
    """A tag every machine of the type has."""

    data_type: Literal["float", "int", "bool", "string"] = Field("float")
    states: dict[str, str] = Field(
        default_factory=dict, description='Labels of integer values: `{ "1" = "running" }`.'
    )
    writable: bool = Field(
        False,
        description="A set point the platform may write (docs/writes.md): the machine page "
        "offers a Set control; the connector must still allow it and an admin enable it.",
    )

    @field_validator("states")
    @classmethod
    def _states(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"state {key!r}: states are keyed by integers")
        return value


class CalculationEntry(_TagEntry):
    """A calculated tag (SiteWise's transform): a value computed at every change of one of
    its inputs, from the last value of each, and stored and published like a measured one.
    """

    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Name in the expression → measurement, calculation or numeric attribute "
        "of the same equipment; empty: the expression names them directly.",
    )
    expression: str = Field(
        description="A number from the inputs: `power_kw * cycle_time / 3600` (+ - * /, "
        "abs min max sqrt, comparisons give 1 or 0)."
    )

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str, info: ValidationInfo) -> str:
        inputs: dict[str, str] = info.data.get("inputs") or {}
        names = expression_names(value)
        if inputs:
            unused = sorted(set(inputs) - names)
            if unused:
                raise ValueError(f"inputs not used by the expression: {', '.join(unused)}")
            names = set(inputs)
        compile_expression(value, names)  # names the fault and its column
        if not names:
            raise ValueError("a calculation reads at least one tag")
        return value

    @property
    def tag_inputs(self) -> dict[str, str]:
        """Name in the expression → what it reads: a tag (measurement or calculation) of
        the same equipment, or a numeric attribute (a tag of that name wins)."""
        return dict(self.inputs) or {n: n for n in sorted(expression_names(self.expression))}


class MetricEntry(_TagEntry):
    """A metric: one value per tumbling window (aligned to the epoch) from aggregates of the
    equipment's tags, computed once the window is over."""

    expression: str = Field(
        description="Over aggregates of measurements and calculations: `avg(power_kw)`, "
        "`last(part_count) - first(part_count)` (avg min max sum count first last delta twa)."
    )
    window: str = Field("5m", description="The window: `1m`, `5m`, `1h`, `1d` (1s to 1d).")
    grace: str = Field(
        "10s",
        description="How long after a window closes it is computed, for late points (at most 1h).",
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not 1 <= parse_duration_s(value) <= 86400:
            raise ValueError(f"a window of 1s to 1d, got {value!r}")
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        if parse_duration_s(value) > 3600:
            raise ValueError(f"a grace of at most 1h, got {value!r}")
        return value

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        compile_window_expression(value, expression_names(value))  # the form, not the tags
        return value

    @property
    def window_ns(self) -> int:
        """``window`` in nanoseconds."""
        return round(parse_duration_s(self.window) * 1e9)

    @property
    def grace_ns(self) -> int:
        """``grace`` in nanoseconds."""
        return round(parse_duration_s(self.grace) * 1e9)


class TemplateAlarm(AlarmSpec):
    """An alarm every machine of the type has, on one of its measurements."""

    measurement: str = Field(
        description="The measurement (or calculated tag, or metric) it watches."
    )


class TemplateFile(_Section):
    """One equipment type."""

    type: str = Field(description="The type's name, used by `template` in the plant file.")
    description: str = ""
    attributes: dict[str, Attribute] = Field(
        default_factory=dict, description="Static properties with their defaults."
    )
    measurements: list[MeasurementEntry] = Field(default_factory=list)
    calculations: list[CalculationEntry] = Field(
        default_factory=list, description="Calculated tags (`[[calculations]]`)."
    )
    metrics: list[MetricEntry] = Field(
        default_factory=list, description="Metrics per window (`[[metrics]]`)."
    )
    alarms: list[TemplateAlarm] = Field(default_factory=list)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _segment(value)

    @model_validator(mode="after")
    def _consistent(self) -> TemplateFile:
        names = [
            *(m.name for m in self.measurements),
            *(c.name for c in self.calculations),
            *(m.name for m in self.metrics),
        ]
        dupes = repeated(names)
        if dupes:
            raise ValueError(
                f"tags named twice (measurements, calculations, metrics): {', '.join(dupes)}"
            )
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

    @property
    def numeric_attributes(self) -> dict[str, float]:
        """The attributes a calculation may read as constants (numbers, not booleans)."""
        return {
            name: float(value)
            for name, value in self.attributes.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """What the calculations and metrics read that the template does not have, and
        calculations that feed themselves (directly or around a cycle), each with its key
        path (``load_model`` adds the line)."""
        measured = {m.name for m in self.measurements}
        calculated = {c.name: c.tag_inputs for c in self.calculations}
        numeric = set(self.numeric_attributes)
        problems: list[tuple[tuple[str, ...], str]] = []
        for i, calc in enumerate(self.calculations):
            key = ("calculations", str(i), "inputs" if calc.inputs else "expression")
            read = set(calc.tag_inputs.values())
            unknown = sorted(read - measured - set(calculated) - numeric)
            if unknown:
                problems.append(
                    (
                        key,
                        f"reads {', '.join(unknown)}: no measurement, calculation or "
                        "numeric attribute",
                    )
                )
            elif not read & (measured | set(calculated)):
                problems.append((key, "reads no tag, only attributes: it would never change"))
            cycle = _cycle(calc.name, calculated)
            if cycle:
                problems.append((key, f"feeds itself: {' → '.join(cycle)}"))
        for i, metric in enumerate(self.metrics):
            try:
                compile_window_expression(metric.expression, measured | set(calculated))
            except ValueError as err:
                problems.append((("metrics", str(i), "expression"), str(err)))
        return problems


def _cycle(start: str, graph: dict[str, dict[str, str]]) -> list[str]:
    """A path of calculations from ``start`` back to itself, or [] if there is none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, {}).values():
            if nxt == start:
                return [*path, start]
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return []


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
