"""The storage report of a DuckDB historian (see :mod:`~.disk_usage` for what it means).

**How.** Points, oldest and newest per tag come from one scan of ``points``' ``tag_id``
and ``ts`` columns (exact; 0.1 s for 20 million points, measured on two cores). DuckDB
keeps no size per tag, so a table's bytes are the distinct blocks its column segments
occupy (``pragma_storage_info``) times the block size (``points`` also gets the
write-ahead log: recent points not checkpointed yet), shared out by point count
(rollups: by row count). A block shared by small tables counts for each of them; the
totals come from ``PRAGMA database_size`` and the files themselves, not from that sum.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from shopfloor.server.historian import rollup_tables
from shopfloor.server.historian.disk_usage import (
    StorageReport,
    StorageTotals,
    TableUsage,
    TagUsage,
    share_out,
)
from shopfloor.server.historian.retention import used_space

__all__ = ["METHOD", "measure"]

METHOD = (
    "DuckDB: points, oldest and newest are exact; a table's bytes are the blocks its "
    "columns occupy (raw points also the write-ahead log), shared out by point count "
    "(rollups: by row count)"
)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    return con.execute(sql, params if params is not None else []).fetchall()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_blocks(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Distinct blocks per table of the main schema (0 for a table not yet checkpointed)."""
    names = [
        str(r[0])
        for r in _rows(
            con,
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND database_name = current_database() AND NOT temporary",
        )
    ]
    out: dict[str, int] = {}
    for name in names:
        row = _rows(
            con,
            "SELECT count(DISTINCT b) FROM ("
            "  SELECT block_id AS b FROM pragma_storage_info($t) WHERE block_id >= 0"
            "  UNION ALL SELECT unnest(additional_block_ids) FROM pragma_storage_info($t))",
            {"t": name},
        )
        out[name] = int(row[0][0]) if row else 0
    return out


def _kind(name: str) -> str:
    if name == "points":
        return "raw"
    return rollup_tables.kind_of(name) or "other"


def measure(
    con: duckdb.DuckDBPyConnection,
    *,
    path: Path | None,
    ids: Mapping[str, int],
    measured_ns: int,
    retention: Mapping[str, Any],
) -> StorageReport:
    """Measure the history on ``con`` (a reader's cursor; a consistent snapshot per query)."""
    paths = {int(i): p for p, i in ids.items()}
    space = used_space(con, path)
    blocks = _table_blocks(con)
    per_tag = _rows(con, "SELECT tag_id, count(*), min(ts), max(ts) FROM points GROUP BY tag_id")
    total_points = sum(int(r[1]) for r in per_tag)
    # points not checkpointed yet are in the write-ahead log: it counts with them
    raw_bytes = blocks.get("points", 0) * space.block_size + space.wal_bytes
    raw_share = share_out(raw_bytes, [int(r[1]) for r in per_tag])
    rollup_rows: dict[int, int] = {}
    rollup_bytes: dict[int, int] = {}
    tables: list[TableUsage] = []
    rollup_total = 0
    for table in rollup_tables.discover_duckdb(con):
        size = blocks.get(table.name, 0) * space.block_size
        if table.tag_column is None:
            count = _rows(con, f"SELECT count(*) FROM {_quoted(table.name)}")
            rows = int(count[0][0])
        else:
            tag = _quoted(table.tag_column)
            grouped = _rows(con, f"SELECT {tag}, count(*) FROM {_quoted(table.name)} GROUP BY 1")
            rows = sum(int(n) for _, n in grouped)
            for (tag, n), share in zip(
                grouped, share_out(size, [int(n) for _, n in grouped]), strict=True
            ):
                rollup_rows[int(tag)] = rollup_rows.get(int(tag), 0) + int(n)
                rollup_bytes[int(tag)] = rollup_bytes.get(int(tag), 0) + share
        rollup_total += rows
        tables.append(TableUsage(table.name, table.kind, rows, 0, size, size))
    tables.append(TableUsage("points", "raw", total_points, total_points, raw_bytes, raw_bytes))
    known = {t.name for t in tables}
    tables += [
        TableUsage(name, _kind(name), 0, 0, n * space.block_size, n * space.block_size)
        for name, n in blocks.items()
        if name not in known
    ]
    tags: dict[int, TagUsage] = {}
    for (tag, n, lo, hi), share in zip(per_tag, raw_share, strict=True):
        t = int(tag)
        tags[t] = TagUsage(
            paths.get(t, f"(tag {t})"),
            int(n),
            share,
            int(lo),
            int(hi),
            rollup_rows.get(t, 0),
            rollup_bytes.get(t, 0),
        )
    for t, n in rollup_rows.items():
        if t not in tags:
            tags[t] = TagUsage(paths.get(t, f"(tag {t})"), 0, 0, None, None, n, rollup_bytes[t])
    free = shutil.disk_usage(path.parent).free if path is not None else None
    totals = StorageTotals(
        storage_bytes=space.file_bytes + space.wal_bytes,
        used_bytes=space.used_bytes,
        database_bytes=space.file_bytes,
        free_disk_bytes=free,
        wal_bytes=space.wal_bytes,
        points=total_points,
        rollup_rows=rollup_total,
    )
    return StorageReport(
        backend="duckdb",
        method=METHOD,
        tags=tuple(sorted(tags.values(), key=lambda u: u.path)),
        tables=tuple(sorted(tables, key=lambda u: (-u.bytes, u.name))),
        totals=totals,
        retention=dict(retention),
        measured_ns=measured_ns,
    )
