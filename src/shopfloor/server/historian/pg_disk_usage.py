"""The storage report of a PostgreSQL historian, and the live bytes its disk budget counts.

**Per tag** (blocks layout): points from the blocks' ``cardinality(ts)`` (exact; it reads
and decompresses every block's timestamps, the report's main cost), each tag's stored
bytes from ``pg_column_size`` of its arrays (their compressed size, read without
decompressing), oldest and newest from the first and last block of the tag (exact).
What a table's rows and indexes hold (its live bytes, below) is shared out in
proportion to the tags' stored bytes; its size on disk (``pg_total_relation_size``) is
reported per table, the difference being free space that new rows reuse. Narrow layouts
(version 1 partitions, TimescaleDB) share out by point count.

**Live bytes** (what the budget counts): after a DELETE and a plain VACUUM a table keeps
its size and reuses the space, so its size says nothing about what is left. Each table's
live rows are summed instead, row by row (tuple header plus each column's stored size,
TOAST included), exactly on small tables and from a sample of about
:data:`SAMPLE_PAGES` pages (``TABLESAMPLE SYSTEM``) on large ones, plus the size of
their indexes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from shopfloor.server.historian import rollup_tables
from shopfloor.server.historian.disk_usage import (
    StorageReport,
    StorageTotals,
    TableUsage,
    TagUsage,
    share_out,
)

__all__ = ["METHOD", "SAMPLE_PAGES", "live_bytes", "measure", "row_size_sql", "table_live_bytes"]

SAMPLE_PAGES = 2000
"""Pages a live-bytes estimate reads at most per table (16 MB with 8 kB pages)."""

ROW_OVERHEAD = 28
"""Bytes per row besides its columns: the 23-byte tuple header (aligned) and a line pointer."""

BLOCK_TABLES = ("points_recent", "points_cold")

METHOD = {
    "blocks": "PostgreSQL: points, oldest and newest are exact; each tag's stored "
    "(compressed) arrays are measured and each table's size on disk shared out in proportion",
    "partitioned": "PostgreSQL (daily partitions): points, oldest and newest are exact; "
    "the partitions' size on disk is shared out by point count",
    "timescale": "PostgreSQL (TimescaleDB): points, oldest and newest are exact; the "
    "hypertable's size is shared out by point count",
}


async def _all(
    con: psycopg.AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> list[tuple[Any, ...]]:
    cur = await con.execute(query, params)
    return await cur.fetchall()


async def _columns(con: psycopg.AsyncConnection[Any], table: str) -> list[str]:
    rows = await _all(
        con,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [str(r[0]) for r in rows]


def row_size_sql(columns: Sequence[str], alias: str | None = None) -> sql.Composable:
    """A row's stored bytes: header and line pointer plus each column's stored size."""
    terms: list[sql.Composable] = [sql.Literal(ROW_OVERHEAD)]
    for column in columns:
        ident = sql.Identifier(alias, column) if alias else sql.Identifier(column)
        terms.append(sql.SQL("coalesce(pg_column_size({}), 0)").format(ident))
    return sql.SQL("(") + sql.SQL(" + ").join(terms) + sql.SQL(")::bigint")


async def table_live_bytes(con: psycopg.AsyncConnection[Any], oid: int, name: str) -> int:
    """Live rows of one table (exact up to SAMPLE_PAGES pages, then sampled) plus indexes."""
    rows = await _all(
        con,
        "SELECT pg_relation_size(%s::oid) / current_setting('block_size')::int, "
        "pg_indexes_size(%s::oid)",
        [oid, oid],
    )
    pages, indexes = int(rows[0][0]), int(rows[0][1])
    if pages == 0:
        return indexes
    columns = await _columns(con, name)
    size = row_size_sql(columns)
    table = sql.Identifier(name)
    if pages <= SAMPLE_PAGES:
        query = sql.SQL("SELECT coalesce(sum({}), 0) FROM {}").format(size, table)
        total = await _all(con, query)
        return int(total[0][0]) + indexes
    percent = 100.0 * SAMPLE_PAGES / pages
    query = sql.SQL("SELECT coalesce(sum({}), 0) FROM {} TABLESAMPLE SYSTEM ({})").format(
        size, table, sql.Literal(percent)
    )
    sampled = await _all(con, query)
    return round(int(sampled[0][0]) * 100.0 / percent) + indexes


async def live_bytes(con: psycopg.AsyncConnection[Any], schema_name: str) -> int:
    """What the history's tables hold (see the module docstring); the budget's figure.

    TimescaleDB's chunks live in their own schema: their size counts as it is.
    """
    tables = await _all(
        con,
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
        [schema_name],
    )
    total = 0
    for oid, name in tables:
        total += await table_live_bytes(con, int(oid), str(name))
    total += await _timescale_bytes(con)
    return total


async def _timescale_bytes(con: psycopg.AsyncConnection[Any]) -> int:
    """The hypertable's size when ``points`` is one (its chunks are in another schema)."""
    rows = await _all(
        con,
        "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'",
    )
    if not rows[0][0]:
        return 0
    found = await _all(
        con,
        "SELECT count(*) FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = 'points' AND hypertable_schema = current_schema()",
    )
    if not found[0][0]:
        return 0
    size = await _all(con, "SELECT coalesce(hypertable_size('points'), 0)")
    return int(size[0][0])


async def _sizes(con: psycopg.AsyncConnection[Any], table: str) -> tuple[int, int]:
    """A table's size on disk (TOAST, indexes) and live bytes; a partitioned one's over its
    partitions."""
    leaves = await _all(
        con,
        "SELECT c.oid, c.relname FROM pg_class c WHERE c.oid = %s::regclass AND c.relkind = 'r' "
        "UNION ALL SELECT p.oid, p.relname FROM pg_partition_tree(%s::regclass) AS t "
        "JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf AND p.relkind = 'r' "
        "AND p.oid <> %s::regclass",
        [table, table, table],
    )
    on_disk = used = 0
    for oid, name in leaves:
        size = await _all(con, "SELECT pg_total_relation_size(%s::oid)", [int(oid)])
        on_disk += int(size[0][0])
        used += await table_live_bytes(con, int(oid), str(name))
    return on_disk, used


# ----------------------------------------------------------------------- per tag
class _Tag:
    """One tag's figures while tables are added up."""

    __slots__ = ("bytes", "newest", "oldest", "points", "rollup_bytes", "rollup_rows", "weight")

    def __init__(self) -> None:
        self.points = 0
        self.weight = 0
        self.bytes = 0
        self.oldest: int | None = None
        self.newest: int | None = None
        self.rollup_rows = 0
        self.rollup_bytes = 0

    def span(self, lo: int | None, hi: int | None) -> None:
        if lo is not None:
            self.oldest = lo if self.oldest is None else min(self.oldest, lo)
        if hi is not None:
            self.newest = hi if self.newest is None else max(self.newest, hi)


async def _block_table(
    con: psycopg.AsyncConnection[Any], table: str, tags: dict[int, _Tag]
) -> TableUsage:
    """Add one blocks table's points, stored bytes and time span per tag."""
    t = sql.Identifier(table)
    size = row_size_sql(await _columns(con, table))
    rows = await _all(
        con,
        sql.SQL(
            "SELECT tag_id, count(*), coalesce(sum(cardinality(ts)), 0)::bigint, sum({}) "
            "FROM {} GROUP BY tag_id ORDER BY tag_id"
        ).format(size, t),
    )
    # oldest and newest: only the first and last block of each tag are unnested
    spans = await _all(
        con,
        sql.SQL(
            "SELECT b.tag_id,"
            " (SELECT min(x) FROM {t} c, unnest(c.ts) AS x WHERE c.tag_id = b.tag_id"
            "  AND c.block = b.lo),"
            " (SELECT max(x) FROM {t} c, unnest(c.ts) AS x WHERE c.tag_id = b.tag_id"
            "  AND c.block = b.hi)"
            " FROM (SELECT tag_id, min(block) AS lo, max(block) AS hi FROM {t}"
            " GROUP BY tag_id) AS b"
        ).format(t=t),
    )
    on_disk, used = await _sizes(con, table)
    shares = share_out(used, [int(r[3]) for r in rows])
    points = 0
    for (tag_id, _blocks, n, _stored), share in zip(rows, shares, strict=True):
        tag = tags.setdefault(int(tag_id), _Tag())
        tag.points += int(n)
        tag.bytes += share
        points += int(n)
    for tag_id, lo, hi in spans:
        tags.setdefault(int(tag_id), _Tag()).span(
            None if lo is None else int(lo), None if hi is None else int(hi)
        )
    return TableUsage(table, "raw", sum(int(r[1]) for r in rows), points, on_disk, used)


async def _narrow_table(
    con: psycopg.AsyncConnection[Any], layout: str, tags: dict[int, _Tag]
) -> TableUsage:
    """Add the narrow ``points`` table's (partitioned or hypertable) figures per tag."""
    rows = await _all(
        con, "SELECT tag_id, count(*), min(ts), max(ts) FROM points GROUP BY tag_id ORDER BY 1"
    )
    on_disk = used = await _timescale_bytes(con) if layout == "timescale" else 0
    if not on_disk:
        on_disk, used = await _sizes(con, "points")
    shares = share_out(used, [int(r[1]) for r in rows])
    for (tag_id, n, lo, hi), share in zip(rows, shares, strict=True):
        tag = tags.setdefault(int(tag_id), _Tag())
        tag.points += int(n)
        tag.bytes += share
        tag.span(int(lo), int(hi))
    points = sum(int(r[1]) for r in rows)
    return TableUsage("points", "raw", points, points, on_disk, used)


async def _rollups(
    con: psycopg.AsyncConnection[Any], schema_name: str, tags: dict[int, _Tag]
) -> list[TableUsage]:
    out: list[TableUsage] = []
    for table in await rollup_tables.discover_postgres(con, schema_name):
        t = sql.Identifier(table.name)
        on_disk, used = await _sizes(con, table.name)
        if table.tag_column is None:
            count = await _all(con, sql.SQL("SELECT count(*) FROM {}").format(t))
            rows = int(count[0][0])
        else:
            grouped = await _all(
                con,
                sql.SQL("SELECT {}, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                    sql.Identifier(table.tag_column), t
                ),
            )
            rows = sum(int(n) for _, n in grouped)
            shares = share_out(used, [int(n) for _, n in grouped])
            for (tag_id, n), share in zip(grouped, shares, strict=True):
                tag = tags.setdefault(int(tag_id), _Tag())
                tag.rollup_rows += int(n)
                tag.rollup_bytes += share
        out.append(TableUsage(table.name, table.kind, rows, 0, on_disk, used))
    return out


async def _other_tables(
    con: psycopg.AsyncConnection[Any], schema_name: str, known: set[str]
) -> list[TableUsage]:
    rows = await _all(
        con,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY c.relname",
        [schema_name],
    )
    out: list[TableUsage] = []
    for (name,) in rows:
        if name in known:
            continue
        on_disk, used = await _sizes(con, str(name))
        out.append(TableUsage(str(name), "other", 0, 0, on_disk, used))
    return out


async def measure(
    con: psycopg.AsyncConnection[Any],
    *,
    schema_name: str,
    layout: str,
    ids: Mapping[str, int],
    measured_ns: int,
    retention: Mapping[str, Any],
) -> StorageReport:
    """Measure the history on ``con`` (search path set to the historian's schema)."""
    tags: dict[int, _Tag] = {}
    tables: list[TableUsage] = []
    if layout == "blocks":
        for table in BLOCK_TABLES:
            tables.append(await _block_table(con, table, tags))
    else:
        tables.append(await _narrow_table(con, layout, tags))
    tables += await _rollups(con, schema_name, tags)
    tables += await _other_tables(con, schema_name, {t.name for t in tables})
    storage = sum(t.bytes for t in tables)
    live = await live_bytes(con, schema_name)
    database = await _all(con, "SELECT pg_database_size(current_database())")
    paths = {int(i): p for p, i in ids.items()}
    usage = tuple(
        sorted(
            (
                TagUsage(
                    paths.get(tag_id, f"(tag {tag_id})"),
                    t.points,
                    t.bytes,
                    t.oldest,
                    t.newest,
                    t.rollup_rows,
                    t.rollup_bytes,
                )
                for tag_id, t in tags.items()
            ),
            key=lambda u: u.path,
        )
    )
    totals = StorageTotals(
        storage_bytes=storage,
        used_bytes=live,
        database_bytes=int(database[0][0]),
        free_disk_bytes=None,
        wal_bytes=None,
        points=sum(t.points for t in tags.values()),
        rollup_rows=sum(t.rollup_rows for t in tags.values()),
    )
    return StorageReport(
        backend=f"postgres/{layout}",
        method=METHOD.get(layout, METHOD["blocks"]),
        tags=usage,
        tables=tuple(sorted(tables, key=lambda u: (-u.bytes, u.name))),
        totals=totals,
        retention=dict(retention),
        measured_ns=measured_ns,
    )
