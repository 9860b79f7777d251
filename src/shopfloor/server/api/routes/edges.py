"""Remote edges: ``PUT /api/v1/edges/{edge_id}/status`` and ``GET /api/v1/edges``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from shopfloor.errors import HistorianError
from shopfloor.server.api.auth import INGEST, READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.edge_auth import AUTH_RESPONSES, status_identity
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import (
    EdgeOut,
    EdgesOut,
    EdgeStatusIn,
    EdgeStatusOut,
    ErrorEnvelope,
)
from shopfloor.server.api.timeparse import format_ns
from shopfloor.server.historian.base import EdgeLedgerStats
from shopfloor.server.ingest.pg_edges import SharedEdges
from shopfloor.wire import EDGE_ID_PATTERN, edge_of_stream

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["edges"])

_EDGE_ID = re.compile(EDGE_ID_PATTERN)

EdgeId = Annotated[
    str,
    PathParam(
        pattern=EDGE_ID_PATTERN,
        description="The edge's id (its configuration's `edge.id`).",
        examples=["press-shop-edge-1"],
    ),
]


@router.put(
    "/edges/{edge_id}/status",
    dependencies=[INGEST, Depends(status_identity)],
    summary="Report an edge's status",
    description="Each edge sends this every 10 s and after reconnecting: its outbox, its "
    "link and its connectors. The platform keeps the latest report per edge in memory "
    "and answers with the clock skew it measures, platform time minus edge time (with a "
    "shared historian, every API server and worker also stores it in PostgreSQL, so "
    "every API server lists it). Needs "
    "this edge's token when the platform requires credentials.",
    response_model=EdgeStatusOut,
    responses={
        422: {"model": ErrorEnvelope, "description": "A field is invalid."},
        **AUTH_RESPONSES,
    },
)
async def put_status(ctx: Ctx, edge_id: EdgeId, body: EdgeStatusIn) -> EdgeStatusOut:
    """Store an edge's latest status."""
    received = ctx.clock()
    skew = ctx.ingestor.edges.put_status(
        edge_id,
        body.model_dump(mode="json"),
        edge_time_ns=body.edge_time_ns,
        received_ns=received,
    )
    return EdgeStatusOut(skew_s=skew)


@router.get(
    "/edges",
    dependencies=[READ],
    summary="List the edges",
    description="Every edge the platform heard from since it started, or holds batches "
    "of in its ingest ledger: last status, last seen, clock skew, and what was stored "
    "from it. Counters run since the platform started. With a shared historian "
    "(scaled out), every process's edges from PostgreSQL: counters run since the edge "
    "was first recorded there, and `low_water` and `gaps` are not tracked.",
    response_model=EdgesOut,
)
async def list_edges(ctx: Ctx) -> EdgesOut:
    """All known edges, sorted by id."""
    if ctx.ingestor.shared_edges is not None:
        return await _shared(ctx.ingestor.shared_edges)
    registry = ctx.ingestor.edges
    ledger = _per_edge(ctx.historian.ledger_stats())
    rows: list[EdgeOut] = []
    for edge in sorted({v.edge for v in registry.views()} | set(ledger)):
        view = registry.view(edge)
        stored = ledger.get(edge)
        status: dict[str, Any] | None = None
        if view is not None and view.status is not None:
            status = dict(view.status)
        last_seen = view.last_seen_ns if view is not None else None
        if stored is not None and stored.last_commit_ns is not None:
            last_seen = max(last_seen or 0, stored.last_commit_ns)
        rows.append(
            EdgeOut(
                edge=edge,
                last_seen=_iso(last_seen),
                status_at=_iso(view.status_at_ns if view is not None else None),
                status=status,
                skew_s=view.skew_s if view is not None else None,
                batches=stored.batches if stored is not None else 0,
                points=stored.points if stored is not None else 0,
                duplicates=stored.duplicates if stored is not None else 0,
                last_seq=stored.last_seq if stored is not None else None,
                low_water=stored.low_water if stored is not None else None,
                gaps=stored.gaps if stored is not None else 0,
                future_points=view.future_points if view is not None else 0,
            )
        )
    return EdgesOut(edges=rows, evicted=registry.evicted)


async def _shared(shared: SharedEdges) -> EdgesOut:
    """Scaled out: every process's edges from PostgreSQL (:mod:`~...ingest.pg_edges`).

    The ledger's low-water mark and gaps are not tracked there (each worker sees a share
    of an edge's seqs); the counters run since the edge's row was made.
    """
    try:
        stored = await shared.rows()
    except HistorianError as err:
        raise ApiError(503, "unavailable", None, str(err), headers={"Retry-After": "5"}) from err
    rows = [
        EdgeOut(
            edge=r.edge,
            last_seen=_iso(r.last_seen_ns),
            status_at=_iso(r.status_at_ns),
            status=None if r.status is None else dict(r.status),
            skew_s=r.skew_s,
            batches=r.batches,
            points=r.points,
            duplicates=r.duplicates,
            last_seq=r.last_seq,
            low_water=None,
            gaps=0,
            future_points=r.future_points,
        )
        for r in stored
    ]
    return EdgesOut(edges=rows, evicted=shared.evicted)


def _per_edge(streams: Mapping[str, EdgeLedgerStats]) -> dict[str, EdgeLedgerStats]:
    """The ledger by edge: an edge whose outbox was re-created has one stream per outbox.

    Counters add up; the seq figures are those of the stream committed to last (the
    outbox the edge uses now). Keys that are no edge (``import:…``) are left out.
    """
    grouped: dict[str, list[EdgeLedgerStats]] = {}
    for stream, stats in streams.items():
        edge = edge_of_stream(stream)
        if _EDGE_ID.match(edge):
            grouped.setdefault(edge, []).append(stats)
    out: dict[str, EdgeLedgerStats] = {}
    for edge, parts in grouped.items():
        current = max(parts, key=lambda p: p.last_commit_ns or 0)
        out[edge] = dataclasses.replace(
            current,
            batches=sum(p.batches for p in parts),
            points=sum(p.points for p in parts),
            duplicates=sum(p.duplicates for p in parts),
        )
    return out


def _iso(ns: int | None) -> str | None:
    return None if ns is None else format_ns(ns)
