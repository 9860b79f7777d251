"""Build the asset model from a plant file and its templates, checking that it holds.

Each equipment instance gets the tags (:class:`~shopfloor.model.TagMeta`) and alarm
rules (:class:`~shopfloor.server.rules.engine.AlarmRule`) its template declares, under
its own path ``enterprise/site/area/line/cell/equipment``. Calculated tags and metrics
are tags too (their metadata is in ``tags``); what computes them is listed apart
(``calculations``, ``metrics``) with their inputs resolved to full paths, for
:mod:`shopfloor.server.analytics`. What cannot be checked by a file alone is checked
here: every instance names an existing template, sets only attributes its template has
(numbers where a calculation reads them), and no two equipment share a path. Problems are collected
and raised together, each with the file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopfloor.config.assets import (
    Attribute,
    CalculationEntry,
    EquipmentEntry,
    MeasurementEntry,
    MetricEntry,
    PlantFile,
    TemplateAlarm,
    TemplateFile,
)
from shopfloor.config.load import key_line
from shopfloor.errors import ConfigError
from shopfloor.model import DataType, TagMeta
from shopfloor.model.expressions import compile_window_expression
from shopfloor.server.analytics.calc import Calculation
from shopfloor.server.analytics.metrics import Metric
from shopfloor.server.assets.files import SUFFIXES, load_file, read_document
from shopfloor.server.rules.engine import AlarmRule, rule_of

__all__ = ["AssetModel", "Equipment", "build_asset_model", "load_asset_model", "load_templates"]


@dataclass(frozen=True, slots=True)
class Equipment:
    """One machine of the plant."""

    path: str
    id: str
    template: str
    area: str
    line: str
    cell: str
    metadata: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Attribute] = field(default_factory=dict)
    connector: str | None = None
    bindings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssetModel:
    """The plant: its equipment, their tags and their alarm rules."""

    enterprise: str
    site: str
    equipment: tuple[Equipment, ...]
    tags: tuple[TagMeta, ...]
    alarm_rules: tuple[AlarmRule, ...]
    templates: dict[str, TemplateFile]
    calculations: tuple[Calculation, ...] = ()
    """Every machine's calculated tags, inputs resolved to paths."""
    metrics: tuple[Metric, ...] = ()
    """Every machine's metrics, inputs resolved to paths."""

    def connector_tags(self, connector: str) -> list[dict[str, Any]]:
        """The ``[[connectors.tags]]`` rows of ``connector``: each bound measurement of the
        equipment it reads, with its path and the template's unit, range, description and
        state labels, and the instance's binding (address, data type, scaling …).

        Raises:
            ConfigError: no equipment is read by ``connector``.
        """
        rows: list[dict[str, Any]] = []
        for eq in self.equipment:
            if eq.connector != connector:
                continue
            for m in self.templates[eq.template].measurements:
                row: dict[str, Any] = {
                    "name": m.name,
                    "path": f"{eq.path}/{m.name}",
                    "unit": m.unit,
                    "description": m.description,
                }
                if m.range is not None:
                    row["eng_low"], row["eng_high"] = m.range
                if m.states:
                    row["states"] = dict(m.states)
                rows.append({**row, **eq.bindings[m.name]})
        if not rows:
            known = sorted({eq.connector for eq in self.equipment if eq.connector})
            raise ConfigError(
                f"no equipment is read by connector {connector!r} (connectors: "
                f"{', '.join(known) or 'none'})"
            )
        return rows

    def tree(self) -> dict[str, Any]:
        """The ISA-95 tree as nested nodes: ``{"name", "level", "path", "children"}``;
        equipment carry their template, metadata, attributes and tag names."""
        root: dict[str, Any] = {
            "name": self.enterprise,
            "level": "enterprise",
            "path": self.enterprise,
            "children": [],
        }
        site = _child(root, self.site, "site")
        for eq in self.equipment:
            area = _child(site, eq.area, "area")
            line = _child(area, eq.line, "line")
            cell = _child(line, eq.cell, "cell")
            cell["children"].append(
                {
                    "name": eq.id,
                    "level": "equipment",
                    "path": eq.path,
                    "template": eq.template,
                    "metadata": eq.metadata,
                    "attributes": eq.attributes,
                    "tags": [m.name for m in self.templates[eq.template].measurements],
                    "children": [],
                }
            )
        return root


def _child(node: dict[str, Any], name: str, level: str) -> dict[str, Any]:
    for child in node["children"]:
        if child["name"] == name:
            return child  # type: ignore[no-any-return]
    child = {"name": name, "level": level, "path": f"{node['path']}/{name}", "children": []}
    node["children"].append(child)
    return child


def load_templates(folder: Path) -> dict[str, TemplateFile]:
    """Every template in ``folder`` (``*.toml``, ``*.yaml``, ``*.yml``), by type.

    Raises:
        ConfigError: the folder is missing, a file is invalid, or two files share a type.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder}: the templates folder does not exist")
    out: dict[str, TemplateFile] = {}
    problems: list[str] = []
    for path in template_files(folder):
        try:
            template = load_file(path, TemplateFile)
        except ConfigError as err:
            problems += [f"{path.name}: {p.strip()}" for p in err.problems]
            continue
        if template.type in out:
            problems.append(f"{path.name}: type {template.type!r} is declared twice")
        out[template.type] = template
    if problems:
        raise ConfigError(f"{folder}: {len(problems)} problem(s) in the templates", problems)
    return out


def load_asset_model(plant_path: Path, templates_dir: Path) -> AssetModel:
    """Read the plant file and the templates it uses, and build the model.

    Raises:
        ConfigError: every problem, with its file and line.
    """
    templates = load_templates(templates_dir)
    plant = load_file(plant_path, PlantFile)
    document = read_document(plant_path)
    return build_asset_model(
        plant, templates, source=plant_path.name, text=document.text, locate=document.locate
    )


def template_files(folder: Path) -> list[Path]:
    """The template files of ``folder`` (TOML or YAML), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def build_asset_model(
    plant: PlantFile,
    templates: dict[str, TemplateFile],
    *,
    source: str = "plant",
    text: str = "",
    locate: Callable[[Sequence[str]], int | None] | None = None,
) -> AssetModel:
    """The model of ``plant`` with ``templates``; ``locate`` finds a key's line in the
    plant's ``text`` when it is not TOML.

    Raises:
        ConfigError: an unknown template or attribute, or two equipment at one path.
    """
    problems: list[str] = []
    equipment: list[Equipment] = []
    tags: list[TagMeta] = []
    rules: list[AlarmRule] = []
    calculations: list[Calculation] = []
    metrics: list[Metric] = []
    paths: set[str] = set()

    def problem(i: int, key: str, message: str) -> None:
        loc = ["equipment", str(i), key]
        line = locate(loc) if locate else key_line(text, loc) if text else None
        where = f" (line {line})" if line else ""
        problems.append(f"{source}: equipment.{i}.{key}{where}: {message}")

    for i, entry in enumerate(plant.equipment):
        template = templates.get(entry.template)
        if template is None:
            known = ", ".join(sorted(templates)) or "none"
            problem(i, "template", f"no template {entry.template!r} (known: {known})")
            continue
        mismatch = _mismatch(entry, template)
        if mismatch is not None:
            problem(i, *mismatch)
            continue
        attributes = {**template.attributes, **entry.attributes}
        path = "/".join(
            (plant.enterprise, plant.site, entry.area, entry.line, entry.cell, entry.id)
        )
        if path in paths:
            problem(i, "id", f"{path} is already another equipment's path")
            continue
        paths.add(path)
        equipment.append(_equipment(entry, template, path))
        tags += [_tag(path, m) for m in template.measurements]
        tags += [_derived_tag(path, c) for c in template.calculations]
        tags += [_derived_tag(path, m) for m in template.metrics]
        calculations += [_calculation(path, c, template, attributes) for c in template.calculations]
        metrics += [_metric(path, m, template) for m in template.metrics]
        rules += [_rule(path, a) for a in template.alarms]
    if problems:
        count = len(problems)
        raise ConfigError(f"{source}: {count} problem{'s' if count > 1 else ''}", problems)
    return AssetModel(
        plant.enterprise,
        plant.site,
        tuple(equipment),
        tuple(tags),
        tuple(rules),
        templates,
        calculations=tuple(calculations),
        metrics=tuple(metrics),
    )


def _mismatch(entry: EquipmentEntry, template: TemplateFile) -> tuple[str, str] | None:
    """The first way ``entry`` does not fit its template, as (key, message); None if it fits."""
    unknown = sorted(set(entry.attributes) - set(template.attributes))
    if unknown:
        return "attributes", f"not attributes of {template.type}: {', '.join(unknown)}"
    wrong = _non_numeric(template, {**template.attributes, **entry.attributes})
    if wrong:
        return "attributes", f"read by calculations, so numbers: {', '.join(wrong)}"
    measured = [m.name for m in template.measurements]
    stray = sorted(set(entry.bindings) - set(measured))
    if stray:
        return "bindings", f"not measurements of {template.type}: {', '.join(stray)}"
    unbound = [m for m in measured if m not in entry.bindings]
    if entry.connector is not None and unbound:
        return "bindings", f"measurements without a binding: {', '.join(unbound)}"
    return None


def _equipment(entry: EquipmentEntry, template: TemplateFile, path: str) -> Equipment:
    metadata = {
        key: getattr(entry, key)
        for key in ("description", "location", "manufacturer", "serial", "criticality")
    }
    if not metadata["description"]:
        metadata["description"] = template.description
    return Equipment(
        path=path,
        id=entry.id,
        template=template.type,
        area=entry.area,
        line=entry.line,
        cell=entry.cell,
        metadata=metadata,
        attributes={**template.attributes, **entry.attributes},
        connector=entry.connector,
        bindings=entry.bindings,
    )


def _tag(equipment_path: str, m: MeasurementEntry) -> TagMeta:
    low, high = m.range if m.range is not None else (None, None)
    return TagMeta(
        path=f"{equipment_path}/{m.name}",
        unit=m.unit,
        description=m.description,
        data_type=DataType(m.data_type),
        eng_low=low,
        eng_high=high,
        states=tuple(sorted((int(k), v) for k, v in m.states.items())),
    )


def _derived_tag(equipment_path: str, entry: CalculationEntry | MetricEntry) -> TagMeta:
    low, high = entry.range if entry.range is not None else (None, None)
    return TagMeta(
        path=f"{equipment_path}/{entry.name}",
        unit=entry.unit,
        description=entry.description,
        data_type=DataType.FLOAT,
        eng_low=low,
        eng_high=high,
    )


def _calculation(
    equipment_path: str, c: CalculationEntry, template: TemplateFile, attributes: dict[str, Any]
) -> Calculation:
    """``c`` on one machine: tags as paths, attributes as the machine's values."""
    tags = {t.name for t in template.measurements} | {t.name for t in template.calculations}
    inputs = {n: f"{equipment_path}/{ref}" for n, ref in c.tag_inputs.items() if ref in tags}
    constants = {n: float(attributes[ref]) for n, ref in c.tag_inputs.items() if ref not in tags}
    return Calculation(f"{equipment_path}/{c.name}", c.expression, inputs, constants)


def _non_numeric(template: TemplateFile, attributes: dict[str, Any]) -> list[str]:
    """Attributes the template's calculations read whose value on a machine is no number."""
    tags = {t.name for t in template.measurements} | {t.name for t in template.calculations}
    read = {ref for c in template.calculations for ref in c.tag_inputs.values()} - tags
    return sorted(
        name
        for name in read
        if not isinstance(attributes.get(name), int | float) or isinstance(attributes[name], bool)
    )


def _metric(equipment_path: str, m: MetricEntry, template: TemplateFile) -> Metric:
    names = {t.name for t in template.measurements} | {c.name for c in template.calculations}
    read = compile_window_expression(m.expression, names).terms  # checked by the template
    inputs = {tag: f"{equipment_path}/{tag}" for _alias, _aggregate, tag in read}
    return Metric(f"{equipment_path}/{m.name}", m.expression, inputs, m.window_ns, m.grace_ns)


def _rule(equipment_path: str, a: TemplateAlarm) -> AlarmRule:
    tag = f"{equipment_path}/{a.measurement}"
    setpoint = None if a.setpoint is None else f"{equipment_path}/{a.setpoint}"
    inputs = {name: f"{equipment_path}/{m}" for name, m in a.inputs.items()}
    return rule_of(a, name=f"{tag}.{a.kind}", tag=tag, setpoint=setpoint, inputs=inputs)
