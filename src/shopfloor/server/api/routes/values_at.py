"""Values of tags at given times: ``GET /api/v1/values/at``.

A shift report asks what a counter read at 06:00, 14:00 and 22:00, whether or not a point
was stored at exactly those times: the historian's ``read_at`` answers from the last Good
value before each time (``previous``, what a PLC holds) or the straight line between the
Good neighbours (``linear``). The answer is the same flat table as ``/api/v1/history``
(JSON rows, CSV, or Arrow IPC), so Grafana's Infinity data source and the Python client
read it alike.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import arrow_response, wants_arrow
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.flat import csv_bytes, json_rows_bytes
from shopfloor.server.api.queries import renamed_fields
from shopfloor.server.api.routes.history import (
    chosen_paths,
    parse_instant,
    wide_table,
    with_time,
    with_timestamp,
)
from shopfloor.server.api.schemas import ErrorEnvelope, ValueAtRow, WideRow
from shopfloor.server.api.scoping import Caller
from shopfloor.server.historian.base import Interpolation
from shopfloor.wire import ARROW_MEDIA_TYPE

__all__ = ["MAX_TIMES", "router"]

router = APIRouter(prefix="/api/v1", tags=["values"], dependencies=[READ])

MAX_TIMES = 10_000
"""The most times one query may name."""
_MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


@router.get(
    "/values/at",
    summary="Values of tags at given times",
    description=(
        "The value of each tag at each time in `at`, from its Good points: `previous` is "
        "the last Good value at or before the time, `linear` the straight line between the "
        "Good points around it (null after the last one). Null before a tag's first Good "
        "point. Long shape: columns `time`, `path`, `value`, sorted by time (repeated "
        "times in the order given), then by the order the tags were named; wide shape: "
        f"`time` and one column per tag. Ask with `Accept: {ARROW_MEDIA_TYPE}` for an "
        "Arrow IPC stream of the long table (`ts` a UTC timestamp instead of `time`)."
    ),
    response_model=list[ValueAtRow | WideRow],
    responses={
        200: {"content": {"text/csv": {}, ARROW_MEDIA_TYPE: {}}},
        404: {"model": ErrorEnvelope, "description": "A tag in `tags` does not exist."},
        422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
    },
)
async def values_at(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    at: Annotated[
        list[str],
        Query(
            description="Times, comma-separated and/or repeated: epoch milliseconds, ISO "
            "8601 (`2026-03-02T06:00:00+01:00`; use `.` before fractions of a second) or "
            f"relative to now (`now-8h`). At most {MAX_TIMES}.",
        ),
    ],
    tags: Annotated[
        list[str] | None,
        Query(description="Tag paths, comma-separated (Grafana: `${tag:csv}`) and/or repeated."),
    ] = None,
    prefix: Annotated[
        str | None,
        Query(description="Instead of `tags`: every tag at or below this asset path."),
    ] = None,
    method: Annotated[
        Interpolation,
        Query(description="`previous` (step: the last Good value) or `linear`."),
    ] = Interpolation.PREVIOUS,
    format: Annotated[
        Literal["json", "csv"], Query(description="JSON array of rows, or CSV with a header.")
    ] = "json",
    shape: Annotated[
        Literal["long", "wide"],
        Query(description="`long`: a `path` column; `wide`: one column per tag."),
    ] = "long",
    time_format: Annotated[
        Literal["iso", "ms"],
        Query(description="`time` as ISO 8601 UTC text, or as epoch milliseconds."),
    ] = "iso",
) -> Response:
    """Return the value of several tags at several times as one flat table."""
    paths = await chosen_paths(ctx.historian, tags, prefix, principal)
    now = ctx.clock()
    texts = [t.strip() for value in at for t in value.split(",") if t.strip()]
    if not texts:
        raise PayloadError("at", "name at least one time, e.g. at=2026-03-02T06:00:00Z")
    if len(texts) > MAX_TIMES:
        raise PayloadError("at", f"{len(texts)} times, more than {MAX_TIMES} in one query")
    times = np.array([parse_instant(t, now_ns=now, field="at") for t in texts], dtype=np.int64)
    names = {"times": "at", "start": "at", "end": "at", "paths": "tags", "method": "method"}
    try:
        with renamed_fields(names):
            table = await ctx.historian.read_at(paths, times, method=method)
    except UnknownTagError as err:
        raise ApiError(404, "not_found", "tags", f"no tag has the path {err.path!r}") from err
    long = _by_time(table, n_times=len(times))
    if wants_arrow(request):
        return arrow_response(with_timestamp(long), metadata={"method": method.value})
    flat = wide_table(paths, long) if shape == "wide" else long
    flat = with_time(flat, time_format)
    body = csv_bytes(flat) if format == "csv" else json_rows_bytes(flat)
    return Response(body, media_type=_MEDIA[format])


def _by_time(table: pa.Table, *, n_times: int) -> pa.Table:
    """``read_at``'s rows (per tag, times as given) sorted by time, the order given, tag.

    Columns: ts (int64 ns), path, value, as :func:`~.history.long_table` makes them.
    """
    path = table.column("path").combine_chunks()
    tag = np.asarray(path.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    ts = np.asarray(table.column("ts").combine_chunks().view(pa.int64()).to_numpy(), np.int64)
    given = np.arange(table.num_rows, dtype=np.int64) % max(n_times, 1)
    order = pa.array(np.lexsort((tag, given, ts)), pa.int64())
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()).take(order),
            "path": path.take(order),
            "value": table.column("value").combine_chunks().take(order),
        }
    )
