"""Tables and queries of the DuckDB historian.

Points live in one narrow table without indexes: an index on a billion-row table costs
more on every insert than it saves on reads, while DuckDB's per-row-group min/max zone
maps already skip row groups outside a queried time range. The writer inserts rows sorted
by ``(tag_id, ts)`` per commit, which keeps those zone maps tight and compresses better.

``latest`` holds one row per tag, written in the same transaction as the points, so the
last value of every tag survives a restart without scanning ``points``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.model import DataType, TagMeta
from shopfloor.server.historian.base import Aggregate

SCHEMA_VERSION = 1

POINTS_DDL = (
    "CREATE TABLE IF NOT EXISTS points("
    "tag_id INTEGER NOT NULL, ts BIGINT NOT NULL, value DOUBLE NOT NULL, "
    "quality UINTEGER NOT NULL, text VARCHAR)"
)
"""The points table (ts in UTC nanoseconds). Shared with bench/ingest.py's baseline."""

DDL = (
    # no primary key: an index would cost a whole storage block for a handful of rows
    "CREATE TABLE IF NOT EXISTS shopfloor_meta(key VARCHAR NOT NULL, value VARCHAR NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tags("
    "id INTEGER PRIMARY KEY, path VARCHAR NOT NULL UNIQUE, unit VARCHAR NOT NULL, "
    "description VARCHAR NOT NULL, data_type VARCHAR NOT NULL, eng_low DOUBLE, "
    "eng_high DOUBLE, states VARCHAR)",
    POINTS_DDL,
    "CREATE TABLE IF NOT EXISTS latest("
    "tag_id INTEGER NOT NULL, ts BIGINT NOT NULL, value DOUBLE NOT NULL, "
    "quality UINTEGER NOT NULL, text VARCHAR)",
)

POINTS_SCHEMA = pa.schema(
    [
        pa.field("tag_id", pa.int32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.uint32(), nullable=False),
        pa.field("text", pa.string()),
    ]
)
"""Arrow layout of rows inserted into ``points`` and ``latest`` (same column order)."""

TAGS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int32(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("eng_low", pa.float64()),
        pa.field("eng_high", pa.float64()),
        pa.field("states", pa.string()),
    ]
)

TS_TYPE = pa.timestamp("ns", tz="UTC")

RAW_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE),
        pa.field("value", pa.float64()),
        pa.field("quality", pa.uint32()),
        pa.field("text", pa.string()),
    ]
)

LATEST_SCHEMA = pa.schema([pa.field("path", pa.string()), *RAW_SCHEMA])

_GOOD = "(quality & 3221225472) = 0 AND NOT isnan(value)"
"""Points that count in aggregates: severity Good (top two bits clear) and a number."""

_AGG_SQL = {
    Aggregate.AVG: "avg(value)",
    Aggregate.MIN: "min(value)",
    Aggregate.MAX: "max(value)",
    Aggregate.FIRST: "arg_min(value, ts)",
    Aggregate.LAST: "arg_max(value, ts)",
    Aggregate.COUNT: "count(*)",
}


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables if missing and record the schema version."""
    con.begin()
    for statement in DDL:
        con.execute(statement)
    con.execute(
        "INSERT INTO shopfloor_meta SELECT 'schema_version', ? WHERE NOT EXISTS "
        "(SELECT 1 FROM shopfloor_meta WHERE key = 'schema_version')",
        [str(SCHEMA_VERSION)],
    )
    con.commit()


def meta_to_row(tag_id: int, meta: TagMeta) -> dict[str, Any]:
    """Return the ``tags`` row of one tag as a dict keyed like :data:`TAGS_SCHEMA`."""
    return {
        "id": tag_id,
        "path": meta.path,
        "unit": meta.unit,
        "description": meta.description,
        "data_type": meta.data_type.value,
        "eng_low": meta.eng_low,
        "eng_high": meta.eng_high,
        "states": json.dumps([[k, v] for k, v in meta.states]) if meta.states else None,
    }


def tags_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Return ``tags`` rows as an Arrow table ready to insert."""
    return pa.Table.from_pylist(list(rows), schema=TAGS_SCHEMA)


def row_to_meta(row: tuple[Any, ...]) -> tuple[int, TagMeta]:
    """Return ``(id, TagMeta)`` from a ``SELECT * FROM tags`` row."""
    tag_id, path, unit, description, data_type, eng_low, eng_high, states = row
    parsed: tuple[tuple[int, str], ...] = ()
    if states:
        parsed = tuple((int(k), str(v)) for k, v in json.loads(states))
    meta = TagMeta(
        path=path,
        unit=unit,
        description=description,
        data_type=DataType(data_type),
        eng_low=eng_low,
        eng_high=eng_high,
        states=parsed,
    )
    return int(tag_id), meta


def fetch_arrow(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any]
) -> pa.Table:
    """Run a query and return its result as an Arrow table (without a DB-API copy)."""
    rel = con.sql(sql, params=params)
    if rel is None:  # only for statements that return nothing; ours all select
        raise RuntimeError(f"query returned no relation: {sql}")
    return rel.to_arrow_table()


def _ts_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # a view reinterprets the int64 buffers; a cast to a zoned timestamp costs real time
    ints = column.cast(pa.int64())
    return pa.chunked_array([chunk.view(TS_TYPE) for chunk in ints.chunks], type=TS_TYPE)


def query_raw(
    con: duckdb.DuckDBPyConnection, tag_id: int, start_ns: int, end_ns: int, limit: int
) -> pa.Table:
    """Return one tag's points in ``[start_ns, end_ns)``, oldest first, as :data:`RAW_SCHEMA`."""
    table = fetch_arrow(
        con,
        "SELECT ts, value, quality, text FROM points "
        "WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
        [tag_id, start_ns, end_ns, limit],
    )
    return pa.Table.from_arrays(
        [
            _ts_column(table.column("ts")),
            table.column("value"),
            table.column("quality"),
            table.column("text").cast(pa.string()),
        ],
        schema=RAW_SCHEMA,
    )


def query_aggregates(
    con: duckdb.DuckDBPyConnection,
    tag_id: int,
    start_ns: int,
    end_ns: int,
    *,
    bucket_ns: int,
    aggregates: Sequence[Aggregate],
) -> pa.Table:
    """Return bucketed aggregates of one tag's Good, non-NaN points, buckets ascending.

    Buckets start at multiples of ``bucket_ns`` since the epoch (floored, so times before
    1970 land in the right bucket too); buckets without such points are left out.
    """
    columns = ", ".join(f'{_AGG_SQL[a]} AS "{a.value}"' for a in aggregates)
    select = "bucket" + (", " + columns if columns else "")
    table = fetch_arrow(
        con,
        # only fixed SQL fragments are formatted in; values are bound parameters
        f"SELECT {select} FROM ("
        "  SELECT ts - (((ts % $b) + $b) % $b) AS bucket, ts, value FROM points "
        f"  WHERE tag_id = $tag AND ts >= $start AND ts < $end AND {_GOOD}"
        ") GROUP BY bucket ORDER BY bucket",
        {"b": bucket_ns, "tag": tag_id, "start": start_ns, "end": end_ns},
    )
    arrays = [_ts_column(table.column("bucket"))]
    fields = [pa.field("ts", TS_TYPE)]
    for a in aggregates:
        kind = pa.int64() if a is Aggregate.COUNT else pa.float64()
        arrays.append(table.column(a.value).cast(kind))
        fields.append(pa.field(a.value, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
