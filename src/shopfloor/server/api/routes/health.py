"""Liveness and counters: ``/healthz``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from shopfloor.server.api.auth import PUBLIC
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.schemas import HealthOut

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    dependencies=[PUBLIC],
    summary="Health and counters",
    description="Answers while the server runs, with the counters of the historian, ingest, "
    "the live channel and the websocket fan-out, plus what the server's status callback adds.",
    response_model=HealthOut,
)
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """Return status and counters."""
    extra = ctx.status() if ctx.status is not None else {}
    return {
        "status": "ok",
        "version": ctx.version,
        "historian": asdict(ctx.historian.stats()),
        "ingest": asdict(ctx.ingestor.stats()),
        "live": {
            "subscribers": ctx.live.subscriber_count,
            "published": ctx.live.published,
            "dropped": ctx.live.dropped,
        },
        "websocket": ctx.hub.stats(),
        **extra,
    }
