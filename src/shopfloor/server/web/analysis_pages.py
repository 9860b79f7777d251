"""The analysis pages of the dashboard: OEE and downtime (``/oee``) and the trend explorer
(``/trends``).

Each page is a server-rendered template with one ES module that reads the API (OEE,
downtime, Pareto, history), so the page shows exactly what the API answers and needs no
state on the server. The router is included by the web router (``shopfloor.server.web``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from shopfloor.server.api.auth import PAGE
from shopfloor.server.web.routes import render_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
"""Serves ``GET /oee`` and ``GET /trends``."""


@router.get("/oee", response_class=HTMLResponse, dependencies=[PAGE])
async def oee_page(request: Request) -> Response:
    """OEE with its A × P × Q and six big losses, the downtime Pareto and the stop list,
    where an operator assigns reasons."""
    return render_page(request, "oee.html")


@router.get("/trends", response_class=HTMLResponse, dependencies=[PAGE])
async def trends_page(request: Request) -> Response:
    """Several tags' history overlaid, zoomable, exported as CSV or Parquet."""
    return render_page(request, "trends.html")
