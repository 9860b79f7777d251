"""The asset model's files in TOML or YAML: read with the line of every key, written back.

TOML is the default and what the API edits (comments and layout kept, see
:mod:`.toml_edit`). A plant or template file may also be YAML (``.yaml``/``.yml``) with
the same keys; its problems are named with file, key and line like TOML's. YAML is read
with PyYAML's safe loader from its node tree (``compose``), which carries each key's
line, and with two TOML rules kept so one model means one thing in both formats: keys are
always text (``states: {1: running}`` is ``"1"``), and a key written twice in one
mapping is an error rather than the last one silently winning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomlkit
import yaml
from pydantic import BaseModel
from tomlkit.items import AoT, InlineTable, Table

from shopfloor.config.load import check_file_problems, key_line, load_model, validate_data
from shopfloor.errors import ConfigError

__all__ = [
    "SUFFIXES",
    "Document",
    "Format",
    "file_format",
    "load_file",
    "parse_text",
    "read_document",
    "render",
    "toml_table",
]

Format = Literal["toml", "yaml"]
M = TypeVar("M", bound=BaseModel)
Locate = Callable[[Sequence[str]], int | None]

SUFFIXES: dict[str, Format] = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
"""The file name endings of asset files and their formats."""


def file_format(path: Path) -> Format:
    """The format of ``path`` by its ending (TOML unless ``.yaml`` or ``.yml``)."""
    return SUFFIXES.get(path.suffix.lower(), "toml")


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: its data, its text, and where each key is written.

    Attributes:
        data: the top-level table.
        text: the file as read.
        format: ``toml`` or ``yaml``.
        locate: the 1-based line of a key path (``["equipment", "3", "area"]``) or of its
            nearest written parent; None if unknown.
    """

    data: dict[str, Any]
    text: str
    format: Format
    locate: Locate


def read_document(path: Path) -> Document:
    """Read and parse ``path`` (by its ending).

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML/YAML (line named).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    return parse_text(text, fmt=file_format(path), source=str(path))


def parse_text(text: str, *, fmt: Format, source: str) -> Document:
    """Parse ``text`` as ``fmt``.

    Raises:
        ConfigError: not valid TOML/YAML, a key written twice, or not a table at the top.
    """
    if fmt == "toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML: {err}") from err
        return Document(data, text, "toml", lambda loc: key_line(text, loc))
    data, lines = _parse_yaml(text, source)
    return Document(data, text, "yaml", _locator(lines))


def load_file(path: Path, model: type[M]) -> M:
    """Read ``path`` (TOML or YAML) and validate it as ``model``.

    Raises:
        ConfigError: every problem, with its key path and line.
    """
    if file_format(path) == "toml":  # exactly the configuration loader's errors
        return load_model(path, model)
    document = read_document(path)
    loaded = validate_data(
        document.data, model, source=str(path), text=document.text, locate=document.locate
    )
    # the cross-checks load_model runs for TOML (a metric reading an unknown tag, a
    # calculation feeding itself): without them a YAML template passed and broke later
    check_file_problems(loaded, source=str(path), text=document.text, locate=document.locate)
    return loaded


def render(data: dict[str, Any], fmt: Format) -> str:
    """``data`` as a file of ``fmt``; nested tables of arrays are written inline in TOML
    (``attributes = { rated_kw = 22.0 }``), as people write plant files."""
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    document = tomlkit.document()
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables = AoT([])
            for row in value:
                table = tomlkit.table()
                for k, v in row.items():
                    table.add(k, _inline(v))
                tables.append(table)
            document.add(key, tables)
        elif isinstance(value, dict):
            table = tomlkit.table()
            for k, v in value.items():
                table.add(k, _inline(v))
            document.add(tomlkit.nl())
            document.add(key, table)
        else:
            document.add(key, value)
    return tomlkit.dumps(document)


def _inline(value: Any) -> Any:
    """Dicts as inline tables (recursively), anything else as it is."""
    if isinstance(value, dict):
        table: InlineTable = tomlkit.inline_table()
        for k, v in value.items():
            table.append(k, _inline(v))
        return table
    if isinstance(value, list):
        return [_inline(v) for v in value]
    return value


def toml_table(value: dict[str, Any]) -> Table:
    """One ``[[equipment]]`` row as a tomlkit table (nested values inline)."""
    table = tomlkit.table()
    for k, v in value.items():
        table.add(k, _inline(v))
    return table


# ---------------------------------------------------------------------------- YAML


_MAX_ENTRIES = 100_000
"""Most keys and list items a YAML file may hold once its aliases are expanded: far above
any plant, far below the billions a few lines of nested aliases make (a "billion laughs")."""


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        lines: dict[tuple[str, ...], int] = {}
        _lines_of(node, (), lines, source, _Walk())
        data = _text_keys(loader.construct_document(node))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from err
    except RecursionError as err:  # PyYAML composes and constructs recursively
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from err
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    return data, lines


@dataclass
class _Walk:
    """What :func:`_lines_of` has seen: entries so far, and the nodes it is inside (an
    alias to one of them makes the document contain itself)."""

    entries: int = 0
    inside: set[int] = field(default_factory=set)


def _lines_of(
    node: yaml.Node,
    path: tuple[str, ...],
    out: dict[tuple[str, ...], int],
    source: str,
    walk: _Walk,
) -> None:
    """Record the line of every key and list item under ``node``; refuse repeated keys,
    documents that contain themselves and alias bombs."""
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    if id(node) in walk.inside:
        line = node.start_mark.line + 1
        raise ConfigError(
            f"{source}: {'.'.join(path) or '(top level)'} (line {line}): an alias refers to "
            "a mapping or list that contains it"
        )
    walk.inside.add(id(node))
    children: list[tuple[yaml.Node, yaml.Node]] = (
        node.value if isinstance(node, yaml.MappingNode) else [(item, item) for item in node.value]
    )
    for i, (key, value) in enumerate(children):
        walk.entries += 1
        if walk.entries > _MAX_ENTRIES:
            raise ConfigError(
                f"{source}: more than {_MAX_ENTRIES} keys and list items once its aliases "
                "are expanded"
            )
        if isinstance(node, yaml.MappingNode) and not isinstance(key, yaml.ScalarNode):
            raise ConfigError(
                f"{source}: {'.'.join(path) or '(top level)'} (line {key.start_mark.line + 1}): "
                "a key must be a single value, not a mapping or list"
            )
        name = str(key.value) if isinstance(node, yaml.MappingNode) else str(i)
        here = (*path, name)
        if isinstance(node, yaml.MappingNode) and here in out:
            line = key.start_mark.line + 1
            dotted = ".".join(here)
            raise ConfigError(f"{source}: {dotted} (line {line}): the key is written twice")
        out[here] = key.start_mark.line + 1
        _lines_of(value, here, out, source, walk)
    walk.inside.discard(id(node))


def _locator(lines: dict[tuple[str, ...], int]) -> Locate:
    def locate(loc: Sequence[str]) -> int | None:
        path = tuple(str(part) for part in loc)
        while path:
            if path in lines:
                return lines[path]
            path = path[:-1]
        return None

    return locate


def _text_keys(value: Any) -> Any:
    """Mapping keys as text, as TOML's always are."""
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_keys(v) for v in value]
    return value
