"""The plant overview (``/overview``) and the machine page (``/machines/{equipment_id}``).

Both are server-rendered frames (``templates/overview.html``, ``templates/machine.html`` on
``base.html``) whose ES modules (``static/js/overview.js``, ``static/js/machine.js``) fetch
their data from the API and follow live values over the websocket. The machine page is
rendered only for an equipment the asset model knows, so a mistyped or stale link answers
404 with a page that leads back to the overview rather than an empty machine.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from shopfloor.server.api.auth import PAGE
from shopfloor.server.assets import Equipment
from shopfloor.server.web.routes import render_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
"""Serves ``GET /overview`` and ``GET /machines/{equipment_id}``."""


def _machines(request: Request) -> tuple[Equipment, ...]:
    """The equipment of the asset model now served (the edited one if the plant is editable).

    A server without an asset model (or the bare app of a unit test) has none, and every
    machine page is then a 404.
    """
    ctx: Any = getattr(request.app.state, "shopfloor", None)
    if ctx is None:
        return ()
    plant = getattr(ctx, "plant", None)
    model = plant.model if plant is not None else getattr(ctx, "assets", None)
    if model is None:
        return ()
    return tuple(model.equipment)


@router.get("/overview", response_class=HTMLResponse, dependencies=[PAGE])
async def overview(request: Request) -> Response:
    """The plant at a glance: the asset tree and a tile per machine, grouped by line."""
    return render_page(request, "overview.html")


@router.get("/machines/{equipment_id}", response_class=HTMLResponse, dependencies=[PAGE])
async def machine(request: Request, equipment_id: str) -> Response:
    """One machine's live values, trends, state timeline, OEE, stops, health and alarms."""
    found = next((m for m in _machines(request) if m.id == equipment_id), None)
    if found is None:
        response = render_page(request, "not_found.html", missing=equipment_id)
        response.status_code = 404
        return response
    return render_page(
        request,
        "machine.html",
        equipment_id=found.id,
        equipment_path=found.path,
        description=found.metadata.get("description", ""),
    )
