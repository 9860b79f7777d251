"""The history verbs of ``shopfloor``: export, import, backup, restore. Wiring only.

Exit codes, the same for all four: 0 done (an import of a file stored before is done
too: nothing is stored twice), 1 refused or failed (invalid rows, existing history, the
server is running, a storage error), 2 bad usage or configuration, 3 the backup does not
match its manifest.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shopfloor.config import ShopfloorConfig, load_config
from shopfloor.errors import ConfigError, PayloadError, ShopfloorError

if TYPE_CHECKING:
    from shopfloor.server.historian.backup import Manifest
    from shopfloor.server.historian.import_csv import Problem

__all__ = ["register_history_commands"]

T = TypeVar("T")

err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
out_console = Console(highlight=False, markup=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TAMPERED = 3
_SHOWN_PROBLEMS = 20


class ExportFormat(StrEnum):
    """File formats of ``shopfloor export``."""

    PARQUET = "parquet"
    CSV = "csv"


class ImportLayout(StrEnum):
    """Table layouts ``shopfloor import`` reads."""

    AUTO = "auto"
    LONG = "long"
    WIDE = "wide"


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The platform's TOML configuration file.")
]
TzOption = Annotated[
    str,
    typer.Option(help="Time zone of times written without an offset, e.g. Europe/Berlin."),
]
PgBinOption = Annotated[
    Path | None,
    typer.Option(
        help="Folder of pg_dump and pg_restore (default: the server's version from "
        "/usr/lib/postgresql, else PATH).",
    ),
]


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise typer.Exit(code)


def _config(path: Path) -> ShopfloorConfig:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    try:
        return load_config(path)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


# --------------------------------------------------------------------------- export
def export(
    *,
    config: ConfigOption,
    tags: Annotated[
        list[str],
        typer.Option(
            help="Tag path, asset folder (plant/line1) or glob (plant/*/temp); repeat it "
            "or separate with commas.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="File to write (replaced when complete).")],
    start: Annotated[
        str | None, typer.Option(help="First time included, ISO 8601 (default: the first).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="First time excluded, ISO 8601 (default: none).")
    ] = None,
    tz: TzOption = "UTC",
    format: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="parquet or csv (default: from the --out suffix)."),
    ] = None,
) -> None:
    """Export history to Parquet or CSV (columns path, ts, value, quality, text)."""
    from shopfloor.server.app import build_historian
    from shopfloor.server.historian.cells import check_zone, parse_user_time
    from shopfloor.server.historian.offline import opened, target_of
    from shopfloor.server.historian.transfer import export_history, match_tags

    fmt = format or _format_of(out)
    cfg = _config(config)
    patterns = [p.strip() for item in tags for p in item.split(",") if p.strip()]
    try:
        zone = check_zone(tz)
        start_ns = -(2**63) if start is None else parse_user_time(start, tz=zone, field="--start")
        end_ns = 2**63 - 1 if end is None else parse_user_time(end, tz=zone, field="--end")
    except PayloadError as err:
        _fail(str(err), EXIT_USAGE)
    if end_ns <= start_ns:
        _fail("--end must be after --start", EXIT_USAGE)

    async def run() -> tuple[int, int]:
        target = target_of(cfg)
        async with opened(build_historian(cfg), target) as historian:
            paths = match_tags(patterns, [m.path for m in await historian.tags()])
            with _progress() as bar:
                task = bar.add_task("exporting", total=None)

                def shown(path: str, points: int) -> None:
                    bar.update(task, description=f"exporting {path}", completed=points)

                summary = await export_history(
                    historian,
                    paths,
                    start_ns=start_ns,
                    end_ns=end_ns,
                    out=out,
                    fmt=fmt.value,
                    progress=shown,
                )
        return summary.tags, summary.points

    n_tags, points = _run(run())
    out_console.print(f"exported {points:,} points of {n_tags} tag(s) to {out}")


def _format_of(out: Path) -> ExportFormat:
    suffix = out.suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return ExportFormat.PARQUET
    if suffix == "csv":
        return ExportFormat.CSV
    _fail(f"give --format parquet or csv (the suffix of {out.name} says neither)", EXIT_USAGE)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; translate shopfloor's errors into messages and codes."""
    from shopfloor.server.historian.backup import BackupInvalid

    try:
        return asyncio.run(work)
    except BackupInvalid as err:
        _fail(str(err), EXIT_TAMPERED)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    except PayloadError as err:
        _fail(str(err), EXIT_USAGE)
    except (ShopfloorError, OSError) as err:
        _fail(str(err))


# --------------------------------------------------------------------------- import
def import_history(
    file: Annotated[Path, typer.Argument(help="CSV file, long or wide layout.")],
    *,
    config: ConfigOption,
    layout: Annotated[
        ImportLayout,
        typer.Option(
            help="long (path, ts, value[, quality][, text]), wide (a timestamp "
            "column and one column per tag) or auto (long if there are path and value columns)."
        ),
    ] = ImportLayout.AUTO,
    tz: TzOption = "UTC",
    ts_column: Annotated[
        str | None,
        typer.Option(help="The timestamp column (default: ts for long, the first for wide)."),
    ] = None,
    ts_format: Annotated[
        str | None,
        typer.Option(
            help="strptime format of the timestamps instead of ISO 8601, e.g. '%d.%m.%Y %H:%M:%S'."
        ),
    ] = None,
    delimiter: Annotated[str, typer.Option(help="Field separator.")] = ",",
    decimal_comma: Annotated[
        bool, typer.Option(help="Values are written 21,5 (use with --delimiter ';').")
    ] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding, e.g. cp1252.")] = "utf-8",
    create_tags: Annotated[
        bool, typer.Option(help="Create tags the historian does not know (else refused).")
    ] = False,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            help="Import the valid rows and leave out the rejected ones (default: "
            "any rejected row refuses the whole file)."
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Write every rejected row to this CSV file (line, column, reason)."),
    ] = None,
) -> None:
    """Import history from CSV: checked row by row, stored in one transaction, once per file."""
    from shopfloor.server.app import build_historian
    from shopfloor.server.historian.cells import check_zone
    from shopfloor.server.historian.import_csv import ImportOptions, file_sha256, read_import
    from shopfloor.server.historian.offline import opened, target_of
    from shopfloor.server.historian.transfer import already_imported, store_import

    cfg = _config(config)
    if len(delimiter) != 1:
        _fail("--delimiter must be one character", EXIT_USAGE)
    try:
        options = ImportOptions(
            layout=layout.value,
            tz=check_zone(tz),
            ts_column=ts_column,
            ts_format=ts_format,
            delimiter=delimiter,
            decimal_comma=decimal_comma,
            encoding=encoding,
            create_tags=create_tags,
        )
        size = file.stat().st_size
    except PayloadError as err:
        _fail(str(err), EXIT_USAGE)
    except OSError as err:
        _fail(f"cannot read {file}: {err.strerror}", EXIT_USAGE)

    async def run() -> int:
        with _progress() as bar:
            hashing = bar.add_task("checksum", total=size)
            sha256 = await asyncio.to_thread(
                file_sha256, file, lambda done: bar.update(hashing, completed=done)
            )
            bar.remove_task(hashing)
            async with opened(build_historian(cfg), target_of(cfg)) as historian:
                if already_imported(historian, sha256):
                    out_console.print(f"{file} was imported before (same content): nothing stored")
                    return 0
                known = {m.path: m for m in await historian.tags()}
                reading = bar.add_task("checking rows", total=size)
                plan = await asyncio.to_thread(
                    read_import,
                    file,
                    tags=known,
                    options=options,
                    progress=lambda done: bar.update(reading, completed=done),
                )
                bar.remove_task(reading)
                problems = [*plan.fatal, *plan.rejected]
                if problems:
                    bar.stop()
                    _show_problems(problems, report)
                if plan.fatal:
                    err_console.print(f"{file} cannot be imported; nothing was stored")
                    return EXIT_FAILED
                points = len(plan.batch)
                if plan.rejected and not skip_invalid:
                    err_console.print(
                        f"refused: {len(plan.rejected)} problem(s) in {file}; nothing was "
                        f"stored. Fix them, or import the {points:,} valid point(s) with "
                        "--skip-invalid."
                    )
                    return EXIT_FAILED
                if not points:
                    err_console.print(f"{file} holds no valid point: nothing to import")
                    return EXIT_FAILED
                bar.add_task(f"storing {points:,} points in one transaction", total=None)
                receipt = await store_import(historian, plan.batch, sha256=sha256)
        if receipt.duplicate:
            out_console.print(f"{file} was imported before (same content): nothing stored")
            return 0
        skipped = f", {len(plan.rejected)} rejected (left out)" if plan.rejected else ""
        created = f", {len(plan.new_tags)} new tag(s)" if plan.new_tags else ""
        out_console.print(
            f"imported {receipt.accepted:,} points of {len(plan.batch.tags)} tag(s) from "
            f"{file} ({plan.layout} layout{created}{skipped})"
        )
        return 0

    code = _run(run())
    if code:
        raise typer.Exit(code)


def _show_problems(problems: list[Problem], report: Path | None) -> None:
    for p in problems[:_SHOWN_PROBLEMS]:
        where = f"line {p.line}" + (f", column {p.column}" if p.column else "")
        err_console.print(f"  {where}: {p.reason}", markup=False)
    more = len(problems) - _SHOWN_PROBLEMS
    if more > 0:
        hint = f" (all in {report})" if report else " (--report FILE lists them all)"
        err_console.print(f"  … and {more} more{hint}", markup=False)
    if report is not None:
        with report.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "column", "reason"])
            writer.writerows((p.line, p.column, p.reason) for p in problems)
        err_console.print(f"every problem is listed in {report}", markup=False)


# --------------------------------------------------------------------- backup, restore
def backup(
    *,
    config: ConfigOption,
    out: Annotated[Path, typer.Option(help="New (or empty) folder to write the backup to.")],
    pg_bin: PgBinOption = None,
) -> None:
    """Back up the configuration file(s) and the history, with a manifest, and verify it.

    DuckDB: stop the server first. PostgreSQL: the server may keep running.
    """
    from shopfloor.server.historian.backup_jobs import make_backup
    from shopfloor.server.historian.offline import target_of

    cfg = _config(config)
    facts = {"folder": str(out.absolute()), "config": str(config.absolute())}

    async def run() -> Manifest:
        try:
            return await asyncio.to_thread(
                make_backup, target_of(cfg), config=config, out=out, pg_bin=pg_bin
            )
        except BaseException as err:
            _audit_failure(cfg, "backup.created", out, err, facts)
            raise

    with err_console.status("backing up…"):
        manifest = _run(run())
    _audit(cfg, "backup.created", out, {**facts, **_manifest_facts(out, manifest)})
    size = sum(f.size for f in manifest.files)
    out_console.print(
        f"backup written to {out} and verified: {_count(manifest.tables)}, "
        f"{len(manifest.files)} files, {size / 1e6:,.1f} MB ({manifest.backend})"
    )


def restore(
    folder: Annotated[Path, typer.Argument(help="A folder written by shopfloor backup.")],
    *,
    config: ConfigOption,
    force: Annotated[
        bool, typer.Option(help="Replace existing history (it is kept aside, renamed).")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(help="Only verify the backup and the target; change nothing."),
    ] = False,
    pg_bin: PgBinOption = None,
) -> None:
    """Verify a backup and restore its history (stop the server first).

    A changed, missing or extra file refuses the backup (exit 3); existing history is
    kept unless --force. The configuration files stay in FOLDER/config.
    """
    from shopfloor.server.historian.backup_jobs import RestoreResult, restore_backup
    from shopfloor.server.historian.offline import target_of

    cfg = _config(config)
    facts = {"folder": str(folder.absolute()), "config": str(config.absolute()), "force": force}

    async def run() -> RestoreResult:
        try:
            return await asyncio.to_thread(
                restore_backup,
                folder,
                target_of(cfg),
                config=config,
                force=force,
                check_only=check,
                pg_bin=pg_bin,
            )
        except BaseException as err:
            if not check:  # a check changes nothing: it is not audited
                _audit_failure(cfg, "restore.done", folder, err, facts)
            raise

    with err_console.status("verifying and restoring…" if not check else "verifying…"):
        result = _run(run())
    if not check:
        done = {"kept_as": result.kept_as, "replaced": result.replaced}
        facts |= _manifest_facts(folder, result.manifest)
        _audit(cfg, "restore.done", folder, {**facts, **done})
    manifest = result.manifest
    if check:
        out_console.print(
            f"{folder} is intact ({_count(manifest.tables)}, made {manifest.created}); "
            + (
                "the target holds history: restoring needs --force"
                if _has_history(result.replaced)
                else "the target is free to restore into"
            )
        )
        return
    out_console.print(f"restored {_count(manifest.tables)} from {folder} (made {manifest.created})")
    if result.kept_as:
        out_console.print(
            f"the history that was there is kept as {result.kept_as}; delete it when satisfied"
        )
    if result.config_differs:
        out_console.print(
            f"note: {config} differs from the backed-up configuration in {folder / 'config'}"
        )


def _manifest_facts(folder: Path, manifest: Manifest | None) -> dict[str, Any]:
    """What an audit entry of a backup names: the manifest's SHA-256 (which pins every
    file's), the backup's size, its backend and tables."""
    from shopfloor.server.historian.backup import MANIFEST, hash_file

    facts: dict[str, Any] = {}
    if (folder / MANIFEST).is_file():
        facts["manifest_sha256"] = hash_file(folder / MANIFEST)
    if manifest is not None:
        size = sum(f.size for f in manifest.files) + (folder / MANIFEST).stat().st_size
        facts |= {
            "size_bytes": size,
            "files": len(manifest.files) + 1,
            "backend": manifest.backend,
            "tables": manifest.tables,
            "made": manifest.created,
        }
    return facts


def _audit_place(cfg: ShopfloorConfig) -> Any:
    """Where the servers of ``cfg`` keep their audit log: the data folder, or the shared
    PostgreSQL of scaled-out API servers (``historian.shared``)."""
    from shopfloor.server.security.offline import shared_place

    return shared_place(cfg) or cfg.server.data_dir


def _audit(cfg: ShopfloorConfig, action: str, folder: Path, detail: dict[str, Any]) -> None:
    """Enter a done backup or restore in the servers' audit log (as ``cli:LOGIN``).

    A backup or restore that cannot be audited fails the command (exit 1), saying that
    the work itself is done.
    """
    from shopfloor.server.security.audit import AuditError, Outcome
    from shopfloor.server.security.offline import record

    try:
        record(
            _audit_place(cfg),
            action=action,
            target=str(folder.absolute()),
            outcome=Outcome.OK,
            detail=detail,
        )
    except AuditError as err:
        verb = "backup" if action.startswith("backup") else "restore"
        _fail(f"the {verb} is done, but it could not be audited: {err}")


def _audit_failure(
    cfg: ShopfloorConfig, action: str, folder: Path, err: BaseException, facts: dict[str, Any]
) -> None:
    """Enter a backup or restore that did not happen: ``rejected`` when shopfloor refused
    it or a step failed with an explained error (both in ``detail.error``: a tampered
    backup, existing history, a running server, a failed pg_dump), ``error`` for anything
    unexpected. A failure to audit it is only warned about: the command's error goes on."""
    from shopfloor.server.historian.backup import BackupError
    from shopfloor.server.historian.offline import ServerRunning
    from shopfloor.server.security.audit import AuditError, Outcome
    from shopfloor.server.security.offline import record

    refused = isinstance(err, BackupError | ServerRunning | ConfigError)
    detail = {**facts, **_manifest_facts(folder, None), "error": str(err) or type(err).__name__}
    try:
        record(
            _audit_place(cfg),
            action=action,
            target=str(folder.absolute()),
            outcome=Outcome.REJECTED if refused else Outcome.ERROR,
            detail=detail,
        )
    except AuditError as audit_err:
        err_console.print(f"warning: the failure could not be audited: {audit_err}")


def _count(tables: dict[str, int]) -> str:
    from shopfloor.server.historian.backup import summarize

    return summarize(tables)


def _has_history(tables: dict[str, int]) -> bool:
    from shopfloor.server.historian.backup import holds_history

    return holds_history(tables)


def register_history_commands(app: typer.Typer) -> None:
    """Add export, import, backup and restore to the ``shopfloor`` command."""
    app.command("export")(export)
    app.command("import")(import_history)
    app.command("backup")(backup)
    app.command("restore")(restore)
