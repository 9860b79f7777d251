"""Batches from edges and scripts: ``POST /api/v1/ingest``.

The edge side of this contract is docs/wire.md. In short: a batch with ``edge`` and
``seq`` is answered only after it is committed to the historian (with its ingest-ledger
row), and is stored once per ``(edge, seq)`` however often it arrives; ``429``/``503``
with ``Retry-After`` mean "nothing stored, send again later"; a 4xx other than 429 means
the batch is invalid and stays invalid; ``401``/``403`` that the edge's credential is
missing or not this edge's (``[ingest] edge_credentials``, see edge_auth).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request

from shopfloor.errors import HistorianError, PayloadError
from shopfloor.server.api.auth import INGEST
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.edge_auth import AUTH_RESPONSES, EdgeIdentity, require_edge
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope, IngestOut
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.security.scoping import is_scoped
from shopfloor.wire import (
    ARROW_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    PayloadTooLarge,
    UnsupportedEncoding,
    UnsupportedMediaType,
    decode,
    media_type,
    normalise_encoding,
)

__all__ = ["EDGE_TIME_HEADER", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["ingest"], dependencies=[INGEST])

EDGE_TIME_HEADER = "x-shopfloor-edge-time"
"""The edge's wall clock (int ns) when it sent the request; the platform measures skew."""

_INLINE_DECODE_BYTES = 256 * 1024
"""Bodies up to this size are decoded on the event loop; larger ones in a worker thread."""
_INLINE_COMPRESSED_BYTES = 16 * 1024
"""Compressed bodies up to this size are decoded inline (they may expand up to the limit)."""
_COMMIT_RETRY_S = 5
"""Retry-After when a commit failed: the disk may need a moment (or an operator)."""

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
        '`{"points": [{"tag", "ts", "value", "quality"}]}`, or an Arrow IPC stream with '
        "`edge`, `seq` and `historical` in its schema metadata. Times are integer "
        "nanoseconds or ISO 8601 (no offset means UTC). The body may be compressed "
        "(`Content-Encoding: zstd` or `gzip`); the size limit applies before and after.",
        "content": {
            JSON_MEDIA_TYPE: {"schema": {"type": "object"}, "example": _EXAMPLE},
            ARROW_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {
            "name": "X-Shopfloor-Edge-Time",
            "in": "header",
            "required": False,
            "description": "The sender's wall clock when it sent the request, integer "
            "nanoseconds since the epoch; the platform measures the edge's clock skew.",
            "schema": {"type": "integer"},
        },
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["zstd", "gzip", "identity"]},
        },
    ],
}


@router.post(
    "/ingest",
    summary="Store a batch of points",
    description="Decode, validate and store a batch, then publish it to live subscribers. "
    "A batch that names its `edge` and `seq` is answered after it is committed and is "
    "stored at most once per (edge, seq): a batch sent again is answered with "
    "`duplicate: true` and not stored again. A malformed batch is refused whole: "
    "nothing of it is stored, and the answer names the field at fault (`ts[3]`, "
    "`points[7].value`). Points stamped too far in the future are stored with quality "
    "Uncertain; times before 2000 or from 2100 on refuse the batch.",
    response_model=IngestOut,
    responses={
        400: {"model": ErrorEnvelope, "description": "The body is not JSON or Arrow at all."},
        413: {
            "model": ErrorEnvelope,
            "description": "The body, or what it decompresses to, is over the size limit.",
        },
        415: {
            "model": ErrorEnvelope,
            "description": "Neither JSON nor Arrow IPC, or an unknown Content-Encoding.",
        },
        422: {"model": ErrorEnvelope, "description": "A field is invalid; `field` names it."},
        429: {
            "model": ErrorEnvelope,
            "description": "The historian is behind; nothing stored. Retry after the "
            "`Retry-After` header's seconds, with jitter.",
        },
        503: {
            "model": ErrorEnvelope,
            "description": "Shutting down, or the commit failed; nothing stored. Retry "
            "after `Retry-After` seconds.",
        },
        **AUTH_RESPONSES,
    },
    openapi_extra=_BODY_DOC,
)
async def ingest(
    ctx: Ctx, request: Request, identity: EdgeIdentity, principal: Caller
) -> IngestOut:
    """Store one batch."""
    received = ctx.clock()
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) not in (JSON_MEDIA_TYPE, ARROW_MEDIA_TYPE):
        raise UnsupportedMediaType(content_type)
    encoding = normalise_encoding(request.headers.get("content-encoding"))
    ctx.ingestor.admit()  # refuse before reading the body, not after
    body = await _read_body(request, limit=ctx.max_body_bytes)
    inline = len(body) <= (_INLINE_DECODE_BYTES if encoding is None else _INLINE_COMPRESSED_BYTES)
    try:
        if inline:
            decoded = decode(
                body, content_type, max_bytes=ctx.max_body_bytes, content_encoding=encoding
            )
        else:
            decoded = await asyncio.to_thread(
                decode,
                body,
                content_type,
                max_bytes=ctx.max_body_bytes,
                content_encoding=encoding,
            )
        require_edge(identity, decoded.edge)
        if is_scoped(principal):  # a user limited to sites writes only within them
            for tag in decoded.batch.tags:
                require_path(principal, tag, field="tag")
        source = decoded.edge or (request.client.host if request.client else "unknown")
        result = await ctx.ingestor.ingest(
            decoded.batch,
            source=source,
            edge=decoded.edge,
            seq=decoded.seq,
            historical=decoded.historical,
            edge_time_ns=_edge_time(request),
            received_ns=received,
            parts=decoded.parts,
            outbox=decoded.outbox,
        )
    except (PayloadTooLarge, UnsupportedMediaType, UnsupportedEncoding):
        raise
    except PayloadError as err:
        status, code = (400, "malformed_body") if err.field == "body" else (422, "invalid_payload")
        raise ApiError(status, code, err.field, err.message) from err
    except HistorianError as err:
        raise ApiError(
            503,
            "unavailable",
            None,
            f"the batch could not be committed, nothing of it was stored: {err}",
            headers={"Retry-After": str(_COMMIT_RETRY_S)},
        ) from err
    return IngestOut(
        accepted=result.accepted,
        edge=decoded.edge,
        seq=decoded.seq,
        duplicate=result.duplicate,
    )


def _edge_time(request: Request) -> int | None:
    """The edge's send time from its header; a malformed one is ignored (logged once)."""
    raw = request.headers.get(EDGE_TIME_HEADER)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        if not _WARNED:
            _WARNED.add(EDGE_TIME_HEADER)
            logger.warning("ignoring a malformed %s header: %.40r", EDGE_TIME_HEADER, raw)
        return None


_WARNED: set[str] = set()
"""Headers already warned about (the warning is logged once per process)."""


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
