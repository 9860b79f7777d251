"""``shopfloor certs``: a private CA, the platform's certificate, edges' client certificates.

Wiring only: the work is in :mod:`shopfloor.pki` (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from shopfloor.pki import (
    Issued,
    KeyType,
    PkiError,
    default_hosts,
    init_ca,
    issue_client,
    issue_server,
)

__all__ = ["register_certs_commands"]

_err = Console(stderr=True)
T = TypeVar("T")

DirOption = Annotated[
    Path, typer.Option("--dir", help="Folder of the CA (ca.pem, ca.key.pem) and its files.")
]
HostOption = Annotated[
    list[str] | None,
    typer.Option("--host", help="DNS name of the server (repeat; default: see above)."),
]
IpOption = Annotated[
    list[str] | None,
    typer.Option("--ip", help="IP address of the server (repeat)."),
]
DaysOption = Annotated[int, typer.Option(min=1, help="Days the certificate is valid.")]
KeyOption = Annotated[str, typer.Option("--key-type", help="ec (ECDSA P-256) or rsa (RSA 2048).")]


def register_certs_commands(app: typer.Typer) -> None:
    """Add the ``certs`` verbs to ``app``."""
    certs_app = typer.Typer(
        help="A private CA for HTTPS on the plant network (docs/security.md).",
        no_args_is_help=True,
    )
    app.add_typer(certs_app, name="certs")

    @certs_app.command("init")
    def init(
        directory: DirOption,
        *,
        host: HostOption = None,
        ip: IpOption = None,
        days: DaysOption = 730,
        ca_days: Annotated[int, typer.Option(min=1, help="Days the CA is valid.")] = 3650,
        key_type: KeyOption = "ec",
    ) -> None:
        """Make a CA and a server certificate for the platform (never overwrites a CA).

        Without --host and --ip the certificate names this machine's hostname,
        localhost and 127.0.0.1.
        """
        hosts = [*(host or []), *(ip or [])] or default_hosts()
        ca, server = _run(
            lambda: init_ca(
                directory, hosts=hosts, key_type=_key(key_type), ca_days=ca_days, days=days
            )
        )
        typer.echo(f"CA:     {ca.certificate} (give it to edges: uplink.ca_file)")
        typer.echo(f"        {ca.private_key} (keep it secret and off the network)")
        _print_server(server)

    @certs_app.command("issue-server")
    def issue_server_cmd(
        directory: DirOption,
        *,
        host: HostOption = None,
        ip: IpOption = None,
        days: DaysOption = 730,
        key_type: KeyOption = "ec",
    ) -> None:
        """Issue a new server certificate from the CA in --dir (renewal, other names);
        replaces server.pem and server.key.pem."""
        hosts = [*(host or []), *(ip or [])] or default_hosts()
        _print_server(
            _run(lambda: issue_server(directory, hosts=hosts, key_type=_key(key_type), days=days))
        )

    @certs_app.command("issue-client")
    def issue_client_cmd(
        edge_id: Annotated[str, typer.Argument(help="The edge's id (its edge.id).")],
        directory: DirOption,
        *,
        out: Annotated[
            Path | None, typer.Option(help="Folder to write to (default: DIR/clients).")
        ] = None,
        days: DaysOption = 730,
        key_type: KeyOption = "ec",
        force: Annotated[bool, typer.Option(help="Replace this edge's existing files.")] = False,
    ) -> None:
        """Issue an edge's client certificate from the CA in --dir."""
        issued = _run(
            lambda: issue_client(
                directory, edge_id, out=out, key_type=_key(key_type), days=days, replace=force
            )
        )
        typer.echo(f"client: {issued.certificate} (uplink.cert_file of edge {edge_id})")
        typer.echo(f"        {issued.private_key} (uplink.key_file, mode 0600)")


def _key(value: str) -> KeyType:
    if value == "ec":
        return "ec"
    if value == "rsa":
        return "rsa"
    _err.print(f"[bold red]error:[/] --key-type must be ec or rsa, got {value!r}")
    raise typer.Exit(2)


def _run(work: Callable[[], T]) -> T:
    try:
        return work()
    except PkiError as err:
        _err.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from err


def _print_server(server: Issued) -> None:
    typer.echo(f"server: {server.certificate} ([server.tls] cert_file)")
    typer.echo(f"        {server.private_key} ([server.tls] key_file, mode 0600)")
    typer.echo(f"        for {', '.join(server.names)}")
