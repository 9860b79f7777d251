"""``shopfloor edge credential``: issue an edge's token for the platform. Wiring only.

The platform keeps only the token's hash (``[ingest] edge_credentials``); the token is
printed once, alone on stdout (``… > press-1.token`` keeps it in a file), with a hint on
stderr. Exit codes: 0 issued, 1 refused (the edge has a credential; ``--replace``) or the
file cannot be written, 2 bad usage (not an edge id).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shopfloor.config import ShopfloorConfig
from shopfloor.errors import ConfigError

__all__ = ["check_edge_credentials", "register_credential_commands"]

err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

EXIT_REFUSED = 1
EXIT_USAGE = 2


def credential(
    edge_id: Annotated[str, typer.Argument(help="The edge's id (its configuration's edge.id).")],
    *,
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="The platform's credentials file ([ingest] edge_credentials); created if missing.",
        ),
    ],
    replace: Annotated[
        bool,
        typer.Option(help="Replace the edge's credential: its old token stops working."),
    ] = False,
) -> None:
    """Issue a token for an edge: store its hash in FILE, print the token once."""
    from shopfloor.server.ingest.credentials import CredentialExists, issue_credential

    try:
        token = issue_credential(file, edge_id, replace=replace)
    except ValueError as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(EXIT_USAGE) from err
    except CredentialExists as err:
        err_console.print(f"error: {err} in {file}; --replace issues a new one")
        raise typer.Exit(EXIT_REFUSED) from err
    except OSError as err:
        err_console.print(f"error: cannot write {file}: {err.strerror or err}")
        raise typer.Exit(EXIT_REFUSED) from err
    sys.stdout.write(f"{token}\n")
    err_console.print(
        f"{edge_id}: hash stored in {file}. Keep the token (shown only now) on the edge in "
        'a file of mode 0600: [uplink] token_file = "edge.token" '
        '(or token_env = "SHOPFLOOR_EDGE_TOKEN")'
    )


def check_edge_credentials(config: ShopfloorConfig) -> None:
    """``config check``: every line of the credentials file must be valid (the server
    skips a malformed one; here it is an error, so it is found before an edge is locked out).

    Raises:
        ConfigError: the file cannot be read or has malformed lines (each named).
    """
    from shopfloor.server.ingest.credentials import read_credentials

    path = config.ingest.edge_credentials
    if path is None:
        return
    table = read_credentials(path)
    if table.problems:
        count = len(table.problems)
        raise ConfigError(
            f"{path}: {count} malformed line{'s' if count > 1 else ''} "
            "(ingest.edge_credentials; the server skips them)",
            [f"  {path.name} {problem}" for problem in table.problems],
        )


def register_credential_commands(edge_app: typer.Typer) -> None:
    """Add ``credential`` to ``shopfloor edge``."""
    edge_app.command("credential")(credential)
