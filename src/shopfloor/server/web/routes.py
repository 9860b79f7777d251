"""The dashboard page and its static files, served by the shopfloor server itself.

Factories are often offline, so nothing is fetched from a CDN: the page's own ES modules and
stylesheet live in ``static/``, and third-party libraries (Apache ECharts) are copied into
``static/vendor/`` from npm by ``make web-assets``.

Everything hangs off one :data:`router`, so wiring it into the app needs nothing else::

    app = create_app(..., extra_routers=[shopfloor.server.web.router])

Static files are served by a route of that router rather than a mounted sub-application, so
the router alone carries them (``include_router`` keeps no mounts in older FastAPI releases).

Caching: URLs the template writes carry ``?v=<content hash>`` and are cached for a year as
immutable; any other static URL (the modules that the entry module imports by plain relative
path) is sent with ``no-cache``, so the browser revalidates it with its ETag and gets a cheap
304 while the file is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from shopfloor.server.api.auth import PAGE, PRINCIPAL_KEY, PUBLIC
from shopfloor.server.web import catalogue

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "catalogue_url", "render_page", "router", "static_url"]

logger = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = WEB_DIR / "templates"
STATIC_DIR: Final = WEB_DIR / "static"

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"

# Explicit types: the system's mimetypes table varies by distribution, and browsers refuse
# to run an ES module served with anything but a JavaScript type.
CONTENT_TYPES: Final[dict[str, str]] = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

VENDOR_HINT: Final = "run 'make web-assets' to copy the browser libraries from npm"


class _StaticFiles(StaticFiles):
    """Starlette's StaticFiles with fixed content types and cache headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        """Serve one file with its content type, cache policy and ``nosniff``."""
        suffix = Path(full_path).suffix.lower()
        response: Response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            media_type=CONTENT_TYPES.get(suffix),
        )
        query = scope.get("query_string", b"")
        versioned = any(part.startswith(b"v=") for part in query.split(b"&"))
        response.headers["cache-control"] = IMMUTABLE if versioned else REVALIDATE
        response.headers["x-content-type-options"] = "nosniff"
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


_static = _StaticFiles(directory=STATIC_DIR, check_dir=False)
_hash_cache: dict[str, tuple[int, int, str]] = {}
_missing_logged: set[str] = set()


def static_url(relative: str, *, root_path: str = "") -> str:
    """Return the URL of a static file, versioned by a hash of its content.

    The hash lets the browser cache the file for a year and still pick up a new release at
    once. A missing file gets an unversioned URL (and a warning), so the page still renders
    and the 404 shows in the browser's network panel.
    """
    path = STATIC_DIR / relative
    try:
        stat_result = path.stat()
    except OSError:
        if relative not in _missing_logged:  # once per file, not on every page view
            _missing_logged.add(relative)
            logger.warning("static file %s is missing (%s)", relative, VENDOR_HINT)
        return f"{root_path}/static/{relative}"
    _missing_logged.discard(relative)
    # Hashed once per file version (about 3 ms for the 1 MB ECharts), then only stat()ed.
    cached = _hash_cache.get(relative)
    if cached and cached[0] == stat_result.st_mtime_ns and cached[1] == stat_result.st_size:
        digest = cached[2]
    else:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        _hash_cache[relative] = (stat_result.st_mtime_ns, stat_result.st_size, digest)
    return f"{root_path}/static/{relative}?v={digest}"


templates = Jinja2Templates(directory=TEMPLATES_DIR)
# Server-rendered text goes through the same catalogues as the page's t(): a template writes
# {{ pgettext("menu.live", "Live") }} (the key, then its English text from the en table).
# The Translations are per request, in the context, so the callables read them from there.
templates.env.add_extension("jinja2.ext.i18n")


@pass_context
def _gettext(context: Context, message: str) -> str:
    return str(context["translations"].gettext(message))


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return str(context["translations"].ngettext(singular, plural, n))


@pass_context
def _pgettext(context: Context, key: str, english: str) -> str:
    return str(context["translations"].pgettext(key, english))


@pass_context
def _npgettext(context: Context, key: str, singular: str, plural: str, n: int) -> str:
    return str(context["translations"].npgettext(key, singular, plural, n))


templates.env.install_gettext_callables(  # type: ignore[attr-defined]
    _gettext, _ngettext, newstyle=False, pgettext=_pgettext, npgettext=_npgettext
)

router = APIRouter(include_in_schema=False)
"""Serves ``GET /`` (the live page), ``GET /login``, ``GET /docs`` (the API reference) and
``GET /static/{path}``; include it in the app."""


def render_page(request: Request, template: str, **context: object) -> Response:
    """Render one of the dashboard's pages with ``static_url`` and ``base_path`` set.

    Every page is a small template whose modules fetch their data from the API; the page
    names the current hashes of its assets, so it is always revalidated.
    """
    root_path = str(request.scope.get("root_path", "")).rstrip("/")

    def url(relative: str) -> str:
        return static_url(relative, root_path=root_path)

    locale = catalogue.request_locale(request)
    principal = (request.scope.get("state") or {}).get(PRINCIPAL_KEY)
    locales = catalogue.available_locales()
    response = templates.TemplateResponse(
        request,
        template,
        {
            "static_url": url,
            "base_path": root_path,
            "locale": locale,
            "languages": [(tag, catalogue.language_name(tag)) for tag in locales],
            "catalogues": {tag: catalogue_url(tag, root_path=root_path) for tag in locales[1:]},
            "translations": catalogue.translations(locale),
            "user_locale": catalogue.user_locale(request),
            "logged_in": getattr(principal, "kind", None) == "session",
            **context,
        },
    )
    response.headers["cache-control"] = REVALIDATE
    # The page differs by language: no shared cache may hand one user's language to another.
    response.headers["vary"] = "Accept-Language, Cookie"
    return response


def catalogue_url(tag: str, *, root_path: str = "") -> str:
    """The URL of a language's compiled catalogue, versioned by its content."""
    found = catalogue.compiled(tag)
    version = f"?v={found.etag}" if found is not None else ""
    return f"{root_path}/static/i18n/{tag}.json{version}"


@router.get("/", response_class=HTMLResponse, dependencies=[PAGE])
async def index(request: Request) -> Response:
    """Render the live plant page; its modules fetch everything else from the API."""
    return render_page(request, "index.html")


@router.get("/login", response_class=HTMLResponse, dependencies=[PUBLIC])
async def login_page(request: Request) -> Response:
    """Render the login form; its module posts to ``/api/v1/auth/login``."""
    return render_page(request, "login.html")


@router.get("/docs", response_class=HTMLResponse, dependencies=[PUBLIC])
async def api_docs(request: Request) -> Response:
    """Render the API reference (RapiDoc over ``/openapi.json``), served locally under the
    same Content-Security-Policy as the dashboard: factories are often offline, and a CDN
    would be a third party seeing who reads the docs."""
    return render_page(request, "api_docs.html")


@router.get("/redoc", dependencies=[PUBLIC])
async def redoc(request: Request) -> RedirectResponse:
    """The old ReDoc address: one reference is enough, so it leads to ``/docs``."""
    root_path = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root_path}/docs", status_code=308)


@router.api_route(
    "/static/i18n/{tag}.json",
    methods=["GET", "HEAD"],
    name="web_catalogue",
    dependencies=[PUBLIC],
)
async def catalogue_json(tag: str, request: Request) -> Response:
    """One language's translations, ``{key: text}``, compiled from its .po catalogue.

    English is the source text in the modules and has no catalogue (404 like any other
    language without one). Versioned URLs (``?v=``, from :func:`catalogue_url`) are
    immutable; the ETag answers a revalidation with 304.
    """
    found = catalogue.compiled(tag)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no catalogue for {tag!r}")
    etag = f'"{found.etag}"'
    versioned = "v" in request.query_params
    headers = {
        "etag": etag,
        "cache-control": IMMUTABLE if versioned else REVALIDATE,
        "x-content-type-options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else found.json
    headers["content-length"] = str(len(found.json))
    return Response(body, media_type="application/json", headers=headers)


@router.api_route(
    "/static/{path:path}", methods=["GET", "HEAD"], name="web_static", dependencies=[PUBLIC]
)
async def static(path: str, request: Request) -> Response:
    """Serve a file from ``static/``; dot files and paths leaving the folder are 404."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    if not clean or clean == "." or any(part.startswith(".") for part in clean.split("/")):
        raise HTTPException(status_code=404)
    return await _static.get_response(clean, request.scope)
