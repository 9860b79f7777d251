"""Batches from edges and scripts: ``POST /api/v1/ingest``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from shopfloor.errors import PayloadError
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope, IngestOut
from shopfloor.wire import (
    ARROW_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    PayloadTooLarge,
    UnsupportedMediaType,
    decode,
    media_type,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["ingest"])

_INLINE_DECODE_BYTES = 256 * 1024
"""Bodies up to this size are decoded on the event loop; larger ones in a worker thread."""

_EXAMPLE = {
    "version": 1,
    "edge": "edge-1",
    "seq": 42,
    "tags": ["acme/plant-1/machining/line-1/cnc-1/spindle_temp"],
    "tag_index": [0, 0],
    "ts": ["2026-01-01T00:00:00Z", 1767225601000000000],
    "value": [41.5, 41.7],
    "quality": [0, 0],
}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A batch in wire version 1: columnar JSON, the row form "
        '`{"points": [{"tag", "ts", "value", "quality"}]}`, or an Arrow IPC stream. '
        "Times are integer nanoseconds or ISO 8601 (no offset means UTC).",
        "content": {
            JSON_MEDIA_TYPE: {"schema": {"type": "object"}, "example": _EXAMPLE},
            ARROW_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/ingest",
    summary="Store a batch of points",
    description="Decode, validate and store a batch, then publish it to live subscribers. "
    "A malformed batch is refused whole: nothing of it is stored, and the answer names "
    "the field at fault (`ts[3]`, `points[7].value`).",
    response_model=IngestOut,
    responses={
        400: {"model": ErrorEnvelope, "description": "The body is not JSON or Arrow at all."},
        413: {"model": ErrorEnvelope, "description": "The body is over the size limit."},
        415: {"model": ErrorEnvelope, "description": "Neither JSON nor Arrow IPC."},
        422: {"model": ErrorEnvelope, "description": "A field is invalid; `field` names it."},
    },
    openapi_extra=_BODY_DOC,
)
async def ingest(ctx: Ctx, request: Request) -> IngestOut:
    """Store one batch."""
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) not in (JSON_MEDIA_TYPE, ARROW_MEDIA_TYPE):
        raise UnsupportedMediaType(content_type)
    body = await _read_body(request, limit=ctx.max_body_bytes)
    try:
        if len(body) <= _INLINE_DECODE_BYTES:
            decoded = decode(body, content_type, max_bytes=ctx.max_body_bytes)
        else:
            decoded = await asyncio.to_thread(
                decode, body, content_type, max_bytes=ctx.max_body_bytes
            )
        source = decoded.edge or (request.client.host if request.client else "unknown")
        result = await ctx.ingestor.ingest(decoded.batch, source=source)
    except (PayloadTooLarge, UnsupportedMediaType):
        raise
    except PayloadError as err:
        status, code = (400, "malformed_body") if err.field == "body" else (422, "invalid_payload")
        raise ApiError(status, code, err.field, err.message) from err
    return IngestOut(accepted=result.accepted, edge=decoded.edge, seq=decoded.seq)


async def _read_body(request: Request, *, limit: int) -> bytes:
    """Read the body, refusing it as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as err:
            raise ApiError(
                400, "bad_request", "content-length", "Content-Length is not a number"
            ) from err
        if size > limit:
            raise PayloadTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(limit)
    return bytes(body)
