"""Read the dashboard's string tables out of its ES modules, and cut locale tables out.

The English text of every string stays in the JS modules (``static/js/i18n.js`` and
``static/js/strings/*.js``): developers add a key where they use it, in the ``en`` table of
``STRINGS = {...}`` or of ``registerStrings({...})``. The translations live in gettext
catalogues (:mod:`shopfloor.server.web.catalogue_tools`), which read those tables with
this module. There is no JavaScript toolchain on the server, so this is a small parser for
the subset the tables use: an object literal of locale tags, each an object literal of
quoted keys and string literals, with comments and trailing commas. Anything else (a
template literal, a concatenation, a computed value) is refused with the file and line,
because a string the parser cannot read is a string that never gets translated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from shopfloor.errors import ShopfloorError

__all__ = ["JsTable", "StringModule", "StringTableError", "read_module", "remove_tables"]

# Where a module's table starts: i18n.js's own `const STRINGS = {` and each page's
# `registerStrings({`.
_START = re.compile(r"(?:\bconst\s+STRINGS\s*=\s*|\bregisterStrings\(\s*)(?=\{)")
_IDENT = re.compile(r"[A-Za-z_$][\w$-]*")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class StringTableError(ShopfloorError):
    """A strings module the parser cannot read: names the file and line."""


@dataclass(frozen=True)
class JsTable:
    """One locale's table in a module: its strings in source order and where it sits.

    ``start``/``end`` span the property (``"zh-CN": {...},`` with its indentation and
    line end), so cutting ``text[start:end]`` removes it cleanly.
    """

    locale: str
    strings: dict[str, str]
    start: int
    end: int


@dataclass(frozen=True)
class StringModule:
    """A module's tables by locale tag (``en``, ``zh-CN`` …)."""

    path: Path
    tables: dict[str, JsTable]


class _Parser:
    """A cursor over one module's text with the few JS tokens a strings table uses."""

    def __init__(self, path: Path, text: str, pos: int) -> None:
        self.path = path
        self.text = text
        self.pos = pos

    def fail(self, what: str, at: int | None = None) -> StringTableError:
        line = self.text.count("\n", 0, self.pos if at is None else at) + 1
        return StringTableError(f"{self.path}:{line}: {what}")

    def skip(self) -> None:
        """Skip white space and comments."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace():
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = self.text[self.pos : self.pos + 20].split("\n")[0] or "the end of the file"
            raise self.fail(f"expected {char!r}, found {found!r}")
        self.pos += 1

    def name(self) -> str:
        """A property name: a quoted string or a bare identifier."""
        if self.peek() in "\"'":
            return self.string()
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a property name")
        self.pos = match.end()
        return match.group()

    def string(self) -> str:
        """A single- or double-quoted JS string literal, decoded."""
        self.skip()
        quote = self.text[self.pos : self.pos + 1]
        if quote not in ("'", '"'):
            what = "a template literal" if quote == "`" else "a value that is not a plain string"
            raise self.fail(f"{what}: the strings tables hold string literals only")
        start = self.pos
        out: list[str] = []
        i = self.pos + 1
        text = self.text
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.fail("unterminated string", start)
            char = text[i]
            if char == quote:
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            try:
                i = self._escape(i, out)
            except ValueError as err:
                raise self.fail(f"a bad escape {text[i : i + 6]!r}", i) from err
        self.pos = i + 1
        if self.peek() == "+":
            raise self.fail("a concatenated string: write it as one literal")
        return "".join(out)

    def _escape(self, i: int, out: list[str]) -> int:
        """Decode the escape at ``i`` into ``out``; return where the string goes on."""
        text = self.text
        nxt = text[i + 1 : i + 2]
        if nxt == "u" and text[i + 2 : i + 3] == "{":
            close = text.index("}", i)
            out.append(chr(int(text[i + 3 : close], 16)))
            return close + 1
        if nxt == "u":
            out.append(json.loads(f'"{text[i : i + 6]}"'))
            return i + 6
        if nxt == "x":
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            return i + 4
        out.append(_SIMPLE_ESCAPES.get(nxt, nxt))
        return i + 2

    def strings_object(self) -> dict[str, str]:
        """``{ "key": "text", ... }`` → ``{key: text}``; a key twice is an error."""
        self.expect("{")
        table: dict[str, str] = {}
        while self.peek() != "}":
            at = self.pos
            key = self.name()
            self.expect(":")
            value = self.string()
            if key in table:
                raise self.fail(f"{key!r} is defined twice", at)
            table[key] = value
            if self.peek() == ",":
                self.pos += 1
        self.pos += 1
        return table

    def property_span(self, start: int) -> tuple[int, int]:
        """Widen ``[start, self.pos)`` to whole lines, with the comma after the value."""
        end = self.pos
        self.skip_inline()
        if self.text[self.pos : self.pos + 1] == ",":
            self.pos += 1
            end = self.pos
        newline = self.text.find("\n", end)
        if newline >= 0 and not self.text[end:newline].strip():
            end = newline + 1
        line_start = self.text.rfind("\n", 0, start) + 1
        if not self.text[line_start:start].strip():
            start = line_start
        return start, end

    def skip_inline(self) -> None:
        while self.text[self.pos : self.pos + 1] in (" ", "\t"):
            self.pos += 1


def read_module(path: Path) -> StringModule:
    """Parse every locale table of the strings module at ``path``.

    A module without a table, or with one the parser cannot read, raises
    :class:`StringTableError` naming the file and line.
    """
    text = path.read_text(encoding="utf-8")
    match = _START.search(text)
    if not match:
        raise StringTableError(f"{path}: no `const STRINGS = {{` or `registerStrings({{` table")
    parser = _Parser(path, text, match.end())
    parser.expect("{")
    tables: dict[str, JsTable] = {}
    while parser.peek() != "}":
        parser.skip()
        start = parser.pos
        locale = parser.name()
        parser.expect(":")
        strings = parser.strings_object()
        span = parser.property_span(start)
        if locale in tables:
            raise parser.fail(f"the {locale} table is there twice", start)
        tables[locale] = JsTable(locale, strings, *span)
        if parser.peek() == ",":
            parser.pos += 1
    return StringModule(path, tables)


def remove_tables(module: StringModule, locales: set[str]) -> str:
    """The module's text without the tables of ``locales`` (the English one stays)."""
    text = module.path.read_text(encoding="utf-8")
    spans = sorted(
        (table.start, table.end) for tag, table in module.tables.items() if tag in locales
    )
    for start, end in reversed(spans):
        text = text[:start] + text[end:]
    return text
