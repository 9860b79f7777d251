"""``shopfloor users`` and ``shopfloor tokens``: manage logins on a data folder, or with
``--config`` where that server keeps them (the shared PostgreSQL of scaled-out API servers,
``historian.shared = true``; else its ``server.data_dir``). Wiring only.

Passwords are asked twice without echo, or read from ``--password-file`` (automation).
A token's secret is printed once, alone on stdout. Exit codes: 0 done, 1 refused (name
taken, unknown user or token, the last admin, a weak password), 2 bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from shopfloor.errors import ConfigError, ShopfloorError

if TYPE_CHECKING:
    from shopfloor.server.security.offline import Place

__all__ = ["register_user_commands"]

err_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

users_app = typer.Typer(help="Users who log in to the dashboard and API.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for scripts, edges and Grafana.", no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="The server's data folder (server.data_dir).", file_okay=False
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The server's configuration instead of --data-dir: its data folder, or the "
        "shared PostgreSQL with historian.shared = true.",
        dir_okay=False,
    ),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option(help="Read the password from this file's first line instead of asking."),
]


def _password(file: Path | None) -> str:
    if file is not None:
        try:
            lines = file.read_text().splitlines()
            return lines[0] if lines else ""
        except OSError as err:
            err_console.print(f"error: cannot read {file}: {err.strerror}")
            raise typer.Exit(2) from err
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _place(data_dir: Path | None, config: Path | None) -> Place:
    """Where the users are: ``--data-dir``, or what ``--config`` says (exit 2: neither
    or both, or a configuration that does not load)."""
    if (data_dir is None) == (config is None):
        err_console.print("error: give --data-dir or --config (one of them)")
        raise typer.Exit(2)
    if data_dir is not None:
        return data_dir
    assert config is not None
    from shopfloor.config import load_config
    from shopfloor.server.security.offline import shared_place

    try:
        loaded = load_config(config)
        return shared_place(loaded) or loaded.server.data_dir
    except ConfigError as err:
        err_console.print(f"error: {err}")
        raise typer.Exit(2) from err


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _refused(err: ShopfloorError) -> typer.Exit:
    err_console.print(f"error: {err}")
    return typer.Exit(1)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    *,
    role: Annotated[str, typer.Option(help="viewer, operator, engineer or admin.")] = "viewer",
    sites: Annotated[
        str, typer.Option(help="Comma-separated ISA-95 path prefixes the user is limited to.")
    ] = "",
    password_file: PasswordFile = None,
) -> None:
    """Create a user."""
    from shopfloor.server.security.offline import add_user

    try:
        user = add_user(
            _place(data_dir, config),
            name,
            _password(password_file),
            role=role,
            sites=[s for s in sites.split(",") if s.strip()],
        )
    except ShopfloorError as err:
        raise _refused(err) from err
    _out(f"created {user.name} ({user.role})")


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    *,
    password_file: PasswordFile = None,
) -> None:
    """Set a user's password (ends its sessions and lifts a lockout)."""
    from shopfloor.server.security.offline import set_password

    try:
        set_password(_place(data_dir, config), name, _password(password_file))
    except ShopfloorError as err:
        raise _refused(err) from err
    _out(f"password of {name} changed; its sessions ended")


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    *,
    enable: Annotated[bool, typer.Option(help="Enable the user again instead.")] = False,
) -> None:
    """Disable a user (its sessions end), or enable it again."""
    from shopfloor.server.security.offline import set_disabled

    try:
        set_disabled(_place(data_dir, config), name, disabled=not enable)
    except ShopfloorError as err:
        raise _refused(err) from err
    _out(f"{name} {'enabled' if enable else 'disabled'}")


@users_app.command("list")
def users_list(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List users: name, role, disabled, sites."""
    from shopfloor.server.security.offline import list_users

    for u in list_users(_place(data_dir, config)):
        state = "disabled" if u.disabled else "enabled"
        _out(f"{u.name}\t{u.role}\t{state}\t{','.join(u.sites)}")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    *,
    role: Annotated[
        str,
        typer.Option(help="A role, or a scope: read, operate or ingest."),
    ] = "read",
    user: Annotated[str | None, typer.Option(help="A user the token acts as.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d or 12h (default: until revoked).")
    ] = None,
) -> None:
    """Create an API token; its secret is printed once on stdout."""
    from shopfloor.config.durations import parse_duration_s
    from shopfloor.server.security.offline import create_token

    try:
        seconds = None if expires is None else parse_duration_s(expires)
    except (ValueError, ConfigError) as err:
        err_console.print(f"error: --expires: {err}")
        raise typer.Exit(2) from err
    try:
        token, secret = create_token(
            _place(data_dir, config), name, role=role, user=user, expires_in_s=seconds
        )
    except ShopfloorError as err:
        raise _refused(err) from err
    sys.stdout.write(f"{secret}\n")
    err_console.print(
        f"token {token.id} ({token.role}) created; the secret above is not shown again: "
        "send it as Authorization: Bearer <secret>"
    )


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tokens list).")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke an API token: it is refused from now on."""
    from shopfloor.server.security.offline import revoke_token

    try:
        revoke_token(_place(data_dir, config), token_id)
    except ShopfloorError as err:
        raise _refused(err) from err
    _out(f"token {token_id} revoked")


@tokens_app.command("list")
def tokens_list(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List API tokens: id, name, role, user, state (never their secrets)."""
    from shopfloor.server.security.offline import list_tokens

    for t in list_tokens(_place(data_dir, config)):
        state = "revoked" if t.revoked_ns else "live"
        _out(f"{t.id}\t{t.name}\t{t.role}\t{t.user or '-'}\t{state}")


def register_user_commands(app: typer.Typer) -> None:
    """Add ``users`` and ``tokens`` to the ``shopfloor`` command."""
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
