"""Back up and restore the PostgreSQL historian's schema with pg_dump and pg_restore.

**Backup** may run while the server writes: it opens a REPEATABLE READ transaction,
counts every table's rows in it, exports its snapshot and has ``pg_dump --snapshot``
dump exactly that snapshot (custom format, the historian's schema only). The counts in
the manifest therefore describe the dump exactly.

**Restore** needs the server stopped: it takes the historian's writer lock (the advisory
lock the server holds while it runs; failing to get it means
:class:`~.offline.ServerRunning`) and keeps it until done, so no server starts on a
half-restored schema. An existing schema with history is refused without ``force``;
with it, the schema is renamed aside (``<schema>_before_restore_<time>``), the dump is
restored by ``pg_restore --single-transaction`` (all or nothing), the rows of every table
are compared with the manifest, and on any failure the restored schema is dropped and
the old one renamed back.

The tools come from the PostgreSQL client of the server's major version (Debian:
``/usr/lib/postgresql/<major>/bin``), else the newest installed, else ``PATH``; pg_dump
refuses to dump a server newer than itself. The password goes to the tools in
``PGPASSWORD``, never on their command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from shopfloor.server.historian import pg_schema
from shopfloor.server.historian.backup import (
    BackupError,
    HistoryExists,
    Manifest,
    holds_history,
    summarize,
)
from shopfloor.server.historian.offline import HistorianTarget, ServerRunning

__all__ = ["DUMP_FILE", "backup_postgres", "check_postgres_target", "restore_postgres"]

DUMP_FILE = "historian.pgdump"
_DEBIAN = Path("/usr/lib/postgresql")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


# ---------------------------------------------------------------------------- tools
def find_tool(name: str, server_major: int, bindir: Path | None = None) -> Path:
    """The ``pg_dump``/``pg_restore`` to use for a server of ``server_major``.

    Raises:
        BackupError: none is installed, or only older ones than the server.
    """
    candidates: list[Path] = []
    if bindir is not None:
        candidates.append(bindir / name)
    candidates.append(_DEBIAN / str(server_major) / "bin" / name)
    versions = sorted(
        (p for p in _DEBIAN.glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    candidates += [p / name for p in versions]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    too_old = []
    for tool in candidates:
        if not os.access(tool, os.X_OK):
            continue
        major = _tool_major(tool)
        if major is not None and major >= server_major:
            return tool
        too_old.append(f"{tool} ({major})")
    hint = (
        f"install the PostgreSQL {server_major} client (Debian: postgresql-client-{server_major})"
    )
    if too_old:
        raise BackupError(
            f"{name} is older than the server ({server_major}): {', '.join(too_old)}; {hint}"
        )
    raise BackupError(f"{name} is not installed; {hint}")


def _tool_major(tool: Path) -> int | None:
    try:
        done = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(done.stdout)
    return int(found.group(1)) if found else None


def _run(tool: Path, args: Sequence[str], target: HistorianTarget) -> str:
    """Run a client tool against ``target``; return its output or raise with its stderr."""
    env = {**os.environ}
    if target.password is not None:
        env["PGPASSWORD"] = target.password
    done = subprocess.run(
        [str(tool), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"{tool.name} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _schema_pattern(name: str) -> str:
    """A pg_dump ``-n`` pattern that matches exactly ``name`` (quoted: no wildcards)."""
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------ database
@contextmanager
def _connection(target: HistorianTarget) -> Iterator[psycopg.Connection[Any]]:
    params: dict[str, Any] = {"autocommit": True, "application_name": "shopfloor-backup"}
    if target.password is not None:
        params["password"] = target.password
    try:
        con = psycopg.connect(target.dsn, **params)
    except psycopg.Error as err:
        raise BackupError(f"cannot connect to {target.describe()}: {err}") from err
    try:
        yield con
    finally:
        con.close()


def _server_major(con: psycopg.Connection[Any]) -> int:
    return int(con.info.server_version) // 10000


def _schema_exists(con: psycopg.Connection[Any], name: str) -> bool:
    row = con.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    return bool(row and row[0])


def _counts(con: psycopg.Connection[Any], schema_name: str) -> dict[str, int]:
    """Rows of every table of the schema (a partitioned table with all its partitions)."""
    names = con.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY c.relname",
        [schema_name],
    ).fetchall()
    counts = {}
    for (table,) in names:
        row = con.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema_name), sql.Identifier(table)
            )
        ).fetchone()
        counts[str(table)] = int(row[0]) if row else 0
    return counts


def _meta(con: psycopg.Connection[Any], schema_name: str) -> dict[str, str]:
    rows = con.execute(
        sql.SQL("SELECT key, value FROM {}.shopfloor_meta").format(sql.Identifier(schema_name))
    ).fetchall()
    return {str(k): str(v) for k, v in rows}


# -------------------------------------------------------------------------- backup
def backup_postgres(
    target: HistorianTarget, folder: Path, *, bindir: Path | None = None
) -> Manifest:
    """Dump the historian's schema into ``folder/historian.pgdump``.

    Returns the manifest without its file list. The server may keep running.

    Raises:
        BackupError: no such schema, no suitable pg_dump, or the dump failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with _connection(target) as con:
        if not _schema_exists(con, target.schema):
            raise BackupError(f"there is no history to back up: {target.describe()} does not exist")
        tool = find_tool("pg_dump", _server_major(con), bindir)
        con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            row = con.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            tables = _counts(con, target.schema)
            meta = _meta(con, target.schema)
            # the dump sees the same snapshot as the counts while this transaction lives
            _run(
                tool,
                [
                    "--format=custom",
                    f"--snapshot={row[0]}",
                    f"--schema={_schema_pattern(target.schema)}",
                    "--strict-names",
                    f"--file={folder / DUMP_FILE}",
                    f"--dbname={target.dsn}",
                ],
                target,
            )
        finally:
            con.execute("ROLLBACK")
        version = str(con.info.server_version)
    restore_tool = find_tool("pg_restore", int(version) // 10000, bindir)
    _run(restore_tool, ["--list", str(folder / DUMP_FILE)], target)  # the archive reads back
    return Manifest(
        backend="postgres",
        schema_version=int(meta.get("schema_version", "0")),
        tables=tables,
        details={
            "schema": target.schema,
            "layout": meta.get("layout", ""),
            "server_version_num": int(version),
            "pg_dump": str(tool),
        },
    )


# ------------------------------------------------------------------------- restore
@contextmanager
def _writer_lock(target: HistorianTarget) -> Iterator[psycopg.Connection[Any]]:
    """Hold the schema's writer lock: the server is not running and cannot start."""
    with _connection(target) as con:
        row = con.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [pg_schema.LOCK_CLASS, target.schema]
        ).fetchone()
        if not (row and row[0]):
            raise ServerRunning(
                f"the server is running: it writes to schema {target.schema} of this database; "
                "stop it and run this command again"
            )
        yield con


def check_postgres_target(target: HistorianTarget, *, force: bool) -> dict[str, int]:
    """What the target schema holds; refuse if the server runs, or if it holds history
    and ``force`` is not set.

    Raises:
        ServerRunning: the server holds the schema's writer lock.
        HistoryExists: the schema holds tags or points and ``force`` is not set.
    """
    with _writer_lock(target) as con:
        return _held(con, target, force=force)


def _held(con: psycopg.Connection[Any], target: HistorianTarget, *, force: bool) -> dict[str, int]:
    if not _schema_exists(con, target.schema):
        return {}
    tables = _counts(con, target.schema)
    if holds_history(tables) and not force:
        raise HistoryExists(
            f"{target.describe()} already holds history ({summarize(tables)}); restore "
            "--force replaces it (the old schema is kept, renamed)"
        )
    return tables


def restore_postgres(
    target: HistorianTarget,
    dump: Path,
    manifest: Manifest,
    *,
    force: bool,
    bindir: Path | None = None,
) -> tuple[dict[str, int], str | None]:
    """Restore ``dump`` as the historian's schema.

    Returns the rows of the tables there before (empty if none) and the name the old
    schema was given, if it held history.

    Raises:
        ServerRunning: the server holds the schema's writer lock.
        HistoryExists: the schema holds history and ``force`` is not set.
        BackupError: the backup's schema name differs from the target's, or the restore
            failed (the target is then as it was).
    """
    backed_up = str(manifest.details.get("schema", ""))
    if backed_up != target.schema:
        raise BackupError(
            f"the backup holds schema {backed_up!r}, the configuration uses {target.schema!r}; "
            "set historian.schema_name to the backup's"
        )
    with _writer_lock(target) as con:
        existing = _held(con, target, force=force)
        tool = find_tool("pg_restore", _server_major(con), bindir)
        aside = None
        if holds_history(existing):
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            aside = f"{target.schema[:40]}_before_restore_{stamp}"
            con.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(target.schema), sql.Identifier(aside)
                )
            )
        elif _schema_exists(con, target.schema):  # tables without history: nothing to keep
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(target.schema)))
        try:
            _run(
                tool,
                [
                    "--single-transaction",
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    f"--dbname={target.dsn}",
                    str(dump),
                ],
                target,
            )
            restored = _counts(con, target.schema)
            wrong = [
                f"{name}: {restored.get(name)} rows restored, {rows} in the backup"
                for name, rows in manifest.tables.items()
                if restored.get(name) != rows
            ]
            if wrong:
                raise BackupError("the restored tables differ from the backup: " + "; ".join(wrong))
        except BackupError:
            con.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema))
            )
            if aside is not None:
                con.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                        sql.Identifier(aside), sql.Identifier(target.schema)
                    )
                )
            raise
        return existing, aside
