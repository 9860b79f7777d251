"""``shopfloor disk``: what uses the historian's disk, per area, equipment or tag. Wiring only.

The same figures as ``GET /api/v1/storage``. DuckDB: run it with the server stopped (the
file has one user; for a running server ask its API). PostgreSQL: any time.

Exit codes: 0 shown, 1 failed (the server holds the file, a storage error), 2 bad usage
or configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor.config import load_config
from shopfloor.errors import ConfigError, PayloadError, ShopfloorError

if TYPE_CHECKING:
    from shopfloor.config import ShopfloorConfig

__all__ = ["register_disk_commands"]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2


class DiskGroup(StrEnum):
    """What ``shopfloor disk`` sums per."""

    AREA = "area"
    EQUIPMENT = "equipment"
    TAG = "tag"


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise typer.Exit(code)


def _config(path: Path) -> ShopfloorConfig:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    try:
        return load_config(path)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)


def size(n: int | None) -> str:
    """Bytes for people (decimal units, as disks are sold): ``1.4 GB``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _day(iso: str | None) -> str:
    return "—" if iso is None else iso[:16].replace("T", " ")


def disk(
    *,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The platform's TOML configuration file.")
    ],
    group: Annotated[
        DiskGroup, typer.Option(help="Sum per area, equipment or tag.")
    ] = DiskGroup.EQUIPMENT,
    prefix: Annotated[
        str | None, typer.Option(help="Only tags at or under this asset path.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Show the largest N groups.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON answer instead of tables.")
    ] = False,
) -> None:
    """Show what uses the historian's disk: bytes, points, oldest and newest per group."""
    from shopfloor.server.api.convert import normalise_prefix
    from shopfloor.server.api.routes.storage import render
    from shopfloor.server.app import build_historian
    from shopfloor.server.historian.disk_usage import StorageReporter
    from shopfloor.server.historian.offline import opened, target_of

    try:
        wanted = normalise_prefix(prefix, field="--prefix")
    except PayloadError as err:
        _fail(str(err), EXIT_USAGE)
    cfg = _config(config)

    async def run() -> dict[str, Any]:
        target = target_of(cfg)
        async with opened(build_historian(cfg), target) as historian:
            if not isinstance(historian, StorageReporter):
                raise ShopfloorError("this historian cannot report its storage")
            report = await historian.storage_report()
        return render(report, group=group.value, prefix=wanted, top=top)

    try:
        answer = asyncio.run(run())
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    except (ShopfloorError, OSError) as err:
        _fail(str(err))
    if as_json:
        out_console.print_json(json.dumps(answer))
        return
    _show(answer)


def _show(answer: dict[str, Any]) -> None:
    totals = answer["totals"]
    everything = sum(t["used_bytes"] for t in answer["tables"]) or 1
    table = Table(
        title=f"What uses the disk, per {answer['group']}"
        + (f" under {answer['prefix']}" if answer["prefix"] else ""),
        title_justify="left",
    )
    table.add_column(answer["group"], overflow="fold", min_width=24)
    for name in ("tags", "points", "raw", "rollups", "share"):
        table.add_column(name, justify="right")
    table.add_column("oldest (UTC)", no_wrap=True)
    table.add_column("newest (UTC)", no_wrap=True)
    for g in answer["groups"]:
        table.add_row(
            g["key"],
            f"{g['tags']:,}",
            f"{g['points']:,}",
            size(g["bytes"]),
            size(g["rollup_bytes"]),
            f"{100 * (g['bytes'] + g['rollup_bytes']) / everything:.1f} %",
            _day(g["oldest"]),
            _day(g["newest"]),
        )
    out_console.print(table)
    hidden = answer["groups_total"] - len(answer["groups"])
    if hidden > 0:
        out_console.print(f"… and {hidden} more (--top to show them)")
    tables = Table(title="Tables", title_justify="left")
    for name in ("table", "kind", "rows", "on disk", "used"):
        tables.add_column(name, justify="left" if name in ("table", "kind") else "right")
    for t in answer["tables"]:
        tables.add_row(
            t["name"], t["kind"], f"{t['rows']:,}", size(t["bytes"]), size(t["used_bytes"])
        )
    out_console.print(tables)
    retention = answer["retention"]
    budget = totals["budget_bytes"]
    lines = [
        f"backend      {answer['backend']}",
        f"on disk      {size(totals['storage_bytes'])}"
        + (
            f" (database {size(totals['database_bytes'])})" if answer["backend"] != "duckdb" else ""
        ),
        f"used         {size(totals['used_bytes'])}"
        + (f" of a {size(budget)} budget" if budget else " (no disk budget)"),
        f"free disk    {size(totals['free_disk_bytes'])}",
        f"points       {totals['points']:,} raw, {totals['rollup_rows']:,} rollup rows",
        f"retention    raw {retention.get('raw') or 'forever'}, 1-minute rollups "
        f"{retention.get('rollup_1m') or 'forever'}, 1-hour rollups "
        f"{retention.get('rollup_1h') or 'forever'}"
        + (f"; rules: {retention['rules']}" if retention.get("rules") else ""),
        f"evicted      {retention.get('budget_evictions', 0)} day(s) for the budget since start",
        f"method       {answer['method']}",
    ]
    for line in lines:
        out_console.print(line)


def register_disk_commands(app: typer.Typer) -> None:
    """Add ``disk`` to the ``shopfloor`` command."""
    app.command("disk")(disk)
