"""Which tables hold rollups, so retention and the disk report can treat them (both backends).

Rollups are built elsewhere (their own tables, their own writer); retention only needs to
find them and know which column says *when* a row is. The contract, checked by
:func:`rollup_table` (call it from the rollup tests to be sure a layout is recognised):

- the table's name starts with ``rollup_1m`` (1-minute rollups) or ``rollup_1h``
  (1-hour rollups): ``rollup_1m``, ``rollup_1m_cold``, ``rollup_1h_v2`` all count; it is a
  base table in the historian's schema (not a view);
- it has a time column, the first of :data:`TIME_COLUMNS` present: an integer in UTC
  nanoseconds (the platform's time) or a ``TIMESTAMP``/``TIMESTAMPTZ``. A row is one
  unit: it is deleted once its time is before the cutoff day, so a row covering a span
  (a block of buckets) must start on the span's start and not cross a UTC midnight;
- a tag column (:data:`TAG_COLUMNS`, the ``tags`` table's integer id) lets the disk
  report attribute its rows to tags; without it the table counts only in the totals.

A table that matches the name but has no time column is left alone (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import psycopg

__all__ = [
    "KINDS",
    "TAG_COLUMNS",
    "TIME_COLUMNS",
    "RollupTable",
    "discover_duckdb",
    "discover_postgres",
    "rollup_table",
]

logger = logging.getLogger(__name__)

RollupKind = Literal["rollup_1m", "rollup_1h"]
KINDS: tuple[RollupKind, ...] = ("rollup_1m", "rollup_1h")
"""Name prefixes of rollup tables, finest first (the budget evicts the finest first)."""

TIME_COLUMNS = (
    "ts",
    "bucket",
    "bucket_ns",
    "bucket_start",
    "start",
    "start_ns",
    "block",
    "range_start",
    "day",
)
"""Names of the time column, in the order they are looked for."""

TAG_COLUMNS = ("tag_id", "tag")
"""Names of the tag column (integer ids of ``tags``), in the order they are looked for."""

_INTEGER_TYPES = {"bigint", "integer", "int8", "int4", "hugeint", "int64", "int"}
_TIMESTAMP_PREFIXES = ("timestamp",)
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class RollupTable:
    """A rollup table as retention sees it.

    Attributes:
        name: the table's name (unquoted).
        kind: ``rollup_1m`` or ``rollup_1h``: which retention applies.
        time_column: the column that says when a row is.
        time_type: its SQL type, lower case (an integer type: UTC nanoseconds).
        tag_column: the tag id column, when the table has one.
    """

    name: str
    kind: RollupKind
    time_column: str
    time_type: str
    tag_column: str | None

    @property
    def time_is_timestamp(self) -> bool:
        """The time column is a SQL timestamp (else integer UTC nanoseconds)."""
        return self.time_type.startswith(_TIMESTAMP_PREFIXES)

    @property
    def time_has_zone(self) -> bool:
        """The time column is a timestamp with time zone."""
        return self.time_is_timestamp and ("time zone" in self.time_type or "tz" in self.time_type)


def kind_of(name: str) -> RollupKind | None:
    """The rollup kind a table name says, or None."""
    for kind in KINDS:
        if name.startswith(kind):
            return kind
    return None


def rollup_table(name: str, columns: Mapping[str, str]) -> RollupTable | None:
    """How retention treats a table of ``columns`` (name → SQL type), or None if it is not one.

    Returns None for a name that is not a rollup's, and (logged once) for a rollup table
    without a usable time column.
    """
    kind = kind_of(name)
    if kind is None:
        return None
    types = {c.lower(): t.lower() for c, t in columns.items()}
    for column in TIME_COLUMNS:
        sql_type = types.get(column)
        if sql_type is None:
            continue
        is_ts = sql_type.startswith(_TIMESTAMP_PREFIXES)
        if is_ts or sql_type in _INTEGER_TYPES:
            tag = next((c for c in TAG_COLUMNS if types.get(c, "").lower() in _INTEGER_TYPES), None)
            return RollupTable(name, kind, column, sql_type, tag)
    if name not in _warned:
        _warned.add(name)
        logger.warning(
            "table %s looks like a rollup but has no time column (%s) of integer "
            "nanoseconds or timestamp type: retention leaves it alone",
            name,
            ", ".join(TIME_COLUMNS),
        )
    return None


def _tables(rows: Iterable[tuple[Any, Any, Any]]) -> list[RollupTable]:
    columns: dict[str, dict[str, str]] = {}
    for table, column, sql_type in rows:
        columns.setdefault(str(table), {})[str(column)] = str(sql_type)
    found = [rollup_table(name, cols) for name, cols in sorted(columns.items())]
    return sorted((t for t in found if t is not None), key=lambda t: (KINDS.index(t.kind), t.name))


def discover_duckdb(con: duckdb.DuckDBPyConnection) -> list[RollupTable]:
    """The rollup tables of a DuckDB historian, finest kind first."""
    rows = con.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM duckdb_columns() AS c "
        "JOIN duckdb_tables() AS t ON t.table_oid = c.table_oid "
        "WHERE c.schema_name = 'main' AND c.database_name = current_database() "
        "AND (c.table_name LIKE 'rollup\\_1m%' ESCAPE '\\' "
        "OR c.table_name LIKE 'rollup\\_1h%' ESCAPE '\\')"
    ).fetchall()
    return _tables(rows)


async def discover_postgres(
    con: psycopg.AsyncConnection[Any], schema_name: str
) -> list[RollupTable]:
    """The rollup tables (plain or partitioned) in ``schema_name``, finest kind first."""
    cur = await con.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND (c.relname LIKE 'rollup\\_1m%%' OR c.relname LIKE 'rollup\\_1h%%')",
        [schema_name],
    )
    return _tables(await cur.fetchall())
