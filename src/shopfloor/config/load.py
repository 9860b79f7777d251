"""Load a TOML configuration file into a typed model with precise errors.

pydantic says *which* key is wrong; TOML parsers do not say *where* it is. A small line
locator maps each error's key path back to a line of the file, so a user reads
``historian.flush_interval_s (line 9): Input should be greater than 0``. Tags imported
from a CSV file (``tags_file``) are reported by the CSV's own line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shopfloor.config.edge import EdgeConfig
from shopfloor.config.models import ShopfloorConfig
from shopfloor.config.tagcsv import CsvTags, read_tag_csv
from shopfloor.errors import ConfigError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")
_UNION_TAGS = {"duckdb", "postgres", "simulator", "modbus", "s7", "opcua", "mqtt", "sparkplug"}


M = TypeVar("M", bound=BaseModel)


def load_config(path: Path) -> ShopfloorConfig:
    """Read and validate a platform configuration file (see :func:`load_model`)."""
    return load_model(path, ShopfloorConfig)


def load_edge_config(path: Path) -> EdgeConfig:
    """Read and validate an edge configuration file (see :func:`load_model`)."""
    return load_model(path, EdgeConfig)


def load_model(path: Path, model: type[M]) -> M:
    """Read and validate ``path``; relative paths inside become relative to its folder.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or not valid; every
            problem is named with its key path and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration: {err.strerror}") from err
    base = path.parent.resolve()
    loaded = load_config_text(text, source=str(path), model=model, base=base)
    resolver = getattr(loaded, "resolve_paths", None)
    resolved = resolver(base) if resolver else loaded
    _check_files(resolved, text, source=str(path))
    return _resolve_connector_files(resolved, base)


def _check_files(config: BaseModel, text: str, *, source: str) -> None:
    """Raise for settings naming files that cannot be used (the model's ``file_problems``:
    TLS certificates, credentials), each with its key and line."""
    check_file_problems(config, source=source, text=text)


def check_file_problems(
    config: BaseModel,
    *,
    source: str,
    text: str = "",
    locate: Callable[[Sequence[str]], int | None] | None = None,
) -> None:
    """Raise for what the model's ``file_problems`` finds (what a field validator cannot
    see: files named by settings, names one part of the file uses from another), each
    with its key and line; ``locate`` finds lines in a text that is not TOML (YAML).

    Raises:
        ConfigError: one or more problems, each named.
    """
    checker = getattr(config, "file_problems", None)
    found: list[tuple[tuple[str, ...], str]] = checker() if checker is not None else []
    if not found:
        return
    lines = _KeyLines(text) if locate is None else _Located(locate)
    problems = []
    for loc, message in found:
        line = lines.find(loc)
        problems.append(f"  {'.'.join(loc)}{f' (line {line})' if line else ''}: {message}")
    count = len(problems)
    raise ConfigError(
        f"{source}: {count} problem{'s' if count > 1 else ''} in the configuration", problems
    )


def _resolve_connector_files(config: M, base: Path) -> M:
    """Make relative file settings of connectors (certificates, keys, password files)
    relative to the configuration file rather than to the working directory."""
    connectors = getattr(config, "connectors", None)
    if not connectors:
        return config
    return config.model_copy(update={"connectors": [_relative_to(c, base) for c in connectors]})


def _relative_to(model: M, base: Path) -> M:
    update: dict[str, Any] = {}
    for name, value in model:
        if isinstance(value, Path) and not value.is_absolute():
            update[name] = base / value
        elif isinstance(value, BaseModel):
            fixed = _relative_to(value, base)
            if fixed is not value:
                update[name] = fixed
    return model.model_copy(update=update) if update else model


def load_config_text(
    text: str,
    *,
    source: str = "<config>",
    model: type[M] = ShopfloorConfig,  # type: ignore[assignment]
    base: Path | None = None,
) -> M:
    """Validate TOML ``text`` (paths are left as written; ``tags_file`` is read from ``base``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    imported = _import_tag_files(data, base or Path.cwd(), source=source)
    return validate_data(data, model, source=source, text=text, imported=imported)


def validate_data(
    data: dict[str, Any],
    model: type[M],
    *,
    source: str,
    text: str = "",
    imported: dict[tuple[int, int], tuple[Path, int]] | None = None,
    locate: Callable[[Sequence[str]], int | None] | None = None,
) -> M:
    """Validate already-parsed settings, raising one ConfigError that names every problem.

    ``locate`` finds a key path's line in a text that is not TOML (a YAML file's).
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = _KeyLines(text) if locate is None else _Located(locate)
        problems = [_describe(e, lines, imported or {}) for e in err.errors()]
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count > 1 else ''} in the configuration",
            problems,
        ) from err


def _import_tag_files(
    data: dict[str, Any], base: Path, *, source: str
) -> dict[tuple[int, int], tuple[Path, int]]:
    """Append each connector's ``tags_file`` rows to its ``tags``.

    Returns where each imported tag came from, keyed by (connector index, tag index).
    """
    origin: dict[tuple[int, int], tuple[Path, int]] = {}
    connectors = data.get("connectors")
    if not isinstance(connectors, list):
        return origin
    for ci, connector in enumerate(connectors):
        if not isinstance(connector, dict) or "tags_file" not in connector:
            continue
        file = Path(str(connector.pop("tags_file")))
        file = file if file.is_absolute() else base / file
        csv_tags: CsvTags = read_tag_csv(file, where=f"{source}: connectors[{ci}].tags_file")
        tags = connector.setdefault("tags", [])
        if not isinstance(tags, list):
            continue
        for row, line in zip(csv_tags.rows, csv_tags.lines, strict=True):
            origin[(ci, len(tags))] = (file, line)
            tags.append(row)
    return origin


def _describe(
    error: Any, lines: _KeyLines, imported: dict[tuple[int, int], tuple[Path, int]]
) -> str:
    loc = _strip_union_tags(error["loc"])
    key = ".".join(loc) or "(top level)"
    where = ""
    if len(loc) >= 4 and loc[0] == "connectors" and loc[2] == "tags":
        found = imported.get((int(loc[1]), int(loc[3])))
        if found:
            file, line = found
            column = ".".join(loc[4:]) or "(row)"
            return f"  {file.name} line {line}, column {column}: {_message(error)}"
    line_no = lines.find(loc)
    if line_no:
        where = f" (line {line_no})"
    return f"  {key}{where}: {_message(error)}"


def _strip_union_tags(loc: Sequence[Any]) -> list[str]:
    """Drop the discriminator values pydantic inserts after a tagged-union field."""
    out: list[str] = []
    for i, part in enumerate(loc):
        after_union = i > 0 and (loc[i - 1] == "historian" or isinstance(loc[i - 1], int))
        if not (after_union and part in _UNION_TAGS):
            out.append(str(part))
    return out


def _message(error: Any) -> str:
    if error.get("type") == "extra_forbidden":
        return "unknown key (a typo? see the configuration reference in the README)"
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def key_line(text: str, loc: Sequence[str]) -> int | None:
    """The line of TOML ``text`` where the key path ``loc`` (or its nearest parent) is."""
    return _KeyLines(text).find([str(part) for part in loc])


class _KeyLines:
    """Maps dotted key paths to the 1-based line where they are written."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        counters: dict[tuple[str, ...], int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(raw)
            if header:
                parts = tuple(_unquote(p) for p in header.group(2).split("."))
                parts = self._indexed(parts, counters)
                if header.group(1) == "[[":
                    index = counters.get(parts, -1) + 1
                    counters[parts] = index
                    table = (*parts, str(index))
                    # nested arrays of tables restart their count under a new parent
                    for key in [
                        k for k in counters if len(k) > len(table) and k[: len(table)] == table
                    ]:
                        del counters[key]
                else:
                    table = parts
                self._lines.setdefault(table, number)
                continue
            assignment = _KEY.match(raw)
            if assignment and not raw.lstrip().startswith("#"):
                names = tuple(_unquote(p) for p in assignment.group(1).split("."))
                for depth in range(1, len(names) + 1):  # `a.b = 1` also writes table `a`
                    self._lines.setdefault((*table, *names[:depth]), number)

    @staticmethod
    def _indexed(parts: tuple[str, ...], counters: dict[tuple[str, ...], int]) -> tuple[str, ...]:
        """Insert the current index of every enclosing array of tables into ``parts``."""
        out: list[str] = []
        for part in parts:
            out.append(part)
            key = tuple(out)
            if key in counters and len(out) < len(parts):
                out.append(str(counters[key]))
        return tuple(out)

    def find(self, loc: Sequence[str]) -> int | None:
        """Return the line of ``loc`` or of its nearest written parent."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


class _Located(_KeyLines):
    """Lines found by a format's own locator (YAML's node marks) instead of TOML's."""

    def __init__(self, locate: Callable[[Sequence[str]], int | None]) -> None:
        self._locate = locate

    def find(self, loc: Sequence[str]) -> int | None:
        """Return the line of ``loc`` or of its nearest written parent."""
        return self._locate(loc)


def _unquote(part: str) -> str:
    return part.strip().strip("\"'")
