"""History of many tags as one flat table: ``GET /api/v1/history``.

Made for tools that read a JSON or CSV URL as a table with no transformation, Grafana's
Infinity data source above all (docs/grafana.md): times may be epoch milliseconds as
Grafana's ``${__from}``/``${__to}`` give them, the bucket width comes as
``${__interval_ms}`` (or ``interval=1d``, a calendar unit in the plant's time zone
``tz``), and the answer is a top-level JSON array of rows (or CSV) in long form
(``time, path, value…``) or wide form (``time`` and one column per tag). The Python client
asks for the same table as an Arrow IPC stream.

:func:`read_history` is the one function that reads: ``read_raw`` per tag for raw points,
one ``read_buckets`` call for the buckets of every tag.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model.points import Int64Array
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import arrow_response, normalise_prefix, path_under, wants_arrow
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.flat import csv_bytes, json_rows_bytes
from shopfloor.server.api.queries import (
    BAD_COLUMN,
    MAX_BUCKETS,
    MAX_WIDTH_NS,
    bucket_count,
    non_empty_rows,
    parse_aggregates,
    parse_bucket,
    parse_tz,
    renamed_fields,
)
from shopfloor.server.api.routes.tags import MAX_LIMIT
from shopfloor.server.api.schemas import ErrorEnvelope, HistoryRow, WideRow
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.api.timeparse import format_ns, parse_time
from shopfloor.server.historian.base import Aggregate, BucketSize, Historian
from shopfloor.server.security.scoping import allowed
from shopfloor.server.security.service import Principal
from shopfloor.wire import ARROW_MEDIA_TYPE

__all__ = [
    "MAX_ROWS",
    "MAX_TAGS",
    "TRUNCATED_HEADER",
    "HistoryAnswer",
    "HistoryQuery",
    "chosen_paths",
    "parquet_bytes",
    "parse_instant",
    "read_history",
    "router",
    "wide_table",
    "with_time",
    "with_timestamp",
]

router = APIRouter(prefix="/api/v1", tags=["history"], dependencies=[READ])

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
_AGGREGATES_DOC = ", ".join(a.value for a in Aggregate)
_MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_TS_TYPE = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A checked history query.

    Attributes:
        paths: the tags, each once, in the order of the answer's ties.
        start_ns, end_ns: the range ``[start_ns, end_ns)``.
        bucket: a width in nanoseconds or a calendar unit; None for raw points.
        aggregates: the aggregates per bucket, in the order of their columns.
        tz: the IANA zone the buckets follow (None: UTC).
        bad: give the ``bad`` column (and let a bucket with only non-Good points show).
        fill: give every bucket, empty ones with nulls; else leave empty ones out.
        limit: the most rows per tag, oldest first.
    """

    paths: list[str]
    start_ns: int
    end_ns: int
    bucket: BucketSize | None = None
    aggregates: Sequence[Aggregate] = ()
    tz: str | None = None
    bad: bool = True
    fill: bool = False
    limit: int = 100_000


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    """What :func:`read_history` found.

    Attributes:
        table: ``ts`` (int64 UTC ns), ``path`` (dictionary-encoded, in the query's order)
            and the value columns, sorted by time, then by tag order.
        truncated: some tag had more rows than the query's limit.
    """

    table: pa.Table
    truncated: bool


@router.get(
    "/history",
    summary="History of many tags as one flat table",
    description=(
        "Raw points, or with `interval_ms` or `interval` the aggregates of Good points per "
        "bucket, of several tags over `[from, to)`, as a JSON array of rows or CSV that "
        "Grafana's Infinity data source reads without transformation (see "
        "docs/grafana.md). Long shape: one row per tag and time, columns `time`, `path`, "
        "then `value`, `quality`, `text` (raw) or one column per aggregate and `bad` (the "
        "bucket's points that are not Good, left out of every aggregate). Wide shape: "
        "`time` and one column per tag (`path`, or `path:agg` with several aggregates); a "
        "tag without a value at a time has null there. Buckets follow the wall clock of "
        "`tz`; empty buckets are left out unless `fill=null`. Rows are sorted by time, "
        f"then by the order the tags were named. `{TRUNCATED_HEADER}: true` says some tag "
        f"had more than `limit` rows. Ask with `Accept: {ARROW_MEDIA_TYPE}` for an Arrow "
        "IPC stream of the same table (`ts` a UTC timestamp instead of `time`)."
    ),
    response_model=list[HistoryRow | WideRow],
    responses={
        200: {"content": {"text/csv": {}, ARROW_MEDIA_TYPE: {}}},
        404: {"model": ErrorEnvelope, "description": "A tag in `tags` does not exist."},
        422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
    },
)
async def read_history_route(
    ctx: Ctx,
    request: Request,
    principal: Caller,
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
            le=MAX_WIDTH_NS // _MS_NS,
            description="Bucket width in milliseconds (Grafana: `${__interval_ms}`); "
            "omit it and `interval` for raw points.",
        ),
    ] = None,
    interval: Annotated[
        str | None,
        Query(
            description="Instead of `interval_ms`: `500ms`, `30s`, `15m`, `1h` (fixed "
            "widths) or the calendar units `1d`, `1w` (ISO weeks from Monday), `1mo` (or "
            "`1M`), `3mo` (quarters), `1y`, from local midnight in `tz`.",
        ),
    ] = None,
    agg: Annotated[
        str | None,
        Query(
            description="With an interval: comma-separated aggregates from "
            f"{_AGGREGATES_DOC}. Default: avg. `bad` adds the count of non-Good points as "
            "a column of the wide shape (the long shape always has it).",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        Query(
            description="With an interval: the IANA time zone whose wall clock the buckets "
            "follow, e.g. `Europe/Berlin` or Grafana's `${__timezone}` (a `1d` bucket runs "
            "local midnight to midnight, 23 or 25 hours across a DST change). Default: UTC.",
        ),
    ] = None,
    fill: Annotated[
        Literal["none", "null"],
        Query(
            description="With an interval: `none` leaves out empty buckets (nothing to "
            "show: no usable point, no bad point, no value held); `null` gives every "
            "bucket, with nulls."
        ),
    ] = "none",
    format: Annotated[
        Literal["json", "csv", "parquet"],
        Query(
            description="JSON array of rows, CSV with a header, or a Parquet file (`ts` a "
            "UTC timestamp column instead of `time`, `path` text; the layout of "
            "`shopfloor export`)."
        ),
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
    paths = await chosen_paths(ctx.historian, tags, prefix, principal)
    now = ctx.clock()
    end_ns = parse_instant(end, now_ns=now, field="to") if end else now
    start_ns = parse_instant(start, now_ns=now, field="from") if start else end_ns - _HOUR_NS
    if start_ns >= end_ns:
        raise PayloadError(
            "from", f"from ({format_ns(start_ns)}) must be before to ({format_ns(end_ns)})"
        )
    bucket, interval_field = _chosen_bucket(interval_ms, interval, start_ns, end_ns)
    per_tag = max(1, min(limit, MAX_ROWS // len(paths)))
    if bucket is None:
        needs_interval = {"agg": bool(agg), "tz": bool(tz), "fill": fill != "none"}
        if any(needs_interval.values()):
            name = next(n for n, given in needs_interval.items() if given)
            raise PayloadError(name, f"{name} needs an interval, e.g. interval_ms=60000")
        query = HistoryQuery(paths, start_ns, end_ns, limit=per_tag)
    else:
        aggregates, bad_asked = parse_aggregates(agg)
        query = HistoryQuery(
            paths,
            start_ns,
            end_ns,
            bucket=bucket,
            aggregates=aggregates,
            tz=parse_tz(tz),
            bad=shape == "long" or bad_asked,
            fill=fill == "null",
            limit=per_tag,
        )
    try:
        with renamed_fields({"bucket": interval_field, "start": "from", "end": "to", "tz": "tz"}):
            answer = await read_history(ctx.historian, query)
    except UnknownTagError as err:
        raise ApiError(404, "not_found", "tags", f"no tag has the path {err.path!r}") from err
    long = answer.table
    truncated = "true" if answer.truncated else "false"
    if wants_arrow(request):
        table = wide_table(paths, long) if shape == "wide" else long
        meta = {"start": format_ns(start_ns), "end": format_ns(end_ns), "truncated": truncated}
        return arrow_response(with_timestamp(table), metadata=meta)

    def encode() -> bytes:
        table = wide_table(paths, long) if shape == "wide" else long
        if format == "parquet":
            return parquet_bytes(with_timestamp(table))
        table = with_time(table, time_format)
        return csv_bytes(table) if format == "csv" else json_rows_bytes(table)

    body = encode() if long.num_rows <= _INLINE_ROWS else await asyncio.to_thread(encode)
    headers = {TRUNCATED_HEADER: truncated}
    if format == "parquet":  # a binary file: saved, never shown
        headers["Content-Disposition"] = 'attachment; filename="history.parquet"'
    return Response(body, media_type=_MEDIA[format], headers=headers)


def _chosen_bucket(
    interval_ms: int | None, interval: str | None, start_ns: int, end_ns: int
) -> tuple[BucketSize | None, str]:
    """The bucket asked for (None: raw points) and the name of the parameter that asked."""
    if interval_ms is not None and interval is not None:
        raise PayloadError("interval", "give interval or interval_ms, not both")
    if interval is not None:
        bucket: BucketSize = parse_bucket(interval, field="interval")
        field = "interval"
    elif interval_ms is not None:
        bucket, field = interval_ms * _MS_NS, "interval_ms"
    else:
        return None, "interval_ms"
    buckets = bucket_count(start_ns, end_ns, bucket)
    if buckets > MAX_BUCKETS:
        given = interval if interval is not None else f"{interval_ms} ms"
        raise PayloadError(
            field,
            f"{given} buckets from {format_ns(start_ns)} to {format_ns(end_ns)} make "
            f"{buckets} buckets, more than {MAX_BUCKETS}; choose a wider interval or a "
            "shorter range",
        )
    return bucket, field


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


async def chosen_paths(
    historian: Historian,
    tags: Sequence[str] | None,
    prefix: str | None,
    principal: Principal | None = None,
) -> list[str]:
    """The tags a query names, each once, in the order given (or sorted, for a prefix).

    A prefix is narrowed to the principal's sites; a named tag outside them is refused.

    Raises:
        PayloadError: none, both ``tags`` and ``prefix``, or more than :data:`MAX_TAGS`.
        ApiError: 403 for a named tag outside the principal's sites.
    """
    if tags and prefix is not None:
        raise PayloadError("prefix", "give tags or prefix, not both")
    if prefix is not None:
        wanted = normalise_prefix(prefix)
        paths = [
            m.path
            for m in await historian.tags()
            if path_under(m.path, wanted) and allowed(principal, m.path)
        ]
        if not paths:
            raise PayloadError("prefix", f"no tag is at or below {prefix!r:.80}")
        paths.sort()
    else:
        split = (p.strip() for value in tags or () for p in value.split(","))
        paths = list(dict.fromkeys(p for p in split if p))
        if not paths:
            raise PayloadError("tags", "name at least one tag, e.g. tags=site/line/machine/temp")
        for path in paths:
            require_path(principal, path, field="tags")
    if len(paths) > MAX_TAGS:
        field = "prefix" if prefix is not None else "tags"
        raise PayloadError(field, f"{len(paths)} tags, more than {MAX_TAGS} in one query")
    return paths


async def read_history(historian: Historian, query: HistoryQuery) -> HistoryAnswer:
    """Raw points (``query.bucket`` None: ``read_raw`` per tag, concurrently) or the
    buckets of every tag (one ``read_buckets`` call), as one long table.

    Raises:
        UnknownTagError: a path names no tag.
        PayloadError: the historian refused the query (its own argument names).
    """
    if query.bucket is None:
        reads = [
            historian.read_raw(p, query.start_ns, query.end_ns, limit=query.limit + 1)
            for p in query.paths
        ]
        tables = list(await asyncio.gather(*reads))
        truncated = any(t.num_rows > query.limit for t in tables)
        tables = [t.slice(0, query.limit) for t in tables]
        return HistoryAnswer(long_table(query.paths, tables), truncated)
    table = await historian.read_buckets(
        query.paths,
        query.start_ns,
        query.end_ns,
        bucket=query.bucket,
        aggregates=query.aggregates,
        tz=query.tz,
    )
    if not query.bad:
        table = table.drop_columns([BAD_COLUMN])
    return _bucket_rows(table, query)


def _bucket_rows(table: pa.Table, query: HistoryQuery) -> HistoryAnswer:
    """Leave out empty buckets (unless filling), keep ``limit`` per tag, sort by time."""
    values = [n for n in table.column_names if n not in ("path", "ts")]
    keep = np.ones(table.num_rows, np.bool_) if query.fill else non_empty_rows(table, values)
    path = table.column("path").combine_chunks()
    tag = np.asarray(path.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    ts = _ns(table.column("ts"))
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((ts[rows], tag[rows]))]  # by tag, then time
    first_of_tag = np.searchsorted(tag[rows], tag[rows], side="left")
    rank = np.arange(len(rows)) - first_of_tag
    truncated = bool((rank >= query.limit).any())
    rows = rows[rank < query.limit]
    rows = rows[np.lexsort((tag[rows], ts[rows]))]  # by time, then tag
    take = pa.array(rows, pa.int64())
    columns: dict[str, Any] = {
        "ts": pa.array(ts[rows], pa.int64()),
        "path": pa.DictionaryArray.from_arrays(
            pa.array(tag[rows], pa.int32()), pa.array(query.paths, pa.string())
        ),
    }
    for name in values:
        columns[name] = table.column(name).combine_chunks().take(take)
    return HistoryAnswer(pa.table(columns), truncated)


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
        # the type is given: a tag without points in range has a column without chunks,
        # from which pyarrow would infer the null type and refuse the next tag's values
        chunks = [t.column(name) for t in tables]
        column = pa.chunked_array(chunks, type=tables[0].schema.field(name).type)
        column = column.combine_chunks()
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


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as a Parquet file (zstd), ``path`` as plain text so any reader takes it.

    The columns are those of ``shopfloor export``'s Parquet files (``ts`` a UTC timestamp),
    so a file saved from the dashboard and one exported on the server read the same way.
    """
    if "path" in table.column_names:
        index = table.column_names.index("path")
        table = table.set_column(index, "path", pc.cast(table.column("path"), pa.string()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def with_time(table: pa.Table, time_format: Literal["iso", "ms"]) -> pa.Table:
    """Replace ``ts`` (int64 ns) by ``time`` in the format asked for."""
    ts = _ns(table.column("ts"))
    time = pa.array(ts // _MS_NS, type=pa.int64()) if time_format == "ms" else _iso_array(ts)
    return table.drop_columns(["ts"]).add_column(0, "time", time)


def with_timestamp(table: pa.Table) -> pa.Table:
    """Replace ``ts`` (int64 ns) by a UTC timestamp column of the same name (Arrow)."""
    ts = pa.array(_ns(table.column("ts")), pa.int64()).view(_TS_TYPE)
    return table.set_column(table.column_names.index("ts"), "ts", ts)


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
