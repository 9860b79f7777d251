"""Tables and queries of the DuckDB historian.

Points live in one narrow table without indexes: an index on a billion-row table costs
more on every insert than it saves on reads, while DuckDB's per-row-group min/max zone
maps already skip row groups outside a queried time range. The writer inserts rows sorted
by ``(tag_id, ts)`` per commit, which keeps those zone maps tight and compresses better;
compaction (:mod:`~shopfloor.server.historian.compaction`) later rewrites each closed day
tag by tag, which tightens them further and compresses better still.

``latest`` holds one row per tag, written in the same transaction as the points, so the
last value of every tag survives a restart without scanning ``points``.

``rollup_1m``, ``rollup_1h`` and ``rollup_meta`` hold the rollups that answer long
ranges without reading every point (:mod:`~shopfloor.server.historian.duckdb_rollup`).

``ingest_ledger`` holds one row per batch an edge delivered, ``(edge, seq, points,
committed_at)``, written in the same transaction as that batch's points: a crash leaves
both or neither. ``ingest_low_water`` holds per edge the mark at or below which every seq
counts as applied, so that old ledger rows can be deleted (see
:mod:`~shopfloor.server.historian.ledger`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.model import DataType, TagMeta
from shopfloor.server.historian import duckdb_rollup
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.historian.compaction import TODO_DDL

SCHEMA_VERSION = 4
"""1: points, tags, latest. 2: adds ingest_ledger and ingest_low_water (created if missing).
3: adds compaction_todo (created if missing, then filled from points; see compaction.py).
4: adds rollup_1m, rollup_1h, rollup_meta and compaction_todo.hour (see duckdb_rollup.py;
the first refresh rolls up every stored point)."""

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
    # no key either: the writer's in-memory index (ledger.py) decides what is a duplicate
    "CREATE TABLE IF NOT EXISTS ingest_ledger("
    "edge VARCHAR NOT NULL, seq BIGINT NOT NULL, points INTEGER NOT NULL, "
    "committed_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ingest_low_water(edge VARCHAR NOT NULL, low_water BIGINT NOT NULL)",
    TODO_DDL,
    *duckdb_rollup.DDL,
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("edge", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("points", pa.int32(), nullable=False),
        pa.field("committed_at", pa.int64(), nullable=False),
    ]
)
"""Arrow layout of rows inserted into ``ingest_ledger``."""

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
    con.execute("DELETE FROM shopfloor_meta WHERE key = 'schema_version'")
    con.execute("INSERT INTO shopfloor_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    con.commit()


def ledger_table(rows: Sequence[tuple[str, int, int]], committed_at: int) -> pa.Table:
    """Return ``(edge, seq, points)`` rows committed at ``committed_at`` as a table to insert."""
    edges, seqs, points = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.Table.from_arrays(
        [
            pa.array(edges, type=pa.string()),
            pa.array(seqs, type=pa.int64()),
            pa.array(points, type=pa.int32()),
            pa.array([committed_at] * len(rows), type=pa.int64()),
        ],
        schema=LEDGER_SCHEMA,
    )


@dataclass(frozen=True, slots=True)
class LedgerRows:
    """What the ledger tables say, condensed for :meth:`.ledger.Ledger.load`."""

    low_water: dict[str, int]
    expired: dict[str, int]
    ranges: list[tuple[str, int, int]]
    buckets: list[tuple[str, int, int]]


def load_ledger(con: duckdb.DuckDBPyConnection, *, cutoff_ns: int, bucket_ns: int) -> LedgerRows:
    """Condense the ledger in SQL: runs of consecutive seqs, not one row per batch.

    Rows at or below an edge's persisted mark are left out (they are applied either way).
    Runs come from the gaps-and-islands trick: within a run, ``seq - row_number()`` is
    constant.
    """
    above = (
        "SELECT l.edge, l.seq, l.committed_at FROM ingest_ledger AS l "
        "LEFT JOIN ingest_low_water AS w ON l.edge = w.edge "
        "WHERE l.seq > coalesce(w.low_water, 0)"
    )
    low_water = dict(con.execute("SELECT edge, low_water FROM ingest_low_water").fetchall())
    expired = dict(
        con.execute(
            f"SELECT edge, max(seq) FROM ({above}) WHERE committed_at < ? GROUP BY edge",
            [cutoff_ns],
        ).fetchall()
    )
    ranges = con.execute(
        "SELECT edge, min(seq), max(seq) FROM ("
        "  SELECT edge, seq, seq - row_number() OVER (PARTITION BY edge ORDER BY seq) AS run"
        f"  FROM (SELECT DISTINCT edge, seq FROM ({above}))"
        ") GROUP BY edge, run"
    ).fetchall()
    buckets = con.execute(
        "SELECT edge, committed_at - committed_at % $b AS minute, max(seq) "
        f"FROM ({above}) WHERE committed_at >= $cutoff GROUP BY ALL",
        {"b": bucket_ns, "cutoff": cutoff_ns},
    ).fetchall()
    return LedgerRows(low_water, expired, ranges, buckets)


def prune_ledger(
    con: duckdb.DuckDBPyConnection, marks: Sequence[tuple[str, int]], *, cutoff_ns: int
) -> int:
    """Persist the marks and delete rows at or below them committed before ``cutoff_ns``.

    One transaction: a mark is never lost while the rows it stands for are deleted.
    Returns how many rows were deleted.
    """
    table = pa.Table.from_arrays(
        [
            pa.array([m[0] for m in marks], type=pa.string()),
            pa.array([m[1] for m in marks], type=pa.int64()),
        ],
        names=["edge", "low_water"],
    )
    con.register("_marks", table)
    try:
        con.begin()
        try:
            con.execute("DELETE FROM ingest_low_water WHERE edge IN (SELECT edge FROM _marks)")
            con.execute("INSERT INTO ingest_low_water SELECT edge, low_water FROM _marks")
            row = con.execute(
                "DELETE FROM ingest_ledger USING _marks AS m WHERE ingest_ledger.edge = m.edge "
                "AND ingest_ledger.seq <= m.low_water AND ingest_ledger.committed_at < ?",
                [cutoff_ns],
            ).fetchone()
            con.commit()
        except duckdb.Error:
            con.rollback()
            raise
    finally:
        con.unregister("_marks")
    return int(row[0]) if row else 0


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
