"""``shopfloor assets``: check a plant's asset model, write a connector's tag list from
it, and export it as files. Wiring only.

``shopfloor assets tags --plant plant.toml --connector plc-3 --out plc-3.csv`` writes the
CSV an edge's connector reads with ``tags_file = "plc-3.csv"``: every bound measurement
of the equipment that connector reads, with its ISA-95 path and the template's unit,
range and state labels. The plant is described once; the edge follows from it.

``shopfloor assets export --out DIR [--format toml|yaml]`` writes the plant and its
templates (the packaged demo plant without ``--plant``): a starting point for a plant of
one's own, or the YAML or TOML twin of a plant. ``shopfloor assets check`` passes on the
result and loads the same model.

Exit codes: 0 done, 2 an invalid plant or template, an unknown connector, or files in the
way of an export.
"""

from __future__ import annotations

import csv
import io
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from shopfloor.errors import ConfigError
from shopfloor.server.assets import load_asset_model
from shopfloor.server.assets.editor import export_files

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


def export_plant(
    plant: Path, templates: Path, out: Path, *, fmt: Literal["toml", "yaml"], force: bool = False
) -> list[Path]:
    """Write ``plant`` and its ``templates`` (validated first) to ``out`` as ``fmt``; the
    files written.

    Raises:
        ConfigError: the plant or a template is invalid, or (without ``force``) a file
            to be written exists already.
    """
    load_asset_model(plant, templates)
    files = export_files(plant, templates, fmt)
    targets = {out / name: text for name, text in files.items()}
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"{out}: would overwrite {', '.join(existing)} (--force to do so)")
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(targets)


def register_assets_commands(app: typer.Typer) -> None:
    """Add ``shopfloor assets check``, ``tags`` and ``export``."""
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

    @assets_app.command("export")
    def export(
        out: Annotated[Path, typer.Option("--out", help="Folder to write the files to.")],
        plant: Annotated[
            Path | None,
            typer.Option("--plant", help="The plant file (default: the packaged demo plant)."),
        ] = None,
        templates: TemplatesOption = None,
        fmt: Annotated[str, typer.Option("--format", help="toml (default) or yaml.")] = "toml",
        force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist.")] = False,
    ) -> None:
        """Write the plant and its templates to a folder, as TOML or YAML."""
        if fmt not in ("toml", "yaml"):
            err_console.print(f"[bold red]error:[/] --format is toml or yaml, not {fmt!r}")
            raise typer.Exit(2)
        chosen: Literal["toml", "yaml"] = "yaml" if fmt == "yaml" else "toml"
        with resources.as_file(resources.files("shopfloor") / "demo_plant") as demo:
            source = plant or demo / "plant.toml"
            folder = templates or source.parent / "templates"
            try:
                written = export_plant(source, folder, out, fmt=chosen, force=force)
            except ConfigError as err:
                err_console.print(f"[bold red]error:[/] {err}", markup=True)
                raise typer.Exit(2) from err
        err_console.print(f"{out}: {len(written)} files ({written[0].name} and its templates)")
