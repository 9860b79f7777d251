"""The admin page (``/admin``): connections and edges, the equipment writes switches, the
audit log with its chain check, and (once issue 8's API is there) users and tokens.

A server-rendered frame (``templates/admin.html``) whose modules (``static/js/admin.js``
and ``admin-audit.js``) fetch everything from the API, so the page shows only what the
API lets the caller see and do; it decides nothing itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from shopfloor.server.api.auth import PAGE
from shopfloor.server.web.routes import render_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
"""Serves ``GET /admin``."""


@router.get("/admin", response_class=HTMLResponse, dependencies=[PAGE])
async def admin(request: Request) -> Response:
    """Connections, writes switches, the audit log, users and tokens."""
    return render_page(request, "admin.html")
