"""The compact PostgreSQL layout: points as arrays, one row per tag and hour block.

**Why.** A narrow table costs about 85 bytes per point in PostgreSQL: a 24-byte row header
and alignment for 28 bytes of data, plus one entry per point in the ``(tag_id, ts)``
b-tree, whose upkeep also held ingest to 0.3-0.4 of a bare ``COPY`` (measured:
bench/historian.py). Here a row holds many points of one tag within one UTC hour
(``block``), as arrays ``ts bigint[]``, ``value float8[]``, ``quality int4[]`` and
``text text[]`` (NULL for numeric tags), and the only index is on ``(tag_id, block)``: one
entry per row, not per point.

**Two tables.** The writer turns each commit into *segments*, one row per tag and block
of the commit (at most :data:`SEGMENT_POINTS` points, so a row stays inline and
uncompressed: ``toast_tuple_target`` 8160, storage MAIN) and copies them into
``points_recent``. Compaction (:mod:`~shopfloor.server.historian.pg_compaction`) later
moves every segment of a closed block into one row of ``points_cold``, whose arrays
PostgreSQL compresses (lz4 where the server has it, pglz for values, which it packs
tighter; ``toast_tuple_target`` 128 so even small blocks are compressed, storage MAIN so
they stay inline while they fit a page).

**Reading.** ``points`` is a view with the columns of the old table, ``(ts, value,
tag_id, quality, text)``, unnesting both tables: any SQL reader works unchanged, but a
filter on ``ts`` cannot reach the blocks through ``unnest``, so ``WHERE tag_id = $1 AND
ts >= $2`` unnests every block of that tag. The functions below prune blocks first and
are inlined by the planner (SQL, STABLE), so they cost what the index lookups cost:

- ``points_between(ids int4[], start_ns, end_ns)``: the points of the tags in the range;
- ``points_before(id, ts_ns)``: the points of one tag before ``ts_ns``, newest first
  (add ``LIMIT 1``: the scan stops in the first block holding one);
- ``points_after(id, ts_ns)``: those at or after ``ts_ns``, oldest first.

The narrow layouts (legacy partitions, TimescaleDB) get the same three functions over
their ``points`` table, so a reader can use them whatever the layout.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa

from shopfloor.model.points import Float64Array, Int32Array, Int64Array, UInt32Array

__all__ = [
    "BLOCK_NS",
    "COPY_COLD",
    "COPY_RECENT",
    "SEGMENT_POINTS",
    "create",
    "create_functions",
    "encode_segments",
]

logger = logging.getLogger(__name__)

BLOCK_NS = 3600 * 10**9
"""One block per tag and UTC hour: small enough to read a minute cheaply, big enough to
compress (3,600 points of a 1 Hz tag)."""

SEGMENT_POINTS = 384
"""The most points in one segment row: 20 bytes each, so a row stays below 8 kB inline."""

_COLUMNS = (
    "tag_id integer NOT NULL, block bigint NOT NULL, ts bigint[] NOT NULL, "
    "value double precision[] NOT NULL, quality integer[] NOT NULL, text text[]"
)
_ARRAYS = ("ts", "value", "quality", "text")

_TABLES = (
    f"CREATE TABLE IF NOT EXISTS points_recent({_COLUMNS}) WITH (toast_tuple_target = 8160)",
    "CREATE INDEX IF NOT EXISTS points_recent_tag_block ON points_recent(tag_id, block)",
    f"CREATE TABLE IF NOT EXISTS points_cold({_COLUMNS}) WITH (toast_tuple_target = 128)",
    "CREATE INDEX IF NOT EXISTS points_cold_tag_block ON points_cold(tag_id, block)",
    *(
        f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE MAIN"
        for table in ("points_recent", "points_cold")
        for column in _ARRAYS
    ),
)

_COMPRESSION = (("ts", "lz4"), ("value", "pglz"), ("quality", "lz4"), ("text", "lz4"))
"""Per column of ``points_cold`` (measured on 1 Hz data: ts 7.2 bytes per point with lz4,
8 with pglz, which gives up below 25 % savings; values 2.1 with pglz, 3.2 with lz4)."""

_UNNEST = "unnest(b.ts, b.value, b.quality, b.text) AS u(ts, value, quality, text)"

_VIEW = (
    "CREATE OR REPLACE VIEW points AS "
    "SELECT u.ts, u.value, b.tag_id, u.quality, u.text FROM ("
    "  SELECT tag_id, ts, value, quality, text FROM points_recent"
    "  UNION ALL SELECT tag_id, ts, value, quality, text FROM points_cold"
    f") AS b CROSS JOIN LATERAL {_UNNEST}"
)

_LOW = f"greatest(p_start, {-(2**63) + BLOCK_NS}) - {BLOCK_NS}"
"""The lowest block start that can hold ``p_start`` (no overflow for any bigint)."""

_POINTS_COLUMNS = "ts bigint, value double precision, tag_id integer, quality integer, text text"


def _blocks(where: str, order: str = "") -> str:
    """Rows of both tables matching ``where``, unnested (shared by the functions).

    ``order`` sorts the rows (not yet unnested, so cheaply: their arrays stay in TOAST)
    by block, which lets the planner unnest block after block and stop at a LIMIT.
    """
    return (
        "SELECT u.ts, u.value, b.tag_id, u.quality, u.text, b.block FROM ("
        f"  SELECT tag_id, block, ts, value, quality, text FROM @s.points_recent WHERE {where}"
        f"  UNION ALL SELECT tag_id, block, ts, value, quality, text FROM @s.points_cold "
        f"WHERE {where} {order}"
        f") AS b CROSS JOIN LATERAL {_UNNEST}"
    )


def _function(name: str, args: str, body: str) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}({args}) RETURNS TABLE({_POINTS_COLUMNS}) "
        f"LANGUAGE sql STABLE AS $fn$ {body} $fn$"
    )


_BLOCK_FUNCTIONS = (
    _function(
        "points_between",
        "p_ids integer[], p_start bigint, p_end bigint",
        "SELECT ts, value, tag_id, quality, text FROM ("
        + _blocks(f"tag_id = ANY(p_ids) AND block > {_LOW} AND block < p_end")
        + ") AS p WHERE ts >= p_start AND ts < p_end",
    ),
    _function(
        "points_before",
        "p_id integer, p_ts bigint",
        "SELECT ts, value, tag_id, quality, text FROM ("
        + _blocks("tag_id = p_id AND block < p_ts", "ORDER BY block DESC")
        + ") AS p WHERE ts < p_ts ORDER BY block DESC, ts DESC",
    ),
    _function(
        "points_after",
        "p_id integer, p_ts bigint",
        "SELECT ts, value, tag_id, quality, text FROM ("
        + _blocks(
            f"tag_id = p_id AND block > greatest(p_ts, {-(2**63) + BLOCK_NS}) - {BLOCK_NS}",
            "ORDER BY block",
        )
        + ") AS p WHERE ts >= p_ts ORDER BY block, ts",
    ),
)

_NARROW_FUNCTIONS = (
    _function(
        "points_between",
        "p_ids integer[], p_start bigint, p_end bigint",
        "SELECT ts, value, tag_id, quality, text FROM @s.points "
        "WHERE tag_id = ANY(p_ids) AND ts >= p_start AND ts < p_end",
    ),
    _function(
        "points_before",
        "p_id integer, p_ts bigint",
        "SELECT ts, value, tag_id, quality, text FROM @s.points "
        "WHERE tag_id = p_id AND ts < p_ts ORDER BY ts DESC",
    ),
    _function(
        "points_after",
        "p_id integer, p_ts bigint",
        "SELECT ts, value, tag_id, quality, text FROM @s.points "
        "WHERE tag_id = p_id AND ts >= p_ts ORDER BY ts",
    ),
)


def _in_schema(statement: str, schema_name: str) -> str:
    """A function's statement with its tables qualified by the schema (``@s.``).

    Qualified, the functions work whatever the caller's search path; a ``SET search_path``
    clause would do too, but it stops the planner from inlining them.
    """
    return statement.replace("@s.", '"' + schema_name.replace('"', '""') + '".')


async def create(con: psycopg.AsyncConnection[Any]) -> None:
    """Create the two tables in one transaction (then :func:`create_functions`).

    Column compression is set where the server supports it (PostgreSQL 14 or newer, lz4
    if built with it); otherwise the server's default (pglz) applies.
    """
    async with con.transaction():
        for statement in _TABLES:
            await con.execute(statement)
        for column, method in _COMPRESSION:
            try:
                async with con.transaction():  # a savepoint: a refusal leaves the rest
                    await con.execute(
                        f"ALTER TABLE points_cold ALTER COLUMN {column} SET COMPRESSION {method}"
                    )
            except psycopg.Error as err:
                logger.info("points_cold.%s keeps the default compression: %s", column, err)


async def create_functions(
    con: psycopg.AsyncConnection[Any], schema_name: str, *, blocks: bool
) -> None:
    """(Re)create the view (blocks layout) and the reading functions (idempotent)."""
    async with con.transaction():
        if blocks:
            await con.execute(_VIEW)
        for statement in _BLOCK_FUNCTIONS if blocks else _NARROW_FUNCTIONS:
            await con.execute(_in_schema(statement, schema_name))


# ----------------------------------------------------------------------- COPY codec
COPY_RECENT = (
    "COPY points_recent (tag_id, block, ts, value, quality, text) FROM STDIN (FORMAT BINARY)"
)
COPY_COLD = COPY_RECENT.replace("points_recent", "points_cold")

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_ROW_HEAD = struct.Struct(">hiiiq")
"""Field count 6, then tag_id and block with their lengths."""
_ARRAY_HEAD = struct.Struct(">iiiiii")
"""A binary array field: its byte length, ndim 1, has-NULL flag, element type, count, 1."""
_NULL = b"\xff\xff\xff\xff"
_INT8, _FLOAT8, _INT4, _TEXT = 20, 701, 23, 25


def _cells(values: npt.NDArray[Any], kind: str) -> bytes:
    """Every element as a binary array cell (length, then big-endian value), in one pass."""
    size = np.dtype(kind).itemsize
    cells = np.empty(len(values), dtype=[("len", ">i4"), ("v", kind)])
    cells["len"] = size
    cells["v"] = values
    return cells.tobytes()


def segment_starts(
    tag_id: Int32Array, ts: Int64Array, max_points: int | None = SEGMENT_POINTS
) -> npt.NDArray[np.intp]:
    """Where each row starts in points sorted by (tag_id, ts): a new tag, a new block,
    or ``max_points`` points since the last start (None: no limit)."""
    block = ts - ts % BLOCK_NS  # numpy's % floors: right before 1970 too
    cut = np.flatnonzero(np.r_[True, (tag_id[1:] != tag_id[:-1]) | (block[1:] != block[:-1])])
    lengths = np.diff(np.r_[cut, len(ts)])
    if max_points is None or not len(lengths) or lengths.max() <= max_points:
        return cut
    long = np.flatnonzero(lengths > max_points)  # a loop per long run, not per point
    extra = [np.arange(cut[i], cut[i] + lengths[i], max_points) for i in long]
    return np.unique(np.concatenate([cut, *extra]))


def encode_segments(
    tag_id: Int32Array,
    ts: Int64Array,
    value: Float64Array,
    quality: UInt32Array,
    text: pa.Array | None,
    *,
    max_points: int | None = SEGMENT_POINTS,
) -> bytes:
    """The binary COPY stream of :data:`COPY_RECENT` (or :data:`COPY_COLD` with
    ``max_points=None``: one row per tag and block) for points sorted by (tag_id, ts).

    The elements of all arrays are laid out by numpy in one pass each; Python loops once
    per row (a tag's points of one commit or block), and per point only for text values.
    """
    n = len(ts)
    starts = segment_starts(tag_id, ts, max_points)
    ends = np.r_[starts[1:], n]
    ts_cells, value_cells = _cells(ts, ">i8"), _cells(value, ">f8")
    quality_cells = _cells(quality.view(np.int32), ">i4")
    texts: list[str | None] | None = None
    has_text = np.zeros(len(starts), dtype=np.bool_)
    if text is not None:
        present = ~np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
        if present.any():
            texts = text.to_pylist()
            has_text = np.add.reduceat(present.astype(np.int64), starts) > 0
    parts = [_COPY_HEADER]
    blocks = (ts[starts] - ts[starts] % BLOCK_NS).tolist()
    for s, e, tag, block, with_text in zip(
        starts.tolist(),
        ends.tolist(),
        tag_id[starts].tolist(),
        blocks,
        has_text.tolist(),
        strict=True,
    ):
        k = e - s
        parts += (
            _ROW_HEAD.pack(6, 4, tag, 8, block),
            _ARRAY_HEAD.pack(20 + 12 * k, 1, 0, _INT8, k, 1),
            ts_cells[12 * s : 12 * e],
            _ARRAY_HEAD.pack(20 + 12 * k, 1, 0, _FLOAT8, k, 1),
            value_cells[12 * s : 12 * e],
            _ARRAY_HEAD.pack(20 + 8 * k, 1, 0, _INT4, k, 1),
            quality_cells[8 * s : 8 * e],
        )
        if with_text and texts is not None:
            parts.append(_text_array(texts[s:e]))
        else:
            parts.append(_NULL)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _text_array(texts: list[str | None]) -> bytes:
    """A binary ``text[]`` field (state tags: few points, one Python step each)."""
    cells = []
    for t in texts:
        if t is None:
            cells.append(_NULL)
        else:
            data = t.encode()
            cells += (struct.pack(">i", len(data)), data)
    body = b"".join(cells)
    has_null = int(any(t is None for t in texts))
    return _ARRAY_HEAD.pack(20 + len(body), 1, has_null, _TEXT, len(texts), 1) + body
