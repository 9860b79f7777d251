"""Tables, partitions and queries of the PostgreSQL historian, and its binary codecs.

**Layout.** A new schema without TimescaleDB stores points as arrays, one row per tag
and UTC hour, behind a view ``points(ts, value, tag_id, quality, text)``: see
:mod:`~shopfloor.server.historian.pg_blocks` (about 10 bytes per point once compacted,
ingest faster than a narrow ``COPY``). Times stay int64 UTC nanoseconds (``timestamptz``
holds microseconds, and a historian must give back the timestamps it was given);
``quality`` is the OPC UA status code's 32 bits stored in an ``int4`` (Bad codes read as
negative numbers in SQL); ``text`` is NULL for numeric points.

With TimescaleDB, ``points`` is a narrow hypertable, ``points(ts int8, value float8,
tag_id int4, quality int4, text)`` (8-byte columns first: no alignment padding), with
one-day chunks, one b-tree on ``(tag_id, ts)`` and native compression segmented by
``tag_id`` and ordered by ``ts`` (that code path is written but untested here: the
extension is not installed on the CI machines). A schema made by version 1 without
TimescaleDB keeps its layout: the same narrow ``points`` range-partitioned by ``ts``
into one table per UTC day (``points_YYYYMMDD``), created on demand before a commit that
needs them (created standalone, then attached: only a SHARE UPDATE EXCLUSIVE lock on
``points``, readers are never blocked).

``latest``, ``tags``, ``ingest_ledger`` and ``ingest_low_water`` mirror the DuckDB
historian's tables (see :mod:`~shopfloor.server.historian.schema`).

**Codecs.** Points go in with ``COPY ... FROM STDIN (FORMAT BINARY)``, the stream built
by numpy from the columns in one pass (psycopg's ``write_row`` would cost one Python call
per point). Query results come back as one row of ``array_agg`` arrays in binary and are
decoded by numpy too, so no Python object is made per point on either path.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
from psycopg import sql

from shopfloor.errors import HistorianError
from shopfloor.model import TagMeta
from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array
from shopfloor.server.historian import pg_blocks, schema
from shopfloor.server.historian.base import Aggregate
from shopfloor.server.pg_locks import HISTORIAN_WRITER

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""1: points (partitioned or hypertable), tags, latest, ingest_ledger, ingest_low_water.
2: a new schema without TimescaleDB gets the blocks layout (:mod:`.pg_blocks`); every
layout gets the reading functions ``points_between``, ``points_before``, ``points_after``.
The blocks layout also gets the rollup tables (:mod:`.pg_rollup`), created if missing."""

DAY_NS = 86_400 * 10**9
"""One partition (or TimescaleDB chunk) per UTC day."""

Layout = Literal["blocks", "partitioned", "timescale"]
"""``blocks``: arrays per tag and hour (:mod:`.pg_blocks`), new schemas without TimescaleDB;
``partitioned``: narrow rows in daily partitions (schemas made by version 1, kept as they
are); ``timescale``: a compressed hypertable."""

LOCK_CLASS = HISTORIAN_WRITER
"""First key of the advisory lock held by the one writer of a schema (the second is the
schema name's hash): two servers writing one schema would corrupt the in-memory catalog."""

POINTS_COLUMNS = (
    "ts bigint NOT NULL, value double precision NOT NULL, tag_id integer NOT NULL, "
    "quality integer NOT NULL, text text"
)

DDL = (
    "CREATE TABLE IF NOT EXISTS shopfloor_meta(key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tags("
    "id integer PRIMARY KEY, path text NOT NULL UNIQUE, unit text NOT NULL, "
    "description text NOT NULL, data_type text NOT NULL, eng_low double precision, "
    "eng_high double precision, states text)",
    "CREATE TABLE IF NOT EXISTS latest("
    "tag_id integer PRIMARY KEY, ts bigint NOT NULL, value double precision NOT NULL, "
    "quality integer NOT NULL, text text)",
    "CREATE TABLE IF NOT EXISTS ingest_ledger("
    "edge text NOT NULL, seq bigint NOT NULL, points integer NOT NULL, "
    "committed_at bigint NOT NULL)",
    # pruning deletes by (edge, seq); without it each prune would scan a week of batches
    "CREATE INDEX IF NOT EXISTS ingest_ledger_edge_seq ON ingest_ledger(edge, seq)",
    "CREATE TABLE IF NOT EXISTS ingest_low_water(edge text PRIMARY KEY, low_water bigint NOT NULL)",
)

_TIMESCALE_DDL = (
    f"CREATE TABLE IF NOT EXISTS points({POINTS_COLUMNS})",
    "CREATE INDEX IF NOT EXISTS points_tag_ts ON points(tag_id, ts)",
    "SELECT create_hypertable('points', 'ts', chunk_time_interval => "
    f"{DAY_NS}::bigint, if_not_exists => TRUE, create_default_indexes => FALSE)",
    "CREATE OR REPLACE FUNCTION shopfloor_now_ns() RETURNS bigint LANGUAGE sql STABLE "
    "AS $$ SELECT (extract(epoch FROM now()) * 1e9)::bigint $$",
    "SELECT set_integer_now_func('points', 'shopfloor_now_ns', replace_if_exists => TRUE)",
    "ALTER TABLE points SET (timescaledb.compress, timescaledb.compress_segmentby = "
    "'tag_id', timescaledb.compress_orderby = 'ts')",
    f"SELECT add_compression_policy('points', compress_after => {7 * DAY_NS}::bigint, "
    "if_not_exists => TRUE)",
)

V1_PARTITIONED_DDL = (
    f"CREATE TABLE IF NOT EXISTS points({POINTS_COLUMNS}) PARTITION BY RANGE (ts)",
    "CREATE INDEX IF NOT EXISTS points_tag_ts ON points(tag_id, ts)",
)
"""What version 1 made without TimescaleDB; such schemas still open (tests make one)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """What :func:`open_schema` found or made."""

    layout: Layout
    partitions: set[int]
    """UTC day numbers (days since the epoch) that have a partition (partitioned only)."""


# ----------------------------------------------------------------------------- setup
async def open_schema(
    con: psycopg.AsyncConnection[Any], schema_name: str, *, timescale: bool | None
) -> Opened:
    """Create the schema and tables if missing; return the layout in use.

    An existing ``points`` keeps its layout. A new one is a hypertable when
    TimescaleDB can be loaded (``timescale=None``: when it is available; True: it must
    be; False: never), otherwise the blocks layout (:mod:`.pg_blocks`).

    Raises:
        HistorianError: TimescaleDB was required but cannot be loaded, or an existing
            layout contradicts ``timescale``.
    """
    await con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema_name)))
    await set_search_path(con, schema_name)
    async with con.transaction():
        for statement in DDL:
            await con.execute(statement)
    layout = await _existing_layout(con, schema_name)
    if layout is None:
        layout = "timescale" if await _want_timescale(con, timescale) else "blocks"
        if layout == "blocks":
            await pg_blocks.create(con)
        else:
            async with con.transaction():
                for statement in _TIMESCALE_DDL:
                    await con.execute(statement)
    elif timescale is not None and (layout == "timescale") != timescale:
        raise HistorianError(
            f"the historian in schema {schema_name} is {layout}; it cannot change layout"
        )
    await pg_blocks.create_functions(con, schema_name, blocks=layout == "blocks")
    if layout == "blocks":  # only compaction (blocks) writes rollups
        await create_rollups(con)
    async with con.transaction():
        await con.execute("DELETE FROM shopfloor_meta WHERE key IN ('schema_version', 'layout')")
        await con.execute(
            "INSERT INTO shopfloor_meta VALUES ('schema_version', %s), ('layout', %s)",
            [str(SCHEMA_VERSION), layout],
        )
    partitions = await known_partitions(con) if layout == "partitioned" else set()
    return Opened(layout, partitions)


async def set_search_path(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Resolve the historian's tables in ``schema_name`` (TimescaleDB's functions in public)."""
    await con.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema_name)))


async def take_writer_lock(con: psycopg.AsyncConnection[Any], schema_name: str) -> bool:
    """Take the session advisory lock of the schema's one writer; False if another holds it."""
    cur = await con.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, schema_name]
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def release_writer_lock(con: psycopg.AsyncConnection[Any], schema_name: str) -> None:
    """Give the writer lock back now, rather than when the server reaps the session."""
    await con.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_CLASS, schema_name])


async def _existing_layout(con: psycopg.AsyncConnection[Any], schema_name: str) -> Layout | None:
    cur = await con.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'points'",
        [schema_name],
    )
    row = await cur.fetchone()
    if row is None:
        return None
    if row[0] == "v":
        return "blocks"
    return "partitioned" if row[0] == "p" else "timescale"


async def _want_timescale(con: psycopg.AsyncConnection[Any], wanted: bool | None) -> bool:
    if wanted is False:
        return False
    cur = await con.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        if wanted:
            raise HistorianError("TimescaleDB is not installed on this PostgreSQL server")
        logger.info("TimescaleDB is not installed: points use native daily partitions")
        return False
    try:
        async with con.transaction():
            await con.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as err:
        # typically: installed, but not in shared_preload_libraries
        if wanted:
            raise HistorianError(f"TimescaleDB cannot be loaded: {err}") from err
        logger.warning("TimescaleDB cannot be loaded (%s): points use native daily partitions", err)
        return False
    logger.info("TimescaleDB found: points are a compressed hypertable")
    return True


# ------------------------------------------------------------------------ partitions
def partition_name(day: int) -> str:
    """``points_YYYYMMDD`` of UTC day number ``day`` (days since 1970-01-01)."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return f"points_{date:%Y%m%d}"


def _day_of(name: str) -> int | None:
    try:
        date = dt.date.fromisoformat(name.removeprefix("points_"))  # 3.11: YYYYMMDD too
    except ValueError:
        return None
    return (date - dt.date(1970, 1, 1)).days


async def known_partitions(con: psycopg.AsyncConnection[Any]) -> set[int]:
    """Day numbers of the partitions attached to ``points``."""
    cur = await con.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'points'::regclass"
    )
    days = {_day_of(name) for (name,) in await cur.fetchall()}
    return {d for d in days if d is not None}


async def create_partitions(
    con: psycopg.AsyncConnection[Any], days: Sequence[int], known: set[int]
) -> None:
    """Create and attach one partition per day, each in its own transaction.

    Attaching (rather than ``CREATE TABLE ... PARTITION OF``) takes only a SHARE UPDATE
    EXCLUSIVE lock on ``points``: readers go on; the new table's index is made on attach.
    Each day is added to ``known`` as soon as it is committed.
    """
    for day in days:
        name = sql.Identifier(partition_name(day))
        low, high = day * DAY_NS, (day + 1) * DAY_NS
        async with con.transaction():
            await con.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE points INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(name)
            )
            await con.execute(
                sql.SQL(
                    "ALTER TABLE points ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                ).format(name, sql.Literal(low), sql.Literal(high))
            )
        known.add(day)


def days_of(ts: Int64Array) -> set[int]:
    """The UTC day numbers that timestamps fall on (floored: before 1970 works too)."""
    return {int(d) for d in np.unique(ts // DAY_NS)}


# --------------------------------------------------------------------------- rollups
ROLLUP_TABLES = {60 * 10**9: "rollup_1m", 3600 * 10**9: "rollup_1h"}
"""The rollup tables by width (:mod:`.pg_rollup`)."""

ROLLUP_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("tag_id", "integer", ">i4"),
    ("bucket", "bigint", ">i8"),
    ("n", "integer", ">i4"),
    ("pts", "integer", ">i4"),
    ("bad", "integer", ">i4"),
    ("dsum", "double precision", ">f8"),
    ("m2", "double precision", ">f8"),
    ("vmin", "double precision", ">f8"),
    ("vmax", "double precision", ">f8"),
    ("first_ts", "bigint", ">i8"),
    ("first_v", "double precision", ">f8"),
    ("last_ts", "bigint", ">i8"),
    ("last_v", "double precision", ">f8"),
    ("head_ts", "bigint", ">i8"),
    ("hold", "double precision", ">f8"),
    ("area", "double precision", ">f8"),
    ("span_ns", "bigint", ">i8"),
    ("rise", "double precision", ">f8"),
)
"""Columns of a rollup table: name, SQL type, binary (COPY and array) element type; the
cell state of :mod:`~shopfloor.server.historian.rollup` (NaN, never NULL)."""

_ROLLUP_COLUMNS = ", ".join(f"{name} {kind} NOT NULL" for name, kind, _ in ROLLUP_FIELDS)

ROLLUP_DDL = (
    *(
        f"CREATE TABLE IF NOT EXISTS {table}({_ROLLUP_COLUMNS}, PRIMARY KEY (tag_id, bucket))"
        for table in ROLLUP_TABLES.values()
    ),
    "CREATE TABLE IF NOT EXISTS rollup_todo(tag_id integer NOT NULL, block bigint NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rollup_todo_tag_block ON rollup_todo(tag_id, block)",
    "CREATE TABLE IF NOT EXISTS rollup_meta(key text PRIMARY KEY, value bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS raw_floor(tag_id integer PRIMARY KEY, floor_ns bigint NOT NULL)",
)
"""Rollups (blocks layout): the tables, ``rollup_todo`` (hours still to roll up),
``rollup_meta`` and ``raw_floor`` (what retention deleted)."""


async def create_rollups(con: psycopg.AsyncConnection[Any]) -> None:
    """Create the rollup tables; a schema compacted before rollups existed gets every cold
    hour queued in ``rollup_todo``, built by the next compaction passes."""
    cur = await con.execute("SELECT to_regclass('rollup_1h') IS NULL")
    row = await cur.fetchone()
    new = bool(row and row[0])
    async with con.transaction():
        for statement in ROLLUP_DDL:
            await con.execute(statement)
        if new:
            await con.execute(
                "INSERT INTO rollup_todo SELECT DISTINCT tag_id, block FROM points_cold"
            )


# ------------------------------------------------------------------------ COPY codec
COPY_POINTS = "COPY points (ts, value, tag_id, quality, text) FROM STDIN (FORMAT BINARY)"

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
        ("tag_len", ">i4"),
        ("tag_id", ">i4"),
        ("quality_len", ">i4"),
        ("quality", ">i4"),
        ("text_len", ">i4"),
    ]
)
"""One numeric row of the binary COPY stream (text NULL): 46 bytes, fixed."""
_TEXT_ROW = struct.Struct(">hiqidiiiii")


def encode_points(
    ts: Int64Array,
    value: Float64Array,
    tag_id: Int32Array,
    quality: UInt32Array,
    text: pa.Array | None,
) -> bytes:
    """Return the binary COPY stream of rows for :data:`COPY_POINTS`.

    Rows without text are laid out by numpy in one pass; rows with text (state tags,
    few) are packed one by one after them.
    """
    has_text = np.zeros(len(ts), dtype=np.bool_)
    if text is not None:
        has_text = ~np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
    plain = ~has_text
    rows = np.empty(int(plain.sum()), dtype=_ROW)
    rows["fields"] = 5
    rows["ts_len"] = 8
    rows["value_len"] = 8
    rows["tag_len"] = 4
    rows["quality_len"] = 4
    rows["text_len"] = -1
    rows["ts"] = ts[plain]
    rows["value"] = value[plain]
    rows["tag_id"] = tag_id[plain]
    rows["quality"] = quality[plain].view(np.int32)
    parts = [_COPY_HEADER, rows.tobytes()]
    if text is not None and has_text.any():
        strings = text.filter(pa.array(has_text)).to_pylist()
        picked = np.flatnonzero(has_text)
        for i, s in zip(picked.tolist(), strings, strict=True):
            data = s.encode()
            parts.append(
                _TEXT_ROW.pack(
                    5,
                    8,
                    int(ts[i]),
                    8,
                    float(value[i]),
                    4,
                    int(tag_id[i]),
                    4,
                    int(quality[i].view(np.int32)),
                    len(data),
                )
            )
            parts.append(data)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


# ----------------------------------------------------------------------- array codec
_ARRAY_HEADER = struct.Struct(">iiI")
_ARRAY_DIM = struct.Struct(">ii")
_ELEMENT_LEN = struct.Struct(">i")


def _array_elements(raw: bytes | None) -> tuple[int, int]:
    """Return (element count, offset of the first element) of a binary 1-D array."""
    if raw is None:  # array_agg of no rows
        return 0, 0
    ndim, _has_null, _oid = _ARRAY_HEADER.unpack_from(raw)
    if ndim == 0:
        return 0, 0
    if ndim != 1:
        raise HistorianError(f"expected a one-dimensional array, got {ndim} dimensions")
    count, _lower = _ARRAY_DIM.unpack_from(raw, _ARRAY_HEADER.size)
    return count, _ARRAY_HEADER.size + _ARRAY_DIM.size


def decode_array(raw: bytes | None, dtype: str) -> npt.NDArray[Any]:
    """Decode a binary array of fixed-size, non-NULL elements (``>i8``, ``>f8``, ``>i4``).

    Raises:
        HistorianError: an element is NULL or of another size.
    """
    big = np.dtype(dtype)
    count, offset = _array_elements(raw)
    if not count:
        return np.empty(0, dtype=big.newbyteorder("="))
    assert raw is not None
    cells = np.frombuffer(
        raw, dtype=np.dtype([("len", ">i4"), ("v", big)]), count=count, offset=offset
    )
    if np.any(cells["len"] != big.itemsize):
        raise HistorianError("a query returned NULL where a number was expected")
    return cells["v"].astype(big.newbyteorder("="))


def decode_text_array(raw: bytes | None) -> pa.StringArray:
    """Decode a binary ``text[]`` that may hold NULLs (all NULL is the common, fast case)."""
    count, offset = _array_elements(raw)
    if not count:
        return pa.array([], type=pa.string())
    assert raw is not None
    if len(raw) == offset + 4 * count:  # nothing but NULL markers
        return pa.nulls(count, type=pa.string())
    out: list[str | None] = []
    for _ in range(count):
        (size,) = _ELEMENT_LEN.unpack_from(raw, offset)
        offset += 4
        if size < 0:
            out.append(None)
        else:
            out.append(raw[offset : offset + size].decode())
            offset += size
    return pa.array(out, type=pa.string())


# --------------------------------------------------------------------------- queries
RAW_SQL = (
    "SELECT array_agg(ts), array_agg(value), array_agg(quality), array_agg(text) FROM ("
    "  SELECT ts, value, quality, text"
    "  FROM points_between(ARRAY[%(tag)s]::integer[], %(start)s, %(end)s)"
    "  ORDER BY ts LIMIT %(limit)s) AS r"
)
"""One tag's points, oldest first, as one row of arrays (aggregated in the subquery's order).

``points_between`` (every layout has it, :mod:`.pg_blocks`) reads only the blocks of the
range; the ``points`` view of the blocks layout would unnest every block of the tag."""

READER_SETTINGS = (
    # JIT compiles a plan in 100-300 ms, measured, to save a few ms on a scan of a day
    "SET jit = off",
    # a day of 1 Hz points sorted into buckets spills to disk with the default 4MB
    "SET work_mem = '32MB'",
)
"""Session settings of the read connections (at most ``read_connections`` of them)."""

_GOOD = "(quality & -1073741824) = 0 AND value <> 'NaN'::float8"
"""Points that count in aggregates: severity Good (top two bits clear) and a number."""

_AGG_SQL = {
    Aggregate.AVG: "avg(value)",
    Aggregate.MIN: "min(value)",
    Aggregate.MAX: "max(value)",
    # the rows come in (bucket, ts) order (see aggregates_sql): no sort per bucket
    Aggregate.FIRST: "(array_agg(value))[1]",
    Aggregate.LAST: "(array_agg(value))[count(*)]",
    Aggregate.COUNT: "count(*)",
}

_BUCKET = "ts - ts %% %(b)s"
"""The bucket start for ``ts >= 0``: ``ts`` floored to a multiple of the bucket."""

_BUCKET_SIGNED = "CASE WHEN ts %% %(b)s < 0 THEN ts - ts %% %(b)s - %(b)s ELSE ts - ts %% %(b)s END"
"""The bucket start for any ``ts``: SQL's ``%`` truncates, so times before 1970 need more."""


def aggregates_sql(aggregates: Sequence[Aggregate], *, signed: bool = False) -> str:
    """One tag's bucketed aggregates as one row of arrays, buckets ascending.

    ``first`` and ``last`` read the bucket's values in time order from a subquery sorted
    by (bucket, ts), which PostgreSQL keeps for the grouping above it: one sort for the
    query instead of two per bucket (measured 40 % faster on a day of 1 Hz points). They
    hold one bucket's values in memory while it is aggregated. ``signed``: the range
    starts before 1970 (the cheaper bucket expression is right only for ``ts >= 0``).

    Only fixed fragments are formatted in; every value is a bound parameter.
    """
    bucket = _BUCKET_SIGNED if signed else _BUCKET
    inner = "".join(f', {_AGG_SQL[a]} AS "{a.value}"' for a in aggregates)
    outer = ", ".join(["array_agg(bucket)", *(f'array_agg("{a.value}")' for a in aggregates)])
    source = (
        f"SELECT {bucket} AS bucket, ts, value"
        "  FROM points_between(ARRAY[%(tag)s]::integer[], %(start)s, %(end)s)"
        f"  WHERE {_GOOD}"
    )
    if Aggregate.FIRST in aggregates or Aggregate.LAST in aggregates:
        source += " ORDER BY bucket, ts"
    return (
        f"SELECT {outer} FROM ("
        f"  SELECT bucket{inner} FROM ({source}) AS s"
        "  GROUP BY bucket ORDER BY bucket) AS g"
    )


def ts_array(ts: Int64Array) -> pa.Array:
    """Nanosecond timestamps as the Arrow column every query returns (a view, no cast)."""
    return pa.array(ts, type=pa.int64()).view(schema.TS_TYPE)


def raw_table(row: Sequence[bytes | None]) -> pa.Table:
    """Build :data:`~.schema.RAW_SCHEMA` from the arrays of :data:`RAW_SQL`."""
    ts = decode_array(row[0], ">i8")
    value = decode_array(row[1], ">f8")
    quality = decode_array(row[2], ">i4").view(np.uint32)
    text = decode_text_array(row[3])
    if len(ts) > 1 and np.any(ts[1:] < ts[:-1]):  # the planner did not keep the order
        order = np.argsort(ts, kind="stable")
        ts, value, quality, text = ts[order], value[order], quality[order], text.take(order)
    return pa.Table.from_arrays(
        [ts_array(ts), pa.array(value), pa.array(quality, type=pa.uint32()), text],
        schema=schema.RAW_SCHEMA,
    )


def aggregates_table(row: Sequence[bytes | None], aggregates: Sequence[Aggregate]) -> pa.Table:
    """Build the aggregate table (ts, then one column per aggregate) from :func:`aggregates_sql`."""
    bucket = decode_array(row[0], ">i8")
    columns = [
        decode_array(raw, ">i8" if a is Aggregate.COUNT else ">f8")
        for raw, a in zip(row[1:], aggregates, strict=True)
    ]
    if len(bucket) > 1 and np.any(bucket[1:] < bucket[:-1]):
        order = np.argsort(bucket, kind="stable")
        bucket, columns = bucket[order], [c[order] for c in columns]
    arrays = [ts_array(bucket)]
    fields = [pa.field("ts", schema.TS_TYPE)]
    for a, column in zip(aggregates, columns, strict=True):
        kind = pa.int64() if a is Aggregate.COUNT else pa.float64()
        arrays.append(pa.array(column, type=kind))
        fields.append(pa.field(a.value, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ------------------------------------------------------------------- tags and latest
UPSERT_TAGS = (
    "INSERT INTO tags SELECT * FROM unnest("
    "%s::integer[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::float8[], %s::float8[], %s::text[]) "
    "ON CONFLICT (id) DO UPDATE SET unit = excluded.unit, description = excluded.description, "
    "data_type = excluded.data_type, eng_low = excluded.eng_low, "
    "eng_high = excluded.eng_high, states = excluded.states"
)


def tags_params(rows: Sequence[tuple[int, TagMeta]]) -> list[list[Any]]:
    """The column lists of :data:`UPSERT_TAGS` for ``(id, meta)`` rows."""
    dicts = [schema.meta_to_row(tag_id, meta) for tag_id, meta in rows]
    names = ("id", "path", "unit", "description", "data_type", "eng_low", "eng_high", "states")
    return [[d[n] for d in dicts] for n in names]


UPSERT_LATEST = (
    "INSERT INTO latest SELECT * FROM unnest("
    "%s::integer[], %s::bigint[], %s::float8[], %s::integer[], %s::text[]) "
    "ON CONFLICT (tag_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, "
    "quality = excluded.quality, text = excluded.text"
)
"""Replace the last value of tags; the writer has already picked the newer points."""

INSERT_LEDGER = (
    "INSERT INTO ingest_ledger SELECT * FROM unnest("
    "%s::text[], %s::bigint[], %s::integer[], %s::bigint[])"
)


# -------------------------------------------------------------------------- ledger
_ABOVE = (
    "SELECT l.edge, l.seq, l.committed_at FROM ingest_ledger AS l "
    "LEFT JOIN ingest_low_water AS w ON l.edge = w.edge "
    "WHERE l.seq > coalesce(w.low_water, 0)"
)


async def load_ledger(
    con: psycopg.AsyncConnection[Any], *, cutoff_ns: int, bucket_ns: int
) -> schema.LedgerRows:
    """Condense the ledger in SQL, as :func:`.schema.load_ledger` does for DuckDB."""

    async def rows(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = await con.execute(query, params)
        return await cur.fetchall()

    low_water = dict(await rows("SELECT edge, low_water FROM ingest_low_water"))
    expired = dict(
        await rows(
            f"SELECT edge, max(seq) FROM ({_ABOVE}) AS a WHERE committed_at < %s GROUP BY edge",
            [cutoff_ns],
        )
    )
    ranges = await rows(
        "SELECT edge, min(seq), max(seq) FROM ("
        "  SELECT edge, seq, seq - row_number() OVER (PARTITION BY edge ORDER BY seq) AS run"
        f"  FROM (SELECT DISTINCT edge, seq FROM ({_ABOVE}) AS a) AS d"
        ") AS r GROUP BY edge, run"
    )
    buckets = await rows(
        "SELECT edge, committed_at - committed_at %% %s AS minute, max(seq) "
        f"FROM ({_ABOVE}) AS a WHERE committed_at >= %s GROUP BY edge, minute",
        [bucket_ns, cutoff_ns],
    )
    return schema.LedgerRows(
        low_water,
        expired,
        [(str(e), int(a), int(b)) for e, a, b in ranges],
        [(str(e), int(m), int(s)) for e, m, s in buckets],
    )


async def prune_ledger(
    con: psycopg.AsyncConnection[Any], marks: Sequence[tuple[str, int]], *, cutoff_ns: int
) -> int:
    """Persist the marks and delete rows at or below them committed before ``cutoff_ns``.

    One transaction: a mark is never lost while the rows it stands for are deleted.
    Returns how many rows were deleted.
    """
    edges = [m[0] for m in marks]
    floors = [m[1] for m in marks]
    async with con.transaction():
        await con.execute(
            "INSERT INTO ingest_low_water SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (edge) DO UPDATE SET low_water = excluded.low_water",
            [edges, floors],
        )
        cur = await con.execute(
            "DELETE FROM ingest_ledger AS l "
            "USING unnest(%s::text[], %s::bigint[]) AS m(edge, mark) "
            "WHERE l.edge = m.edge AND l.seq <= m.mark AND l.committed_at < %s",
            [edges, floors, cutoff_ns],
        )
        return max(cur.rowcount, 0)
