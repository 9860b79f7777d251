"""Which machines a simulated plant has and where they sit in the ISA-95 tree.

A layout is plain data: an enterprise, a site and a tuple of :class:`MachineSpec`. The
demo plant is the asset model's ``shopfloor/demo_plant/plant.toml`` (its templates are
named after the simulator's kinds, :func:`layout_of_plant_file`); :func:`load_layout`
reads the format below from any file.

Format::

    enterprise = "acme"
    site = "plant-1"

    [[machine]]
    id = "cnc-01"               # unique in the plant; also seeds the machine's randomness
    kind = "cnc-mill"           # see MachineKind
    area = "machining"
    line = "line-1"
    cell = "cell-1"
    # rated_kw = 18.0           # optional overrides of the kind's profile
    # ideal_cycle_s = 60.0
    # feeds = ["cnc-01"]        # energy meters: ids of the metered machines (default: all)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from shopfloor.errors import ConfigError
from shopfloor.simulator.profiles import MachineKind

_SEGMENT = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One simulated machine.

    Attributes:
        id: equipment name, unique in the plant (lower case, digits, hyphens).
        kind: what the machine is.
        area: ISA-95 area, e.g. ``machining``.
        line: ISA-95 line (or, for utilities, a system such as ``air``).
        cell: ISA-95 work cell (or a group such as ``compressors``).
        rated_kw: overrides the kind's electrical rating.
        ideal_cycle_s: overrides the kind's ideal cycle time (parts-making kinds only).
        feeds: energy meters only: ids of the machines metered; empty means all others.
    """

    id: str
    kind: MachineKind
    area: str
    line: str
    cell: str
    rated_kw: float | None = None
    ideal_cycle_s: float | None = None
    feeds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("id", "area", "line", "cell"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SEGMENT.match(value):
                raise ValueError(
                    f"{name} {value!r} must be lower-case letters and digits joined by hyphens"
                )
        if self.rated_kw is not None and not self.rated_kw > 0:
            raise ValueError(f"rated_kw must be positive, not {self.rated_kw}")
        if self.ideal_cycle_s is not None and not self.ideal_cycle_s > 0:
            raise ValueError(f"ideal_cycle_s must be positive, not {self.ideal_cycle_s}")
        if self.feeds and self.kind is not MachineKind.ENERGY_METER:
            raise ValueError("only energy meters have feeds")


@dataclass(frozen=True, slots=True)
class PlantLayout:
    """A plant: enterprise and site names and its machines, in tag order.

    Attributes:
        enterprise: first path segment, e.g. ``acme``.
        site: second path segment, e.g. ``plant-1``.
        machines: the machines; the order only decides the order of tags.
    """

    enterprise: str
    site: str
    machines: tuple[MachineSpec, ...]

    def __post_init__(self) -> None:
        for name in ("enterprise", "site"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SEGMENT.match(value):
                raise ValueError(
                    f"{name} {value!r} must be lower-case letters and digits joined by hyphens"
                )
        ids = [m.id for m in self.machines]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"machine ids must be unique: {', '.join(dupes)}")
        kinds = {m.id: m.kind for m in self.machines}
        for m in self.machines:
            for fed in m.feeds:
                if fed not in kinds:
                    raise ValueError(f"meter {m.id} feeds unknown machine {fed!r}")
                if kinds[fed] is MachineKind.ENERGY_METER:
                    raise ValueError(f"meter {m.id} feeds another meter ({fed})")

    def equipment_path(self, machine: MachineSpec) -> str:
        """Return ``enterprise/site/area/line/cell/equipment`` of ``machine``."""
        return "/".join(
            (self.enterprise, self.site, machine.area, machine.line, machine.cell, machine.id)
        )

    def machine(self, machine_id: str) -> MachineSpec:
        """Return the machine called ``machine_id``.

        Raises:
            KeyError: no machine has that id.
        """
        for m in self.machines:
            if m.id == machine_id:
                return m
        raise KeyError(machine_id)

    def meter_feeds(self, meter: MachineSpec) -> tuple[str, ...]:
        """Return the ids a meter measures: its ``feeds``, or every machine that is no meter."""
        if meter.feeds:
            return meter.feeds
        return tuple(m.id for m in self.machines if m.kind is not MachineKind.ENERGY_METER)


def parse_layout(data: dict[str, Any]) -> PlantLayout:
    """Build a layout from parsed TOML (or any mapping of the same shape).

    Raises:
        ConfigError: one problem per bad key, each naming its key path.
    """
    problems: list[str] = []
    allowed = {"enterprise", "site", "machine"}
    problems += [f"{key}: unknown key" for key in sorted(set(data) - allowed)]
    for key in ("enterprise", "site"):
        if not isinstance(data.get(key), str):
            problems.append(f"{key}: required, a string")
    raw = data.get("machine", [])
    if not isinstance(raw, list) or not raw:
        problems.append("machine: required, an array of tables ([[machine]])")
        raw = []
    known = {f.name for f in fields(MachineSpec)}
    machines: list[MachineSpec] = []
    for i, entry in enumerate(raw):
        where = f"machine[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        extra = sorted(set(entry) - known)
        problems += [f"{where}.{key}: unknown key" for key in extra]
        missing = [k for k in ("id", "kind", "area", "line", "cell") if k not in entry]
        problems += [f"{where}.{key}: required" for key in missing]
        if extra or missing:
            continue
        try:
            kind = MachineKind(entry["kind"])
        except ValueError:
            choices = ", ".join(k.value for k in MachineKind)
            problems.append(f"{where}.kind: {entry['kind']!r} is not one of {choices}")
            continue
        args = dict(entry, kind=kind, feeds=tuple(entry.get("feeds", ())))
        try:
            machines.append(MachineSpec(**args))
        except (TypeError, ValueError) as err:
            problems.append(f"{where}: {err}")
    if not problems:
        try:
            return PlantLayout(data["enterprise"], data["site"], tuple(machines))
        except ValueError as err:
            problems.append(str(err))
    raise ConfigError("invalid plant layout", problems)


def load_layout(path: str | Path) -> PlantLayout:
    """Read a layout from a TOML file.

    Raises:
        ConfigError: the file is unreadable, not TOML, or describes no valid plant.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read plant layout {path}: {err}") from err
    try:
        return parse_layout(data)
    except ConfigError as err:
        raise ConfigError(f"invalid plant layout {path}", err.problems) from err


def layout_of_plant_file(data: dict[str, Any]) -> PlantLayout:
    """The layout of an asset-model plant file (``[[equipment]]`` from templates) whose
    template names are simulator kinds; ``rated_kw``, ``ideal_cycle_s`` and ``feeds``
    come from an instance's ``attributes`` (otherwise the kind's profile decides).

    Raises:
        ConfigError: as :func:`parse_layout`, with ``machine[i]`` for ``equipment[i]``.
    """
    machines = []
    for entry in data.get("equipment", []):
        attributes = entry.get("attributes", {})
        machine = {key: entry[key] for key in ("id", "area", "line", "cell") if key in entry}
        machine["kind"] = entry.get("template")
        machine.update(
            {k: attributes[k] for k in ("rated_kw", "ideal_cycle_s", "feeds") if k in attributes}
        )
        machines.append(machine)
    return parse_layout(
        {"enterprise": data.get("enterprise"), "site": data.get("site"), "machine": machines}
    )


def default_layout() -> PlantLayout:
    """Return the demo plant: two lines of ten machines with utilities, as described for
    the asset model in ``shopfloor/demo_plant/plant.toml``."""
    text = (
        resources.files("shopfloor").joinpath("demo_plant/plant.toml").read_text(encoding="utf-8")
    )
    return layout_of_plant_file(tomllib.loads(text))
