"""The dashboard's translations at run time: the locale of a request, and each catalogue
compiled for the browser (JSON) and for the templates (gettext ``Translations``).

The catalogues are the ``.po`` files under ``web/locale/`` (see
:mod:`shopfloor.server.web.catalogue_tools`). Each is compiled once with Babel, on first
use, and compiled again only when its file changes (mtime and size, as ``static_url`` does
for the static files); a fuzzy or empty translation is left out, so the page shows the
English text rather than a guess.

The locale of a request: ``?lang=`` first, then the logged-in user's own choice
(:func:`user_locale`, set with ``PATCH /api/v1/auth/me``), then the ``shopfloor_lang`` cookie
the language menu sets, then the browser's ``Accept-Language``; English otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.support import NullTranslations, Translations
from starlette.requests import Request

from shopfloor.server.security.actor import PRINCIPAL_KEY
from shopfloor.server.web.catalogue_tools import SOURCE_LOCALE, read_catalogue, tag_of

__all__ = [
    "LANG_COOKIE",
    "Compiled",
    "available_locales",
    "compiled",
    "language_name",
    "match_locale",
    "request_locale",
    "translations",
    "user_locale",
]

logger = logging.getLogger(__name__)

LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"
LANG_COOKIE: Final = "shopfloor_lang"
"""The language menu's choice (set by static/js/i18n.js), read by the server to render."""


@dataclass(frozen=True)
class Compiled:
    """One catalogue compiled: JSON for the page's ``t()`` and Translations for Jinja."""

    tag: str
    json: bytes
    etag: str
    translations: Translations


_cache: dict[str, tuple[int, int, Compiled]] = {}
_lock = threading.Lock()


def _po_file(tag: str, locale_dir: Path) -> Path:
    return locale_dir / tag.replace("-", "_") / "LC_MESSAGES" / "messages.po"


def available_locales(locale_dir: Path = LOCALE_DIR) -> list[str]:
    """English (the source) and every language with a catalogue, as BCP 47 tags."""
    found = sorted(tag_of(p.parent.parent.name) for p in locale_dir.glob("*/LC_MESSAGES/*.po"))
    return [SOURCE_LOCALE, *(tag for tag in found if tag != SOURCE_LOCALE)]


def language_name(tag: str) -> str:
    """The language's own name for the menu: "English", "中文"."""
    try:
        name = Locale.parse(tag, sep="-").language_name or tag
    except (UnknownLocaleError, ValueError):  # a folder Babel has no data for
        return tag
    return name[:1].upper() + name[1:]


def compiled(tag: str, locale_dir: Path = LOCALE_DIR) -> Compiled | None:
    """The compiled catalogue of ``tag`` (``zh-CN``), or None when there is none."""
    if tag == SOURCE_LOCALE or tag not in available_locales(locale_dir):
        return None
    path = _po_file(tag, locale_dir)
    stat = path.stat()
    key = f"{locale_dir}:{tag}"
    with _lock:  # pages render in the event loop and in threads alike
        cached = _cache.get(key)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[2]
        catalog = read_catalogue(path)
        strings = {
            str(m.context): str(m.string)
            for m in catalog
            if m.id and m.context and m.string and not m.fuzzy
        }
        body = json.dumps(strings, ensure_ascii=False, sort_keys=True).encode("utf-8")
        mo = io.BytesIO()
        write_mo(mo, catalog, use_fuzzy=False)
        mo.seek(0)
        result = Compiled(
            tag=tag,
            json=body,
            etag=hashlib.sha256(body).hexdigest()[:16],
            translations=Translations(fp=mo),
        )
        _cache[key] = (stat.st_mtime_ns, stat.st_size, result)
        logger.info("catalogue %s compiled: %d strings", tag, len(strings))
        return result


def translations(tag: str) -> NullTranslations:
    """What the templates' ``pgettext`` reads for ``tag``: English needs none."""
    found = compiled(tag)
    return found.translations if found is not None else NullTranslations()


def match_locale(wanted: str | None, available: list[str]) -> str | None:
    """The available locale a language tag asks for, or None.

    The same rules as the page's ``matchLocale`` (static/js/i18n.js): an exact tag, then
    zh, zh-Hans* and zh-SG read Simplified Chinese (zh-TW and zh-HK do not get it by
    default), then the base language (``en-GB`` reads ``en``).
    """
    if not wanted:
        return None
    lower = wanted.strip().lower()
    for tag in available:
        if tag.lower() == lower:
            return tag
    if (lower == "zh" or lower.startswith("zh-hans") or lower == "zh-sg") and "zh-CN" in available:
        return "zh-CN"
    base = lower.split("-")[0]
    return next((tag for tag in available if tag.lower() == base), None)


def _accept_language(header: str) -> list[str]:
    """The tags of an ``Accept-Language`` header, most wanted first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, index, tag))
    return [tag for _q, _i, tag in sorted(ranked)]


def user_locale(request: Request) -> str | None:
    """The logged-in user's language (``PATCH /api/v1/auth/me``), None without one.

    The page routes authenticate before they render, which leaves the principal in the
    request's state; a public page (the login) has none, so the cookie and the browser
    decide there.
    """
    principal = (request.scope.get("state") or {}).get(PRINCIPAL_KEY)
    locale = getattr(principal, "locale", None)
    return locale if isinstance(locale, str) else None


def request_locale(request: Request) -> str:
    """The locale to render ``request`` in; see the module docstring for the order."""
    available = available_locales()
    for wanted in (
        request.query_params.get("lang"),
        user_locale(request),
        request.cookies.get(LANG_COOKIE),
        *_accept_language(request.headers.get("accept-language", "")),
    ):
        found = match_locale(wanted, available)
        if found:
            return found
    return SOURCE_LOCALE
