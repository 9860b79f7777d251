"""History of many tags as one flat table: ``GET /api/v1/history``.

Made for tools that read a JSON or CSV URL as a table with no transformation, Grafana's
Infinity data source above all (docs/grafana.md): times may be epoch milliseconds as
Grafana's ``${__from}``/``${__to}`` give them, the bucket width comes as
``${__interval_ms}``, and the answer is a top-level JSON array of rows (or CSV) in long
form (``time, path, value…``) or wide form (``time`` and one column per tag).

Until the historian protocol grows a many-tag read (``read_buckets``/``read_at``, in
progress), :func:`read_history` asks for one tag at a time through ``read_raw`` and
``read_aggregates``; it is the one function to switch when that lands.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Query
from starlette.responses import Response

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model.points import Int64Array
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import normalise_prefix, path_under
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.flat import csv_bytes, json_rows_bytes
from shopfloor.server.api.routes.tags import MAX_BUCKETS, MAX_LIMIT
from shopfloor.server.api.schemas import ErrorEnvelope, HistoryRow
from shopfloor.server.api.timeparse import format_ns, parse_time
from shopfloor.server.historian.base import Aggregate, Historian

__all__ = ["MAX_ROWS", "MAX_TAGS", "TRUNCATED_HEADER", "read_history", "router"]

router = APIRouter(prefix="/api/v1", tags=["history"])

MAX_TAGS = 100
"""The most tags one history query may name."""
MAX_ROWS = 1_000_000
"""The most rows one history answer holds, over all tags."""
TRUNCATED_HEADER = "X-Shopfloor-Truncated"
"""``true`` when some tag had more rows than ``limit`` (its oldest ``limit`` are given)."""

_HOUR_NS = 3_600_000_000_000
_MS_NS = 1_000_000
_EPOCH_MS = re.compile(r"^\s*-?\d{1,16}\s*$")
_INLINE_ROWS = 20_000
"""Answers up to this many rows are encoded on the event loop; larger ones in a thread."""
_TIME_DOC = (
    "Epoch milliseconds (Grafana's `${__from}`), ISO 8601 (`2026-01-01T08:00:00Z`; no "
    "offset means UTC) or relative to now (`now`, `now-6h`, `-15m`)."
)
_MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


@router.get(
    "/history",
    summary="History of many tags as one flat table",
    description=(
        "Raw points, or with `interval_ms` the aggregates of Good points per bucket, of "
        "several tags over `[from, to)`, as a JSON array of rows or CSV that Grafana's "
        "Infinity data source reads without transformation (see docs/grafana.md). Long "
        "shape: one row per tag and time, columns `time`, `path`, then `value`, "
        "`quality`, `text` (raw) or one column per aggregate. Wide shape: `time` and one "
        "column per tag (`path`, or `path:agg` with several aggregates); a tag without "
        "a value at a time has null there. Rows are sorted by time, then by the order "
        f"the tags were named. `{TRUNCATED_HEADER}: true` says some tag had more than "
        "`limit` rows."
    ),
    response_model=list[HistoryRow],
    responses={
        200: {"content": {"text/csv": {}}},
        404: {"model": ErrorEnvelope, "description": "A tag in `tags` does not exist."},
        422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
    },
)
async def read_history_route(
    ctx: Ctx,
    *,
    tags: Annotated[
        list[str] | None,
        Query(
            description="Tag paths, comma-separated (Grafana: `${tag:csv}`) and/or repeated. "
            "A path that contains a comma can be read through `prefix`.",
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        Query(description="Instead of `tags`: every tag at or below this asset path."),
    ] = None,
    start: Annotated[
        str | None,
        Query(alias="from", description=f"Start, inclusive. {_TIME_DOC} Default: to - 1h."),
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description=f"End, exclusive. {_TIME_DOC} Default: now.")
    ] = None,
    interval_ms: Annotated[
        int | None,
        Query(
            ge=1,
            description="Bucket width in milliseconds (Grafana: `${__interval_ms}`); "
            "omit for raw points.",
        ),
    ] = None,
    agg: Annotated[
        str | None,
        Query(
            description="With `interval_ms`: comma-separated aggregates from "
            f"{', '.join(a.value for a in Aggregate)}. Default: avg."
        ),
    ] = None,
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
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="The most rows per tag, oldest first.")
    ] = 100_000,
) -> Response:
    """Return raw points or bucketed aggregates of several tags as one flat table."""
    paths = await _chosen_paths(ctx.historian, tags, prefix)
    now = ctx.clock()
    end_ns = parse_instant(end, now_ns=now, field="to") if end else now
    start_ns = parse_instant(start, now_ns=now, field="from") if start else end_ns - _HOUR_NS
    if start_ns >= end_ns:
        raise PayloadError(
            "from", f"from ({format_ns(start_ns)}) must be before to ({format_ns(end_ns)})"
        )
    bucket_ns: int | None = None
    aggregates: list[Aggregate] = []
    if interval_ms is None:
        if agg:
            raise PayloadError("agg", "agg needs interval_ms, e.g. interval_ms=60000&agg=avg,max")
    else:
        bucket_ns = interval_ms * _MS_NS
        buckets = (end_ns - 1) // bucket_ns - start_ns // bucket_ns + 1
        if buckets > MAX_BUCKETS:
            raise PayloadError(
                "interval_ms",
                f"{interval_ms} ms buckets from {format_ns(start_ns)} to {format_ns(end_ns)} "
                f"make {buckets} buckets, more than {MAX_BUCKETS}; choose a wider interval "
                "or a shorter range",
            )
        aggregates = _parse_aggregates(agg)
    per_tag = max(1, min(limit, MAX_ROWS // len(paths)))
    try:
        tables = await read_history(
            ctx.historian,
            paths,
            start_ns,
            end_ns,
            bucket_ns=bucket_ns,
            aggregates=aggregates,
            limit=per_tag + 1,
        )
    except UnknownTagError as err:
        raise ApiError(404, "not_found", "tags", f"no tag has the path {err.path!r}") from err
    truncated = any(t.num_rows > per_tag for t in tables)
    tables = [t.slice(0, per_tag) for t in tables]
    long = long_table(paths, tables)

    def encode() -> bytes:
        table = wide_table(paths, long) if shape == "wide" else long
        table = _with_time(table, time_format)
        return csv_bytes(table) if format == "csv" else json_rows_bytes(table)

    body = encode() if long.num_rows <= _INLINE_ROWS else await asyncio.to_thread(encode)
    headers = {TRUNCATED_HEADER: "true" if truncated else "false"}
    return Response(body, media_type=_MEDIA[format], headers=headers)


def parse_instant(text: str, *, now_ns: int, field: str) -> int:
    """Return ``text`` in UTC nanoseconds: epoch milliseconds (digits only), else any time
    :func:`~shopfloor.server.api.timeparse.parse_time` reads.

    Raises:
        PayloadError: neither form, naming ``field``.
    """
    if _EPOCH_MS.match(text):
        ns = int(text) * _MS_NS
        if not -(2**63) <= ns < 2**63:
            raise PayloadError(field, f"{field} is outside the years 1677 to 2262, got {text!r}")
        return ns
    return parse_time(text, now_ns=now_ns, field=field)


def _parse_aggregates(agg: str | None) -> list[Aggregate]:
    names = [a.strip().lower() for a in (agg or "avg").split(",") if a.strip()]
    chosen: list[Aggregate] = []
    for name in names or ["avg"]:
        try:
            chosen.append(Aggregate(name))
        except ValueError as err:
            raise PayloadError(
                "agg",
                f"unknown aggregate {name!r:.30}; choose from "
                f"{', '.join(a.value for a in Aggregate)}",
            ) from err
    return list(dict.fromkeys(chosen))


async def _chosen_paths(
    historian: Historian, tags: Sequence[str] | None, prefix: str | None
) -> list[str]:
    """The tags a query names, each once, in the order given (or sorted, for a prefix)."""
    if tags and prefix is not None:
        raise PayloadError("prefix", "give tags or prefix, not both")
    if prefix is not None:
        wanted = normalise_prefix(prefix)
        paths = [m.path for m in await historian.tags() if path_under(m.path, wanted)]
        if not paths:
            raise PayloadError("prefix", f"no tag is at or below {prefix!r:.80}")
        paths.sort()
    else:
        split = (p.strip() for value in tags or () for p in value.split(","))
        paths = list(dict.fromkeys(p for p in split if p))
        if not paths:
            raise PayloadError("tags", "name at least one tag, e.g. tags=site/line/machine/temp")
    if len(paths) > MAX_TAGS:
        field = "prefix" if prefix is not None else "tags"
        raise PayloadError(field, f"{len(paths)} tags, more than {MAX_TAGS} in one query")
    return paths


async def read_history(
    historian: Historian,
    paths: Sequence[str],
    start_ns: int,
    end_ns: int,
    *,
    bucket_ns: int | None,
    aggregates: Sequence[Aggregate],
    limit: int,
) -> list[pa.Table]:
    """One table per path over ``[start_ns, end_ns)``: raw points (``bucket_ns`` None,
    at most ``limit``) or aggregates per bucket (at most ``limit`` buckets).

    For now one historian query per tag, run concurrently (each backend bounds its own
    read connections); to be replaced by the many-tag ``Historian.read_buckets`` once the
    protocol has it.

    Raises:
        UnknownTagError: a path names no tag.
    """
    if bucket_ns is None:
        reads = [historian.read_raw(p, start_ns, end_ns, limit=limit) for p in paths]
        return list(await asyncio.gather(*reads))
    reads = [
        historian.read_aggregates(p, start_ns, end_ns, bucket_ns=bucket_ns, aggregates=aggregates)
        for p in paths
    ]
    return [t.slice(0, limit) for t in await asyncio.gather(*reads)]


def long_table(paths: Sequence[str], tables: Sequence[pa.Table]) -> pa.Table:
    """Stack per-tag tables into one with ``ts`` (int64 ns), ``path`` (dictionary-encoded)
    and their other columns, sorted by time, then by tag order."""
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    tag_index = np.repeat(np.arange(len(paths), dtype=np.int32), counts)
    names = [n for n in tables[0].column_names if n != "ts"] if tables else []
    ts = _ns(pa.chunked_array([t.column("ts") for t in tables], type=pa.timestamp("ns", "UTC")))
    order = np.lexsort((tag_index, ts))
    columns: dict[str, Any] = {
        "ts": pa.array(ts[order], type=pa.int64()),
        "path": pa.DictionaryArray.from_arrays(
            pa.array(tag_index[order], type=pa.int32()), pa.array(paths, type=pa.string())
        ),
    }
    for name in names:
        column = pa.chunked_array([t.column(name) for t in tables]).combine_chunks()
        columns[name] = column.take(pa.array(order))
    return pa.table(columns)


def wide_table(paths: Sequence[str], long: pa.Table) -> pa.Table:
    """Pivot a :func:`long_table` to ``ts`` and one column per tag (``path``, or
    ``path:agg`` when there are several value columns); raw points keep ``value`` only."""
    value_names = [n for n in long.column_names if n not in {"ts", "path", "quality", "text"}]
    ts = _ns(long.column("ts"))
    times, row = np.unique(ts, return_inverse=True)
    tag = long.column("path").combine_chunks().indices.to_numpy(zero_copy_only=False)
    columns: dict[str, pa.Array] = {"ts": pa.array(times, type=pa.int64())}
    values = {name: long.column(name).combine_chunks() for name in value_names}
    for i, path in enumerate(paths):
        mine = np.flatnonzero(tag == i)
        # of two points of one tag at one time, the later one (in the long table) wins
        last_first, first_seen = np.unique(row[mine][::-1], return_index=True)
        keep = mine[len(mine) - 1 - first_seen]
        for name, column in values.items():
            filled = np.full(len(times), np.nan)
            filled[last_first] = column.take(pa.array(keep)).to_numpy(zero_copy_only=False)
            array = pa.array(filled, mask=np.isnan(filled), type=pa.float64())
            if pa.types.is_integer(column.type):
                array = array.cast(pa.int64())
            columns[path if len(values) == 1 else f"{path}:{name}"] = array
    return pa.table(columns)


def _with_time(table: pa.Table, time_format: Literal["iso", "ms"]) -> pa.Table:
    """Replace ``ts`` (int64 ns) by ``time`` in the format asked for."""
    ts = _ns(table.column("ts"))
    time = pa.array(ts // _MS_NS, type=pa.int64()) if time_format == "ms" else _iso_array(ts)
    return table.drop_columns(["ts"]).add_column(0, "time", time)


def _iso_array(ts: Int64Array) -> pa.Array:
    """ISO 8601 UTC text, millisecond precision unless finer digits are needed (as the
    rest of the API writes times), converted by numpy without Python strings."""
    unit: Literal["ms", "us", "ns"] = "ms"
    if len(ts) and (ts % _MS_NS).any():
        unit = "ns" if (ts % 1000).any() else "us"
    moments = ts.view("datetime64[ns]")
    return pa.array(np.datetime_as_string(moments, unit=unit, timezone="UTC"), type=pa.string())


def _ns(column: pa.ChunkedArray | pa.Array) -> Int64Array:
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
