"""Load a TOML configuration file into :class:`ShopfloorConfig` with precise errors.

pydantic says *which* key is wrong; TOML parsers do not say *where* it is. A small line
locator maps each error's key path back to a line of the file, so a user reads
``historian.flush_interval_s (line 9): Input should be greater than 0``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from shopfloor.config.models import ShopfloorConfig
from shopfloor.errors import ConfigError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def load_config(path: Path) -> ShopfloorConfig:
    """Read and validate ``path``; relative paths inside become relative to its folder.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or not a valid config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration: {err.strerror}") from err
    return load_config_text(text, source=str(path)).resolve_paths(path.parent.resolve())


def load_config_text(text: str, *, source: str = "<config>") -> ShopfloorConfig:
    """Validate TOML ``text`` (paths are left as written)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        return ShopfloorConfig.model_validate(data)
    except ValidationError as err:
        lines = _KeyLines(text)
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"] if not _is_union_tag(p)]
            key = ".".join(loc) or "(top level)"
            line = lines.find(loc)
            where = f" (line {line})" if line else ""
            problems.append(f"  {key}{where}: {_message(e)}")
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count > 1 else ''} in the configuration",
            problems,
        ) from err


def _message(error: object) -> str:
    err = dict(error)  # type: ignore[call-overload]
    if err.get("type") == "extra_forbidden":
        return "unknown key (a typo? see the configuration reference in the README)"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the discriminator value ('duckdb') into loc for tagged unions.
    return part in {"duckdb"}


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
                if header.group(1) == "[[":
                    index = counters.get(parts, -1) + 1
                    counters[parts] = index
                    table = (*parts, str(index))
                else:
                    table = parts
                self._lines.setdefault(table, number)
                continue
            key = _KEY.match(raw)
            if key and not raw.lstrip().startswith("#"):
                parts = tuple(_unquote(p) for p in key.group(1).split("."))
                self._lines.setdefault((*table, *parts), number)

    def find(self, loc: Sequence[str]) -> int | None:
        """Return the line of ``loc`` or of its nearest written parent."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


def _unquote(part: str) -> str:
    return part.strip().strip("\"'")
