"""Make and restore a backup: configuration files, history, manifest, verification.

The steps around the backend specifics (:mod:`~.duckdb_backup`, :mod:`~.pg_backup`):
a backup is written into a temporary folder, its manifest hashes every file, it is
verified as a restore would verify it, and only then renamed to its final name. A
restore verifies the backup first and refuses a backup of another backend or of a newer
schema than this shopfloor knows, before the target is touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from shopfloor.server.historian import pg_schema, schema
from shopfloor.server.historian.backup import (
    CONFIG,
    HISTORY,
    BackupError,
    Manifest,
    configuration_files,
    copy_configuration,
    hash_file,
    new_backup_folder,
    publish_backup,
    verify_backup,
    write_manifest,
)
from shopfloor.server.historian.duckdb_backup import (
    backup_duckdb,
    check_duckdb_target,
    restore_duckdb,
)
from shopfloor.server.historian.offline import HistorianTarget
from shopfloor.server.historian.pg_backup import (
    DUMP_FILE,
    backup_postgres,
    check_postgres_target,
    restore_postgres,
)

__all__ = ["RestoreResult", "make_backup", "restore_backup"]

_SCHEMA_VERSIONS = {"duckdb": schema.SCHEMA_VERSION, "postgres": pg_schema.SCHEMA_VERSION}


def make_backup(
    target: HistorianTarget, *, config: Path, out: Path, pg_bin: Path | None = None
) -> Manifest:
    """Back up ``config`` (and its tag files) and the history of ``target`` into ``out``.

    Raises:
        ServerRunning: DuckDB: the server has the file open.
        BackupError: ``out`` is not new or empty, or a step failed (no folder named
            ``out`` is left behind then).
    """
    partial = new_backup_folder(out)
    try:
        if target.backend == "duckdb":
            manifest = backup_duckdb(target, partial / HISTORY)
        else:
            manifest = backup_postgres(target, partial / HISTORY, bindir=pg_bin)
        manifest.config_files = copy_configuration(configuration_files(config), partial)
        write_manifest(partial, manifest)
        verify_backup(partial)
        publish_backup(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did (or, checking only, would do).

    Attributes:
        manifest: the verified backup's manifest.
        replaced: tables of the history that was there before (empty: none).
        kept_as: where the old history was moved (a file or a schema name), if anywhere.
        config_differs: the configuration in use differs from the backed-up one.
    """

    manifest: Manifest
    replaced: dict[str, int]
    kept_as: str | None
    config_differs: bool


def restore_backup(
    folder: Path,
    target: HistorianTarget,
    *,
    config: Path,
    force: bool,
    check_only: bool = False,
    pg_bin: Path | None = None,
) -> RestoreResult:
    """Verify the backup in ``folder`` and restore its history into ``target``.

    The configuration files are not restored: they are in ``folder/config`` (the result
    says whether the one in use differs).

    Raises:
        BackupInvalid: the backup does not match its manifest.
        ServerRunning: the server has the historian open.
        HistoryExists: the target holds history and ``force`` is not set.
        BackupError: the backup is of another backend or a newer schema, or the restore
            failed (the target is then as it was).
    """
    manifest = verify_backup(folder)
    if manifest.backend != target.backend:
        raise BackupError(
            f"the backup holds a {manifest.backend} historian, the configuration uses "
            f"{target.backend}: export and import move history between backends"
        )
    known = _SCHEMA_VERSIONS[target.backend]
    if manifest.schema_version > known:
        raise BackupError(
            f"the backup's schema version {manifest.schema_version} is newer than this "
            f"shopfloor's ({known}): restore it with shopfloor {manifest.shopfloor_version} "
            "or newer"
        )
    kept: str | None = None
    if target.backend == "duckdb":
        replaced = check_duckdb_target(target, force=force)
        if not check_only:
            aside = restore_duckdb(target, folder / HISTORY, manifest)
            kept = None if aside is None else str(aside)
    elif check_only:
        replaced = check_postgres_target(target, force=force)
    else:
        replaced, kept = restore_postgres(
            target, folder / HISTORY / DUMP_FILE, manifest, force=force, bindir=pg_bin
        )
    saved = folder / CONFIG / config.name
    differs = not saved.exists() or not config.exists() or hash_file(saved) != hash_file(config)
    return RestoreResult(manifest, replaced, kept, differs)
