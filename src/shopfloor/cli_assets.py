"""``shopfloor assets``: check a plant's asset model, and write a connector's tag list
from it. Wiring only.

``shopfloor assets tags --plant plant.toml --connector plc-3 --out plc-3.csv`` writes the
CSV an edge's connector reads with ``tags_file = "plc-3.csv"``: every bound measurement
of the equipment that connector reads, with its ISA-95 path and the template's unit,
range and state labels. The plant is described once; the edge follows from it.

Exit codes: 0 done, 2 an invalid plant or template, or an unknown connector.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from shopfloor.errors import ConfigError
from shopfloor.server.assets import load_asset_model

__all__ = ["register_assets_commands", "tag_csv"]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_FIRST = ["name", "path", "address", "data_type", "scale", "offset", "unit"]

PlantOption = Annotated[Path, typer.Option("--plant", help="The plant file.")]
TemplatesOption = Annotated[
    Path | None, typer.Option("--templates", help="Template folder (default: beside the plant).")
]


def tag_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as the tag CSV the connectors read (``states`` written ``0=off;1=on``)."""
    columns = [*_FIRST, *sorted({k for r in rows for k in r} - set(_FIRST))]
    used = [c for c in columns if any(c in r for r in rows)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=used, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = dict(row)
        if "states" in cells:
            cells["states"] = ";".join(f"{k}={v}" for k, v in cells["states"].items())
        writer.writerow(cells)
    return out.getvalue()


def register_assets_commands(app: typer.Typer) -> None:
    """Add ``shopfloor assets check`` and ``shopfloor assets tags``."""
    assets_app = typer.Typer(help="The plant's asset model.", no_args_is_help=True)
    app.add_typer(assets_app, name="assets")

    def model(plant: Path, templates: Path | None) -> Any:
        try:
            return load_asset_model(plant, templates or plant.parent / "templates")
        except ConfigError as err:
            err_console.print(f"[bold red]error:[/] {err}", markup=True)
            raise typer.Exit(2) from err

    @assets_app.command("check")
    def check(plant: PlantOption, templates: TemplatesOption = None) -> None:
        """Validate the plant file and its templates (exit 2 naming every problem)."""
        loaded = model(plant, templates)
        sys.stdout.write(
            f"{plant}: ok ({len(loaded.equipment)} equipment, {len(loaded.tags)} tags, "
            f"{len(loaded.alarm_rules)} alarms)\n"
        )

    @assets_app.command("tags")
    def tags(
        plant: PlantOption,
        connector: Annotated[str, typer.Option("--connector", help="The connector's name.")],
        templates: TemplatesOption = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Write the CSV here (default: stdout).")
        ] = None,
    ) -> None:
        """The tag CSV of one connector, for its ``tags_file``."""
        loaded = model(plant, templates)
        try:
            text = tag_csv(loaded.connector_tags(connector))
        except ConfigError as err:
            err_console.print(f"[bold red]error:[/] {err}", markup=True)
            raise typer.Exit(2) from err
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text, encoding="utf-8")
            err_console.print(f"{out}: {text.count(chr(10)) - 1} tags of connector {connector}")
