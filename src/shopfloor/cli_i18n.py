"""``shopfloor i18n extract|update|migrate|check``: the dashboard's translation catalogues.

Wiring only; the work is in :mod:`shopfloor.server.web.catalogue_tools`. Run from a source
checkout (the files written are the package's own ``server/web/locale/`` and JS modules).
See docs/dashboard.md, "Adding a language / a string".

Exit codes: 0 done (``check``: all in order), 1 ``check`` found problems, 2 a strings module
or catalogue cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shopfloor.server.web import catalogue_tools as tools
from shopfloor.server.web.jstables import StringTableError
from shopfloor.server.web.routes import WEB_DIR

__all__ = ["register_i18n_commands"]

console = Console(highlight=False, markup=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

WebDir = Annotated[
    Path,
    typer.Option(
        "--web-dir", help="The web folder (templates/, static/, locale/); default the package's."
    ),
]


def _report(outcome: tools.Outcome) -> None:
    for path in outcome.written:
        console.print(f"wrote {path}")
    for tag, count in outcome.moved.items():
        console.print(f"moved {count} {tag} strings from the JS tables into the catalogue")
    for line in outcome.overridden:
        console.print(f"the JS table replaced the catalogue's {line}")
    for po_locale, count in outcome.untranslated.items():
        if count:
            console.print(f"{po_locale}: {count} strings to translate (empty or fuzzy)")
    if not outcome.written:
        console.print("nothing to change")


def _run(action: str, web_dir: Path, add: list[str] | None = None) -> None:
    sources = tools.Sources(web_dir)
    try:
        if action == "extract":
            _report(tools.extract(sources))
        elif action == "update":
            _report(tools.update(sources, add=add or []))
        elif action == "migrate":
            _report(tools.migrate(sources))
        else:
            result = tools.check(sources)
            for problem in result.problems:
                err_console.print(problem)
            if not result.ok:
                err_console.print(f"{len(result.problems)} problems")
                raise typer.Exit(1)
            console.print("the catalogues are complete and up to date")
    except StringTableError as err:
        err_console.print(str(err))
        raise typer.Exit(2) from err


def register_i18n_commands(app: typer.Typer) -> None:
    """Add the ``i18n`` group to the ``shopfloor`` command."""
    i18n_app = typer.Typer(help="The dashboard's translation catalogues.", no_args_is_help=True)
    app.add_typer(i18n_app, name="i18n")

    @i18n_app.command("extract")
    def extract(web_dir: WebDir = WEB_DIR) -> None:
        """Write locale/messages.pot from the English tables of the JS modules."""
        _run("extract", web_dir)

    @i18n_app.command("update")
    def update(
        web_dir: WebDir = WEB_DIR,
        add: Annotated[
            list[str] | None,
            typer.Option("--add", help="Start a catalogue for this language (e.g. fr)."),
        ] = None,
    ) -> None:
        """Extract, then bring every catalogue in line: new strings to translate, changed
        English marked fuzzy, removed strings obsolete."""
        _run("update", web_dir, add)

    @i18n_app.command("migrate")
    def migrate(web_dir: WebDir = WEB_DIR) -> None:
        """Move translations still in JS tables ("zh-CN": {...}) into the catalogues and
        delete those tables; safe to run again."""
        _run("migrate", web_dir)

    @i18n_app.command("check")
    def check(web_dir: WebDir = WEB_DIR) -> None:
        """Fail unless the .pot is up to date and every string is translated."""
        _run("check", web_dir)
