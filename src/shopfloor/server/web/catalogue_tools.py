"""Maintain the dashboard's gettext catalogues: extract, update, migrate, check.

The source of every string is the ``en`` table of a JS module (:mod:`.jstables`); the
translations are gettext catalogues managed with Babel under ``web/locale/``:

- ``locale/messages.pot``, generated: one message per key, ``msgctxt`` = the key,
  ``msgid`` = the English text, the module as its location;
- ``locale/<ll_CC>/LC_MESSAGES/messages.po``, one per language, ``msgstr`` = the
  translation.

Messages are matched by key (``msgctxt``), not by English text: the same English ("Close")
under two keys may need two translations, and a reworded English text keeps its key. So
:func:`update` is ours rather than ``Catalog.update`` (which matches by ``msgid``): a new
key comes in untranslated (or, when another key has the very same English text, with that
translation marked fuzzy as a suggestion), a key whose English changed keeps its
translation marked fuzzy with the old English as ``#| msgid``, and a removed key becomes
obsolete (``#~``) so that it can come back.

:func:`migrate` is the one-time (and re-runnable) move of translations still written in the
old format, a ``"zh-CN": {...}`` table beside the ``en`` one, into the catalogue, after which
the table is cut out of the module. A table's text wins over the catalogue's: it is the
newer edit, made by someone who had not yet moved to the catalogue.

:func:`check` is what the tests and a release run: the .pot must equal what the sources give,
every catalogue must translate every key (non-empty, not fuzzy, the same ``{placeholders}``),
no module may keep an old-style table, and every ``pgettext(key, english)`` in a template
must use the key's English text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import PoFileError, read_po, write_po
from jinja2.ext import babel_extract

from shopfloor.server.web.jstables import StringModule, StringTableError, read_module, remove_tables

__all__ = [
    "SOURCE_LOCALE",
    "CatalogueCheck",
    "Outcome",
    "Sources",
    "check",
    "extract",
    "migrate",
    "placeholders",
    "po_path",
    "read_catalogue",
    "update",
]

SOURCE_LOCALE = "en"
"""The locale of the JS tables' text: the msgid of every message."""

PROJECT = "shopfloor"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Header lines Babel stamps with the time of writing: a file whose messages did not change
# is not rewritten just for them (no churn, no merge conflicts over a date).
_VOLATILE = re.compile(r'^"(POT-Creation-Date|PO-Revision-Date): .*\\n"$', re.M)


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders of a string (what ``t(key, vars)`` replaces)."""
    return set(_PLACEHOLDER.findall(text))


def tag_of(po_locale: str) -> str:
    """``zh_CN`` (gettext's folder name) → ``zh-CN`` (the page's BCP 47 tag)."""
    return po_locale.replace("_", "-")


def po_locale_of(tag: str) -> str:
    """``zh-CN`` → ``zh_CN``."""
    return tag.replace("-", "_")


@dataclass(frozen=True)
class Sources:
    """Where the strings are: the web folder's JS modules, templates and catalogues.

    Rooted at a folder so that the tests can run the tools on a temporary copy.
    """

    web_dir: Path

    @property
    def locale_dir(self) -> Path:
        return self.web_dir / "locale"

    @property
    def pot_path(self) -> Path:
        return self.locale_dir / "messages.pot"

    def modules(self) -> list[Path]:
        """i18n.js first (the frame's strings), then each page's module by name."""
        js = self.web_dir / "static" / "js"
        return [js / "i18n.js", *sorted((js / "strings").glob("*.js"))]

    def templates(self) -> list[Path]:
        return sorted((self.web_dir / "templates").glob("*.html"))

    def po_locales(self) -> list[str]:
        """The catalogues there are, as gettext locale names (``zh_CN``)."""
        return sorted(p.parent.parent.name for p in self.locale_dir.glob("*/LC_MESSAGES/*.po"))

    def relative(self, path: Path) -> str:
        return path.relative_to(self.web_dir).as_posix()


def po_path(sources: Sources, po_locale: str) -> Path:
    return sources.locale_dir / po_locale / "LC_MESSAGES" / "messages.po"


def read_catalogue(path: Path) -> Catalog:
    """Read a .po/.pot file; a syntax error names the file and line."""
    with path.open("rb") as fileobj:
        try:
            return read_po(fileobj, abort_invalid=True)
        except (PoFileError, ValueError) as err:  # ValueError: a bad encoding or header
            raise StringTableError(f"{path}: {err}") from err


def _read_modules(sources: Sources) -> list[StringModule]:
    return [read_module(path) for path in sources.modules()]


def _template(sources: Sources, modules: Iterable[StringModule]) -> Catalog:
    """The .pot the modules' English tables give: one message per key, in source order."""
    pot = Catalog(project=PROJECT, version=None, copyright_holder="the shopfloor authors")
    owner: dict[str, str] = {}
    for module in modules:
        where = sources.relative(module.path)
        english = module.tables.get(SOURCE_LOCALE)
        if english is None:
            raise StringTableError(f"{module.path}: no {SOURCE_LOCALE} table")
        for key, text in english.strings.items():
            if key in owner:
                # registerStrings() merges into one table: the module registered last wins.
                raise StringTableError(f"{key!r} is in both {owner[key]} and {where}")
            owner[key] = where
            # No line number: moving a string within its module changes nothing here.
            pot.add(text, context=key, locations=[(where, None)])  # type: ignore[list-item]
    return pot


def _messages(catalog: Catalog) -> dict[str, Message]:
    """The catalogue's current (not obsolete) messages by key."""
    return {m.context: m for m in catalog if m.id and m.context}


def _merge(template: Catalog, po: Catalog, forced: dict[str, str]) -> Catalog:
    """``po`` brought in line with ``template``, matched by key; ``forced`` wins."""
    current = _messages(po)
    obsolete = {m.context: m for m in po.obsolete.values() if m.context}
    by_english: dict[str, str] = {}
    for message in current.values():
        if message.string and not message.fuzzy:
            by_english.setdefault(str(message.id), str(message.string))
    out = Catalog(
        locale=po.locale,
        project=PROJECT,
        version=None,
        copyright_holder="the shopfloor authors",
        creation_date=po.creation_date,
        revision_date=po.revision_date,
        last_translator=po.last_translator,
        language_team=po.language_team,
        fuzzy=False,
    )
    for new in template:
        if not new.id:
            continue
        key = str(new.context)
        old = current.get(key) or obsolete.get(key)
        message = Message(new.id, "", context=key, locations=new.locations)
        message.user_comments = list(old.user_comments) if old else []
        if key in forced:
            message.string = forced[key]
        elif old is not None and old.string:
            message.string = old.string
            if old.id != new.id:
                message.flags.add("fuzzy")  # the English changed: check the translation
                message.previous_id = [str(old.id)]
            elif old.fuzzy:
                message.flags.add("fuzzy")
                message.previous_id = list(old.previous_id)
        elif str(new.id) in by_english:
            message.string = by_english[str(new.id)]
            message.flags.add("fuzzy")  # the same English elsewhere: a suggestion
        out[new.id] = message  # keyed by (msgid, msgctxt) through the message's context
    keys = {m.context for m in template if m.id}
    for key, message in {**obsolete, **current}.items():
        if key not in keys:
            out.obsolete[(str(message.id), key)] = message
    return out


def _po_text(catalog: Catalog, *, template: bool = False) -> bytes:
    buffer = io.BytesIO()
    write_po(
        buffer,
        catalog,
        width=100,
        include_lineno=False,
        include_previous=not template,
        ignore_obsolete=template,
        omit_header=False,
    )
    return buffer.getvalue()


def _write_if_changed(path: Path, text: bytes) -> bool:
    """Write ``text`` unless the file holds the same but for its dates; say if written."""
    if path.exists():
        old = path.read_bytes().decode("utf-8")
        if _VOLATILE.sub("", old) == _VOLATILE.sub("", text.decode("utf-8")):
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return True


@dataclass
class Outcome:
    """What a run of :func:`update` or :func:`migrate` did, for the command to print."""

    written: list[Path] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)
    untranslated: dict[str, int] = field(default_factory=dict)


def _empty_po(po_locale: str) -> Catalog:
    try:
        locale = Locale.parse(po_locale)
    except (UnknownLocaleError, ValueError) as err:
        raise StringTableError(f"{tag_of(po_locale)!r} is no language Babel knows") from err
    return Catalog(locale=locale, project=PROJECT, version=None, fuzzy=False)


def extract(sources: Sources) -> Outcome:
    """Regenerate the .pot from the JS modules' English tables (the catalogues stay)."""
    template = _template(sources, _read_modules(sources))
    outcome = Outcome()
    if _write_if_changed(sources.pot_path, _po_text(template, template=True)):
        outcome.written.append(sources.pot_path)
    return outcome


def update(sources: Sources, *, add: Iterable[str] = ()) -> Outcome:
    """Regenerate the .pot from the JS tables and bring every catalogue in line with it.

    ``add`` names languages (``fr``, ``zh-CN``) to start a catalogue for.
    """
    return _update(sources, add=add, forced={})


def _update(sources: Sources, *, add: Iterable[str], forced: dict[str, dict[str, str]]) -> Outcome:
    """:func:`update`, with translations (by catalogue, then key) that override the files'."""
    modules = _read_modules(sources)
    template = _template(sources, modules)
    outcome = Outcome()
    if _write_if_changed(sources.pot_path, _po_text(template, template=True)):
        outcome.written.append(sources.pot_path)
    locales = set(sources.po_locales()) | {po_locale_of(tag) for tag in add} | set(forced)
    for po_locale in sorted(locales):
        path = po_path(sources, po_locale)
        po = read_catalogue(path) if path.exists() else _empty_po(po_locale)
        merged = _merge(template, po, forced.get(po_locale, {}))
        outcome.untranslated[po_locale] = sum(
            1 for m in merged if m.id and (not m.string or m.fuzzy)
        )
        if _write_if_changed(path, _po_text(merged)):
            outcome.written.append(path)
    return outcome


def migrate(sources: Sources) -> Outcome:
    """Move old-style translation tables (``"zh-CN": {...}`` in a JS module) into the
    catalogues, cut them out of the modules, then :func:`update`.

    Re-runnable: a module without such a table is left alone, so the lead can run it again
    after merging branches that still added strings the old way.
    """
    modules = _read_modules(sources)
    template = _template(sources, modules)
    keys = {m.context for m in template if m.id}
    forced: dict[str, dict[str, str]] = {}
    overridden: list[str] = []
    for module in modules:
        for tag, table in module.tables.items():
            if tag == SOURCE_LOCALE:
                continue
            po_locale = po_locale_of(tag)
            path = po_path(sources, po_locale)
            existing = _messages(read_catalogue(path)) if path.exists() else {}
            for key, text in table.strings.items():
                if key not in keys:
                    raise StringTableError(
                        f"{module.path}: {key!r} is in the {tag} table but not the English one"
                    )
                old = existing.get(key)
                if old is not None and old.string and old.string != text:
                    overridden.append(f"{tag} {key}: {old.string!r} -> {text!r}")
                forced.setdefault(po_locale, {})[key] = text
    outcome = _update(sources, add=(), forced=forced)
    for module in modules:
        others = {tag for tag in module.tables if tag != SOURCE_LOCALE}
        if others:
            module.path.write_text(remove_tables(module, others), encoding="utf-8")
            outcome.written.append(module.path)
    outcome.moved = {tag_of(k): len(v) for k, v in forced.items()}
    outcome.overridden = overridden
    return outcome


@dataclass
class CatalogueCheck:
    """The problems :func:`check` found; empty when the catalogues are in order."""

    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _template_calls(path: Path) -> Iterable[tuple[int, str, str]]:
    """``(line, key, english)`` of each ``pgettext(key, english)`` in a template."""
    with path.open("rb") as fileobj:
        for lineno, funcname, message, _comments in babel_extract(
            fileobj, ("pgettext",), [], {"trimmed": "false"}
        ):
            if funcname == "pgettext" and isinstance(message, tuple) and len(message) == 2:
                key, english = message
                if isinstance(key, str) and isinstance(english, str):
                    yield lineno, key, english


def check(sources: Sources) -> CatalogueCheck:
    """Everything a release needs of the strings; see the module docstring."""
    result = CatalogueCheck()
    problems = result.problems
    try:
        modules = _read_modules(sources)
        template = _template(sources, modules)
    except StringTableError as err:
        problems.append(str(err))
        return result
    for module in modules:
        for tag in module.tables:
            if tag != SOURCE_LOCALE:
                problems.append(
                    f"{sources.relative(module.path)} still has a {tag} table: run "
                    "`shopfloor i18n migrate` to move it into the catalogue"
                )
    fresh = _po_text(template, template=True).decode("utf-8")
    if not sources.pot_path.exists():
        problems.append(f"{sources.pot_path} is missing: run `shopfloor i18n update`")
    elif _VOLATILE.sub("", sources.pot_path.read_text("utf-8")) != _VOLATILE.sub("", fresh):
        problems.append(
            f"{sources.relative(sources.pot_path)} is out of date with the JS tables: run "
            "`shopfloor i18n update` and translate what it marks"
        )
    english = {str(m.context): str(m.id) for m in template if m.id}
    for po_locale in sources.po_locales():
        problems.extend(_check_po(sources, po_locale, english))
    for path in sources.templates():
        for lineno, key, text in _template_calls(path):
            where = f"{sources.relative(path)}:{lineno}"
            if key not in english:
                problems.append(f"{where}: pgettext({key!r}) names no key of the JS tables")
            elif english[key] != text:
                problems.append(
                    f"{where}: pgettext({key!r}) says {text!r}, the en table {english[key]!r}"
                )
    return result


def _check_po(sources: Sources, po_locale: str, english: dict[str, str]) -> list[str]:
    path = po_path(sources, po_locale)
    where = sources.relative(path)
    try:
        messages = _messages(read_catalogue(path))
    except StringTableError as err:
        return [str(err)]
    problems: list[str] = []
    for key, text in english.items():
        message = messages.get(key)
        if message is None:
            problems.append(f"{where}: {key} is missing: run `shopfloor i18n update`")
        elif message.id != text:
            problems.append(f"{where}: {key} translates {message.id!r}, not {text!r}")
        elif not message.string:
            problems.append(f"{where}: {key} is not translated")
        elif message.fuzzy:
            problems.append(f"{where}: {key} is fuzzy: check the translation, drop the flag")
        elif placeholders(str(message.string)) != placeholders(text):
            problems.append(
                f"{where}: {key} has placeholders {sorted(placeholders(str(message.string)))},"
                f" the English {sorted(placeholders(text))}"
            )
    for key in sorted(set(messages) - set(english)):
        problems.append(f"{where}: {key} is no key of the JS tables: run `shopfloor i18n update`")
    return problems
