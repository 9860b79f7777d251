"""The newest value of each tag: ``/api/v1/values/latest``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import json_response, latest_rows, normalise_prefix
from shopfloor.server.api.routes.tags import PrefixQuery
from shopfloor.server.api.schemas import ErrorEnvelope, LatestOut
from shopfloor.server.api.scoping import Caller
from shopfloor.server.security.scoping import filter_table

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["values"], dependencies=[READ])


@router.get(
    "/values/latest",
    summary="Latest values",
    description="The last committed point of every tag (or of the tags under `prefix`), "
    "sorted by path. Values are null for text tags and for missing values.",
    response_model=LatestOut,
    responses={422: {"model": ErrorEnvelope, "description": "The prefix is malformed."}},
)
async def latest_values(ctx: Ctx, principal: Caller, prefix: PrefixQuery = None) -> Response:
    """Return the last value of each tag (within the caller's sites)."""
    wanted = normalise_prefix(prefix)
    table = filter_table(principal, await ctx.historian.latest())
    return json_response({"values": latest_rows(table, wanted)})
