"""The two historian backends as the history import/export and backup tests need them.

A :class:`Backend` makes historians on one storage (a DuckDB file, or a schema of a
throwaway PostgreSQL database), reads every table straight from storage (to compare
before and after a restore without going through the code under test), wipes the
history, and writes the ``[historian]`` section of a configuration file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql

from shopfloor.server.historian.base import Historian
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.historian.offline import HistorianTarget
from shopfloor.server.historian.postgres import PostgresHistorian


@dataclass
class Backend:
    """One storage place of a historian (DuckDB file or PostgreSQL schema)."""

    kind: str
    path: Path | None = None
    dsn: str = ""
    schema: str = "shopfloor"

    def historian(self, **options: Any) -> Historian:
        if self.kind == "duckdb":
            assert self.path is not None
            return DuckDBHistorian(self.path, flush_interval_s=0.05, **options)
        return PostgresHistorian(self.dsn, schema=self.schema, flush_interval_s=0.05, **options)

    @property
    def target(self) -> HistorianTarget:
        if self.kind == "duckdb":
            return HistorianTarget("duckdb", path=self.path)
        return HistorianTarget("postgres", dsn=self.dsn, schema=self.schema)

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (whatever tables the schema has), sorted, read directly."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        if self.kind == "duckdb":
            con = duckdb.connect(str(self.path), read_only=True)
            try:
                names = con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
                ).fetchall()
                for (table,) in names:
                    out[table] = _rows(con.execute(f"SELECT * FROM {table}").fetchall())
            finally:
                con.close()
            return out
        with psycopg.connect(self.dsn) as con:
            names = con.execute(  # partitions are read through their parent
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
                [self.schema],
            ).fetchall()
            for (table,) in names:
                query = sql.SQL("SELECT * FROM {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
                out[table] = _rows(con.execute(query).fetchall())
        return out

    def wipe(self) -> None:
        """Delete the history (the file, or the schema)."""
        if self.kind == "duckdb":
            assert self.path is not None
            self.path.unlink()
            Path(f"{self.path}.wal").unlink(missing_ok=True)
            return
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema)))

    def config_section(self) -> str:
        """The ``[historian]`` table of a configuration file for this storage."""
        if self.kind == "duckdb":
            return f'[historian]\npath = "{self.path}"\n'
        return (
            f'[historian]\nkind = "postgres"\ndsn = "{self.dsn}"\nschema_name = "{self.schema}"\n'
        )


def _rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows sorted, NaN written as a string: two NaN objects do not compare equal."""
    same = [tuple(_comparable(v) for v in r) for r in rows]
    return sorted(same, key=lambda r: tuple(repr(v) for v in r))


def _comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    return value
