"""The plant's asset tree: ``GET /api/v1/assets``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shopfloor.server.api.context import Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["assets"])


@router.get(
    "/assets",
    summary="The ISA-95 asset tree",
    responses={404: {"model": ErrorEnvelope}},
)
async def asset_tree(ctx: Ctx) -> dict[str, Any]:
    """Enterprise, site, areas, lines, cells and equipment, each node with ``name``,
    ``level``, ``path`` and ``children``; equipment also with ``template``, ``metadata``
    (description, location, manufacturer, serial, criticality), ``attributes`` and the
    names of its ``tags``."""
    if ctx.assets is None:
        raise ApiError(404, "not_found", None, "no asset model: set [assets] plant")
    return ctx.assets.tree()
