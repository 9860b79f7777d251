"""Back up and restore the DuckDB historian's file (see :mod:`~.backup` for the format).

The file is opened read-only: a backup never changes what it copies, and DuckDB's file
lock makes the open fail while the server has the file, which is reported as
:class:`~.offline.ServerRunning`. With the server stopped nothing writes, so the row
counts taken before ``EXPORT DATABASE`` are those of the exported snapshot.

A restore imports into ``<file>.restoring`` beside the target, checks every table's
rows against the manifest, checkpoints, and only then renames it into place; an old
file (and its write-ahead log) is renamed aside first, never deleted. A failure at any
step leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from shopfloor.server.historian.backup import (
    BackupError,
    HistoryExists,
    Manifest,
    holds_history,
    summarize,
)
from shopfloor.server.historian.offline import HistorianTarget, explain_open_failure

__all__ = ["backup_duckdb", "check_duckdb_target", "restore_duckdb"]


def _connect(path: Path, target: HistorianTarget, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as err:
        explained = explain_open_failure(err, target)
        if explained is err:
            raise BackupError(f"cannot open {path}: {err}") from err
        raise explained from err


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    names = [
        str(row[0])
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND database_name = current_database() ORDER BY table_name"
        ).fetchall()
    ]
    counts = {}
    for name in names:
        row = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(
        "SELECT max(value) FROM shopfloor_meta WHERE key = 'schema_version'"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _exported_files(folder: Path) -> dict[str, Path]:
    """Each exported table's file, from the export's ``load.sql``: DuckDB names the files
    after the tables, but not always as they are (``rollup_1m`` becomes ``rollup__m``)."""
    load = folder / "load.sql"
    if not load.exists():
        return {}
    found = re.findall(r"COPY\s+(\S+)\s+FROM\s+'([^']*)'", load.read_text())
    return {table.strip('"'): folder / Path(path).name for table, path in found}


def backup_duckdb(target: HistorianTarget, folder: Path) -> Manifest:
    """Export the historian file of ``target`` into ``folder`` (created here).

    Returns the manifest without its file list (the caller hashes the whole backup).

    Raises:
        ServerRunning: the server has the file open.
        BackupError: there is no such file, or the export failed.
    """
    path = target.path
    assert path is not None
    if not path.exists():
        raise BackupError(f"there is no history to back up: {path} does not exist")
    con = _connect(path, target, read_only=True)
    try:
        tables = _tables(con)
        if "shopfloor_meta" not in tables:
            raise BackupError(f"{path} is not a shopfloor historian (no shopfloor_meta table)")
        version = _schema_version(con)
        con.execute(f"EXPORT DATABASE {_quote(folder)} (FORMAT parquet, COMPRESSION zstd)")
    except duckdb.Error as err:
        raise BackupError(f"exporting {path} failed: {err}") from err
    finally:
        con.close()
    files = _exported_files(folder)
    for name, rows in tables.items():  # the verify step: every table whole on disk
        written = pq.read_metadata(files.get(name, folder / f"{name}.parquet")).num_rows
        if written != rows:
            raise BackupError(f"table {name}: {rows} rows in the database, {written} exported")
    return Manifest(
        backend="duckdb",
        schema_version=version,
        tables=tables,
        details={"duckdb_version": duckdb.__version__},
    )


def check_duckdb_target(target: HistorianTarget, *, force: bool) -> dict[str, int]:
    """What the restore target holds; refuse if it is in use, or holds history without ``force``.

    Raises:
        ServerRunning: the server has the file open.
        HistoryExists: the file holds tags or points and ``force`` is not set.
    """
    path = target.path
    assert path is not None
    if not path.exists():
        return {}
    con = _connect(path, target, read_only=True)
    try:
        tables = _tables(con)
    except duckdb.Error as err:
        raise BackupError(f"cannot read {path}: {err}") from err
    finally:
        con.close()
    if holds_history(tables) and not force:
        raise HistoryExists(
            f"{path} already holds history ({summarize(tables)}); "
            "restore --force replaces it (the old file is kept beside it)"
        )
    return tables


def restore_duckdb(target: HistorianTarget, history: Path, manifest: Manifest) -> Path | None:
    """Import the export in ``history`` as the file of ``target``.

    Call :func:`check_duckdb_target` first. Returns where the old file was moved, if
    there was one.

    Raises:
        BackupError: the import failed or its rows differ from the manifest; the target
            is left as it was.
    """
    path = target.path
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(path.name + ".restoring")
    _remove(fresh)
    try:
        con = duckdb.connect(str(fresh))
        try:
            con.execute(f"IMPORT DATABASE {_quote(history)}")
            restored = _tables(con)
            _compare(restored, manifest.tables)
            con.execute("CHECKPOINT")
        finally:
            con.close()
    except duckdb.Error as err:
        _remove(fresh)
        raise BackupError(f"importing the backup failed: {err}") from err
    except BackupError:
        _remove(fresh)
        raise
    aside = None
    if path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.before-restore-{stamp}")
        path.replace(aside)
        wal = _wal(path)
        if wal.exists():  # never leave an old log beside the new file: it would be replayed
            wal.replace(_wal(aside))
    fresh.replace(path)
    return aside


def _compare(restored: dict[str, int], expected: dict[str, int]) -> None:
    wrong = [
        f"{name}: {restored.get(name)} rows restored, {rows} in the backup"
        for name, rows in expected.items()
        if restored.get(name) != rows
    ]
    if wrong:
        raise BackupError("the restored tables differ from the backup: " + "; ".join(wrong))


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove(path: Path) -> None:
    for leftover in (path, _wal(path)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
