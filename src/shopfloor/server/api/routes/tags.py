"""Tags and their history: ``/api/v1/tags`` and ``/api/v1/tags/{path}/series``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from shopfloor.errors import PayloadError
from shopfloor.model import TagMeta
from shopfloor.model.tags import validate_path
from shopfloor.server.api.auth import INGEST, READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import (
    arrow_response,
    column_list,
    json_bytes,
    json_response,
    normalise_prefix,
    path_under,
    ts_strings,
    wants_arrow,
)
from shopfloor.server.api.edge_auth import AUTH_RESPONSES, edge_identity
from shopfloor.server.api.queries import (
    BAD_COLUMN,
    MAX_BUCKETS,
    bucket_count,
    non_empty_rows,
    parse_aggregates,
    parse_bucket,
    parse_tz,
    renamed_fields,
)
from shopfloor.server.api.schemas import (
    ErrorEnvelope,
    SeriesOut,
    TagIn,
    TagOut,
    TagsIn,
    TagsOut,
    TagsRegistered,
)
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.api.timeparse import format_ns, parse_time
from shopfloor.server.historian.base import Aggregate, Historian
from shopfloor.server.security.scoping import allowed
from shopfloor.wire import ARROW_MEDIA_TYPE

__all__ = ["MAX_BUCKETS", "MAX_LIMIT", "router"]

router = APIRouter(prefix="/api/v1", tags=["tags"])

MAX_LIMIT = 1_000_000
"""The most rows one series query may return."""
_HOUR_NS = 3_600_000_000_000
_INLINE_ROWS = 20_000
"""Answers up to this many rows are serialised on the event loop; larger ones in a thread."""
_TIME_DOC = (
    "ISO 8601 (`2026-01-01T08:00:00Z`, `2026-01-01T09:00:00+01:00`; a time without an "
    "offset is read as UTC) or relative to now (`now`, `-1h`, `now-15m`, `-500ms`)."
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No tag has this path."},
    422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
}

PrefixQuery = Annotated[
    str | None,
    Query(
        description="Only tags at or below this asset path (whole segments), "
        "e.g. `acme/plant-1/machining`.",
        examples=["acme/plant-1/machining"],
    ),
]


def _tag_out(meta: TagMeta) -> TagOut:
    return TagOut(
        path=meta.path,
        name=meta.name,
        asset=meta.asset,
        unit=meta.unit,
        description=meta.description,
        data_type=meta.data_type,
        eng_low=meta.eng_low,
        eng_high=meta.eng_high,
        states={str(k): v for k, v in meta.states},
    )


@router.get(
    "/tags",
    dependencies=[READ],
    summary="List tags",
    description="Every tag the historian knows, with its metadata, sorted by path.",
    response_model=TagsOut,
    responses={422: _ERRORS[422]},
)
async def list_tags(ctx: Ctx, principal: Caller, prefix: PrefixQuery = None) -> TagsOut:
    """List tags, optionally under an asset path (only those within the caller's sites)."""
    wanted = normalise_prefix(prefix)
    metas = sorted(await ctx.historian.tags(), key=lambda m: m.path)
    return TagsOut(
        tags=[
            _tag_out(m) for m in metas if path_under(m.path, wanted) and allowed(principal, m.path)
        ]
    )


def _tag_meta(index: int, tag: TagIn) -> TagMeta:
    try:
        path = validate_path(tag.path)
        states = tuple(sorted((int(k), v) for k, v in tag.states.items()))
    except ValueError as err:
        raise PayloadError(f"tags[{index}]", str(err)) from err
    return TagMeta(
        path=path,
        unit=tag.unit,
        description=tag.description,
        data_type=tag.data_type,
        eng_low=tag.eng_low,
        eng_high=tag.eng_high,
        states=states,
    )


@router.put(
    "/tags",
    dependencies=[INGEST, Depends(edge_identity)],
    summary="Create or update tags",
    description="Edges announce their tags' metadata (unit, range, state labels) here "
    "before sending values; tags are keyed by path. Needs an edge's token when the "
    "platform requires credentials.",
    response_model=TagsRegistered,
    responses={422: _ERRORS[422], **AUTH_RESPONSES},
)
async def register_tags(ctx: Ctx, principal: Caller, body: TagsIn) -> TagsRegistered:
    """Create or update tag metadata (a user limited to sites: only tags within them)."""
    metas = [_tag_meta(i, t) for i, t in enumerate(body.tags)]
    for i, meta in enumerate(metas):
        require_path(principal, meta.path, field=f"tags[{i}].path")
    await ctx.historian.register_tags(metas)
    return TagsRegistered(registered=len(metas))


@router.get(
    "/tags/{path:path}/series",
    dependencies=[READ],
    summary="Read a tag's history",
    description=(
        "Raw points of one tag over `[start, end)`, or with `bucket` the aggregates of its "
        "Good points per time bucket. Buckets follow the wall clock of `tz` (UTC by "
        "default); empty buckets (no usable point, no value held) are left out. Ask with "
        f"`Accept: {ARROW_MEDIA_TYPE}` for an Arrow IPC stream of the same columns instead "
        "of JSON."
    ),
    response_model=SeriesOut,
    responses={200: {"content": {ARROW_MEDIA_TYPE: {}}}, **_ERRORS},
)
async def read_series(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    path: str,
    start: Annotated[
        str | None, Query(description=f"Start, inclusive. {_TIME_DOC} Default: end - 1h.")
    ] = None,
    end: Annotated[
        str | None, Query(description=f"End, exclusive. {_TIME_DOC} Default: now.")
    ] = None,
    bucket: Annotated[
        str | None,
        Query(
            description="Bucket width: `500ms`, `30s`, `1m`, `1h`, or the calendar units "
            "`1d`, `1w` (ISO weeks), `1mo`, `3mo`, `1y` from local midnight in `tz`. "
            "Omit for raw points."
        ),
    ] = None,
    agg: Annotated[
        str | None,
        Query(
            description="With `bucket`: comma-separated aggregates from "
            f"{', '.join(a.value for a in Aggregate)}. Default: avg. `bad` adds a column "
            "counting the bucket's points that are not Good."
        ),
    ] = None,
    tz: Annotated[
        str | None,
        Query(
            description="With `bucket`: the IANA time zone whose wall clock the buckets "
            "follow, e.g. `Europe/Berlin`. Default: UTC."
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="The most rows to return, oldest first.")
    ] = 100_000,
) -> Response:
    """Return raw points or bucketed aggregates of one tag."""
    require_path(principal, path, field="path")
    now = ctx.clock()
    end_ns = parse_time(end, now_ns=now, field="end") if end else now
    start_ns = parse_time(start, now_ns=now, field="start") if start else end_ns - _HOUR_NS
    if start_ns >= end_ns:
        raise PayloadError(
            "start", f"start ({format_ns(start_ns)}) must be before end ({format_ns(end_ns)})"
        )
    if bucket is None:
        for name, given in (("agg", agg), ("tz", tz)):
            if given:
                raise PayloadError(name, f"{name} needs a bucket, e.g. bucket=1m&{name}=…")
        table = await ctx.historian.read_raw(path, start_ns, end_ns, limit=limit + 1)
    else:
        table = await _read_buckets(
            ctx.historian, path, start_ns, end_ns, bucket=bucket, agg=agg, tz=parse_tz(tz)
        )
    truncated = table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    head: dict[str, Any] = {
        "path": path,
        "start": format_ns(start_ns),
        "end": format_ns(end_ns),
        "bucket": bucket,
        "truncated": truncated,
    }
    if wants_arrow(request):
        meta = {k: ("" if v is None else str(v)) for k, v in head.items()}
        meta["truncated"] = "true" if truncated else "false"
        return arrow_response(table, metadata=meta)
    if table.num_rows <= _INLINE_ROWS:
        return json_response({**head, "columns": _columns(table)})
    body = await asyncio.to_thread(lambda: json_bytes({**head, "columns": _columns(table)}))
    return Response(body, media_type="application/json")


async def _read_buckets(
    historian: Historian,
    path: str,
    start_ns: int,
    end_ns: int,
    *,
    bucket: str,
    agg: str | None,
    tz: str | None,
) -> pa.Table:
    """The non-empty buckets of one tag: ts and the aggregates (and ``bad``) asked for."""
    size = parse_bucket(bucket, field="bucket")
    buckets = bucket_count(start_ns, end_ns, size)
    if buckets > MAX_BUCKETS:
        raise PayloadError(
            "bucket",
            f"{bucket} buckets from {format_ns(start_ns)} to {format_ns(end_ns)} make "
            f"{buckets} buckets, more than {MAX_BUCKETS}; choose a wider bucket or a "
            "shorter range",
        )
    aggregates, bad = parse_aggregates(agg)
    names = {"start": "start", "end": "end", "bucket": "bucket", "tz": "tz", "paths": "path"}
    with renamed_fields(names):
        table = await historian.read_buckets(
            [path], start_ns, end_ns, bucket=size, aggregates=aggregates, tz=tz
        )
    table = table.drop_columns(["path"] if bad else ["path", BAD_COLUMN])
    shown = [n for n in table.column_names if n != "ts"]
    return table.filter(pa.array(non_empty_rows(table, shown)))


def _columns(table: pa.Table) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        column = table.column(name)
        columns[name] = ts_strings(column) if name == "ts" else column_list(column)
    return columns
