"""``shopfloor broker config``: the Mosquitto files of the MQTT transport. Wiring only.

``shopfloor broker config --out DIR --edge press-1 --edge press-2`` writes into DIR a
password file, an ACL file and a ``shopfloor.conf`` snippet (``allow_anonymous false``,
``password_file``, ``acl_file``), and one credential file per identity
(``credentials/<user>.password``, mode 0600) for the edge or platform that uses it
(``password_file = …`` under ``[uplink.mqtt]`` / ``[ingest.mqtt]``). Existing credentials
are kept; no password is ever printed. See docs/broker.md.

Exit codes: 0 written, 2 bad usage (an invalid edge id, user name or topic root) or the
files cannot be written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shopfloor.broker import BrokerPlan, write_broker_files
from shopfloor.broker.acl import edge_user
from shopfloor.errors import ConfigError

__all__ = ["register_broker_commands"]

err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

EXIT_USAGE = 2


def broker_config(
    *,
    out: Annotated[Path, typer.Option("--out", help="Folder for the files (created).")],
    edge: Annotated[
        list[str],
        typer.Option("--edge", help="An edge id (repeat for each edge); user shopfloor-edge-<id>."),
    ],
    server_user: Annotated[
        list[str] | None,
        typer.Option(
            "--server-user",
            help="The platform's broker user (repeat for several; default shopfloor-platform).",
        ),
    ] = None,
    topic_root: Annotated[
        str, typer.Option(help="topic_root of uplink.mqtt and ingest.mqtt.")
    ] = "shopfloor/v1",
    uns_root: Annotated[
        str | None,
        typer.Option(help="Also let the platform publish the UNS below this (uns.topic_root)."),
    ] = None,
    sparkplug_node: Annotated[
        str | None,
        typer.Option(help="Also let the platform be this Sparkplug node: GROUP/NODE."),
    ] = None,
    broker_dir: Annotated[
        Path | None,
        typer.Option(help="Where the broker will read the files (default: --out)."),
    ] = None,
    rotate: Annotated[
        list[str] | None,
        typer.Option("--rotate", help="A user whose password is replaced (repeat)."),
    ] = None,
) -> None:
    """Write Mosquitto's password file, ACL and config snippet for edges and platform."""
    plan = BrokerPlan(
        edges=edge,
        server_users=server_user or ("shopfloor-platform",),
        topic_root=topic_root,
        uns_root=uns_root,
        sparkplug_node=sparkplug_node,
        rotate=rotate or (),
    )
    try:
        files = write_broker_files(out, plan, broker_dir=broker_dir)
    except (ValueError, ConfigError) as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(EXIT_USAGE) from err
    for user, path in files.credentials.items():
        state = "new" if user in files.created else "kept"
        err_console.print(f"{user}: {path} ({state})")
    err_console.print(
        f"broker: include {files.conf} (allow_anonymous false, password_file {files.passwords}, "
        f"acl_file {files.acl}) and reload Mosquitto."
    )
    err_console.print(
        "each edge, [uplink.mqtt]: username = "
        f'"{edge_user("<id>")}", password_file = "<its credential file>"; '
        'platform, [ingest.mqtt]: username = "<server user>", password_file = "…".'
    )


def register_broker_commands(app: typer.Typer) -> None:
    """Add ``shopfloor broker config``."""
    broker_app = typer.Typer(help="The MQTT broker of the transport.", no_args_is_help=True)
    app.add_typer(broker_app, name="broker")
    broker_app.command("config")(broker_config)
