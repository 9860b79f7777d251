"""Tag lists from CSV, as PLC tools and spreadsheets export them.

The header names tag settings (``name``, ``address``, ``data_type``, ``scale``, ``unit`` …,
the same keys as a ``[[connectors.tags]]`` table). Empty cells take the default;
``states`` is written ``0=STOPPED;1=RUNNING``. Rows are validated with the connector's own
tag model, and a bad cell is reported by file, line and column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopfloor.errors import ConfigError


@dataclass
class CsvTags:
    """Rows of a tag CSV, each with the line it starts on."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def read_tag_csv(path: Path, *, where: str) -> CsvTags:
    """Read ``path`` into tag dictionaries (validation happens with the connector's model).

    Raises:
        ConfigError: the file cannot be read, has no ``name`` column, or a ``states`` cell
            is malformed.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            header = [h.strip() for h in reader.fieldnames or []]
            if "name" not in header:
                raise ConfigError(f"{where}: {path.name} needs a 'name' column, has {header}")
            out = CsvTags()
            for row in reader:
                line = reader.line_num
                cells = {
                    k.strip(): v.strip()
                    for k, v in row.items()
                    if k is not None and v is not None and v.strip() != ""
                }
                if not cells:
                    continue
                if None in row:
                    raise ConfigError(
                        f"{where}: {path.name} line {line} has more cells than columns"
                    )
                if "states" in cells:
                    cells["states"] = _states(cells["states"], f"{path.name} line {line}")
                out.rows.append(cells)
                out.lines.append(line)
            return out
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {path}: {err.strerror}") from err
    except (csv.Error, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: {path.name} is not a readable CSV file: {err}") from err


def _states(cell: str, where: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for part in cell.split(";"):
        key, sep, label = part.partition("=")
        if not sep or not key.strip().lstrip("-").isdigit() or not label.strip():
            raise ConfigError(
                f"{where}, column states: expected '0=STOPPED;1=RUNNING', got {cell!r}"
            )
        states[key.strip()] = label.strip()
    return states
