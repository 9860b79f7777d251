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
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from shopfloor.server.api.auth import PAGE, PUBLIC

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "render_page", "router", "static_url"]

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

    response = templates.TemplateResponse(
        request,
        template,
        {"static_url": url, "base_path": root_path, **context},
    )
    response.headers["cache-control"] = REVALIDATE
    return response


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
    "/static/{path:path}", methods=["GET", "HEAD"], name="web_static", dependencies=[PUBLIC]
)
async def static(path: str, request: Request) -> Response:
    """Serve a file from ``static/``; dot files and paths leaving the folder are 404."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    if not clean or clean == "." or any(part.startswith(".") for part in clean.split("/")):
        raise HTTPException(status_code=404)
    return await _static.get_response(clean, request.scope)
