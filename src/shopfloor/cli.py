"""The ``shopfloor`` command. Wiring only: every verb hands off to a composition root."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from shopfloor import __version__
from shopfloor.cli_assets import register_assets_commands
from shopfloor.cli_broker import register_broker_commands
from shopfloor.cli_certs import register_certs_commands
from shopfloor.cli_credentials import check_edge_credentials, register_credential_commands
from shopfloor.cli_disk import register_disk_commands
from shopfloor.cli_history import register_history_commands
from shopfloor.cli_i18n import register_i18n_commands
from shopfloor.cli_loadgen import register_loadgen_command
from shopfloor.cli_users import register_user_commands
from shopfloor.config import EdgeConfig, ShopfloorConfig, load_config, load_edge_config
from shopfloor.config.load import validate_data
from shopfloor.config.tls import TlsFileError
from shopfloor.errors import ConfigError, ShopfloorError

app = typer.Typer(
    name="shopfloor",
    help="On-premise industrial internet platform: connectors, historian, dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Work with configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
opcua_app = typer.Typer(help="OPC UA tools.", no_args_is_help=True)
app.add_typer(opcua_app, name="opcua")
register_history_commands(app)  # export, import, backup, restore
register_disk_commands(app)  # disk
register_assets_commands(app)  # assets check, assets tags
register_certs_commands(app)  # certs init, issue-server, issue-client
register_loadgen_command(app)  # loadgen
register_user_commands(app)  # users, tokens
register_broker_commands(app)  # broker config
register_i18n_commands(app)  # i18n extract, update, migrate, check

err_console = Console(stderr=True)


def _fail_config(err: ConfigError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
    return typer.Exit(2)


def _setup_logging(level: str, *, rich: bool) -> None:
    handler: logging.Handler
    if rich:
        handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # one line per HTTP request is noise on an edge that sends several a second
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


@app.command()
def version() -> None:
    """Print the version."""
    print(f"shopfloor {__version__}")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="TOML configuration file (platform or edge).")],
) -> None:
    """Validate a configuration file without starting anything (exit 2 if invalid).

    A file with an ``[edge]`` table is an edge configuration; any other, the platform's.
    """
    try:
        is_edge = "[edge]" in {
            line.strip() for line in file.read_text(errors="replace").splitlines()
        }
        if is_edge:
            load_edge_config(file)
        else:
            check_edge_credentials(load_config(file))
    except OSError as err:
        err_console.print(f"[bold red]error:[/] cannot read {file}: {err.strerror}")
        raise typer.Exit(2) from err
    except ConfigError as err:
        raise _fail_config(err) from err
    print(f"{file}: ok ({'edge' if is_edge else 'platform'} configuration)")


@opcua_app.command("browse")
def opcua_browse(
    url: Annotated[str, typer.Argument(help="Endpoint, e.g. opc.tcp://10.0.0.5:4840.")],
    *,
    config: Annotated[
        Path | None,
        typer.Option(help="Edge or platform config whose connector holds the certificates."),
    ] = None,
    connector: Annotated[
        str | None, typer.Option(help="Name of the opcua connector in --config.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Connect with security policy None (no signing, no encryption).")
    ] = False,
    root: Annotated[str, typer.Option(help="Start node (NodeId).")] = "i=85",
    max_depth: Annotated[int, typer.Option(help="How deep to walk.")] = 16,
    asset: Annotated[str, typer.Option(help="ISA-95 path to put the tags under.")] = "",
) -> None:
    """Browse a server's address space and print a connector section with its tags (TOML)."""
    from shopfloor.config.connectors import OpcUaConnectorConfig
    from shopfloor.edge.connectors.opcua_browse import browse, render_toml

    _setup_logging("WARNING", rich=False)
    try:
        if config is not None:
            loaded = load_edge_config(config) if _is_edge_file(config) else load_config(config)
            section = next(
                c
                for c in loaded.connectors
                if c.kind == "opcua" and (connector is None or c.name == connector)
            )
            assert isinstance(section, OpcUaConnectorConfig)
            section = section.model_copy(update={"endpoint": url})
        elif insecure:
            section = OpcUaConnectorConfig(
                name="opcua",
                endpoint=url,
                asset=asset,
                security_policy="None",
                allow_insecure=True,
            )
        else:
            err_console.print(
                "[bold red]error:[/] give --config (and --connector) to connect with the "
                "configured certificates, or --insecure for a server without security"
            )
            raise typer.Exit(2)
        tags = asyncio.run(
            browse(
                url,
                root=root,
                max_depth=max_depth,
                connection=section,
                allow_insecure=section.allow_insecure,
                asset=asset or section.asset,
            )
        )
    except StopIteration as err:
        err_console.print(f"[bold red]error:[/] no opcua connector {connector or ''} in {config}")
        raise typer.Exit(2) from err
    except ConfigError as err:
        raise _fail_config(err) from err
    except ShopfloorError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from err
    print(render_toml(section, tags), end="")


def _is_edge_file(file: Path) -> bool:
    """An edge configuration is the one with an ``[edge]`` table."""
    lines = {line.strip() for line in file.read_text(errors="replace").splitlines()}
    return "[edge]" in lines


@app.command()
def server(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")],
) -> None:
    """Run the platform as configured (with the simulated factory if enabled)."""
    try:
        cfg = load_config(config)
    except ConfigError as err:
        raise _fail_config(err) from err
    _run(cfg, show_status=False)


@app.command()
def ingest(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML configuration file.")],
    *,
    client_id: Annotated[
        str | None,
        typer.Option(help="MQTT client id of this worker (default: see docs/scale-out.md)."),
    ] = None,
) -> None:
    """Run one ingest worker: batches from the MQTT broker into PostgreSQL (docs/scale-out.md)."""
    from shopfloor.server.worker import check_worker_config, run_worker, worker_client_id

    try:
        cfg = load_config(config)
        check_worker_config(cfg)
        worker_id = worker_client_id(cfg, client_id)
    except ConfigError as err:
        raise _fail_config(err) from err
    _setup_logging(cfg.logging.level, rich=False)
    try:
        asyncio.run(run_worker(cfg, client_id=worker_id))
    except ConfigError as err:
        raise _fail_config(err) from err
    except (ShopfloorError, OSError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from err


edge_app = typer.Typer(help="Run an edge agent, or manage its outbox.", invoke_without_command=True)
app.add_typer(edge_app, name="edge")
quarantine_app = typer.Typer(help="Batches the platform refused as invalid.", no_args_is_help=True)
edge_app.add_typer(quarantine_app, name="quarantine")
register_credential_commands(edge_app)  # credential

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML edge configuration.")]


@edge_app.callback()
def edge(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML edge configuration.")
    ] = None,
) -> None:
    """Run an edge agent: read the configured devices and send to the platform."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        err_console.print("[bold red]error:[/] shopfloor edge needs --config FILE")
        raise typer.Exit(2)
    from shopfloor.edge.agent import run_edge

    cfg = _edge_config(config)
    _setup_logging(cfg.logging.level, rich=False)
    try:
        asyncio.run(run_edge(cfg))
    except ShopfloorError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from err


def _edge_config(config: Path) -> EdgeConfig:
    try:
        return load_edge_config(config)
    except ConfigError as err:
        raise _fail_config(err) from err


SeqArgs = Annotated[list[int] | None, typer.Argument(help="Batch sequence numbers (default: all).")]


@quarantine_app.command("list")
def quarantine_list(config: ConfigOption) -> None:
    """List quarantined batches."""
    from shopfloor.edge.buffer.quarantine import list_quarantined

    for batch in list_quarantined(_edge_config(config).outbox_dir):
        print(batch)


@quarantine_app.command("export")
def quarantine_export(
    config: ConfigOption,
    output: Annotated[Path, typer.Option(help="File to write (JSON lines).")],
    seqs: SeqArgs = None,
) -> None:
    """Export quarantined batches to a file."""
    from shopfloor.edge.buffer.quarantine import export_quarantined

    count = export_quarantined(_edge_config(config).outbox_dir, output, seqs or None)
    print(f"exported {count} batch(es) to {output}")


@quarantine_app.command("retry")
def quarantine_retry(config: ConfigOption, seqs: SeqArgs = None) -> None:
    """Put quarantined batches back into the outbox (the edge sends them again)."""
    from shopfloor.edge.buffer.quarantine import retry_quarantined

    print(f"{retry_quarantined(_edge_config(config).outbox_dir, seqs or None)} batch(es) requeued")


@quarantine_app.command("delete")
def quarantine_delete(config: ConfigOption, seqs: SeqArgs = None) -> None:
    """Delete quarantined batches for good."""
    from shopfloor.edge.buffer.quarantine import delete_quarantined

    print(f"{delete_quarantined(_edge_config(config).outbox_dir, seqs or None)} batch(es) deleted")


@app.command()
def demo(
    *,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per wall second while back-filling.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated factory.")] = 1,
    port: Annotated[int, typer.Option(help="HTTP port (0 picks a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Where the historian keeps its file.")] = Path(
        "shopfloor-data"
    ),
    backfill: Annotated[
        str | None,
        typer.Option(help="Start simulated time this far back, e.g. 1d (default 1d if speed > 1)."),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(help="Read the plant directly, or over modbus, opcua or sparkplug."),
    ] = "direct",
    status: Annotated[bool, typer.Option(help="Show the live status line.")] = True,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (e.g. server.pem of certs init)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Private key of --tls-cert (e.g. server.key.pem).")
    ] = None,
) -> None:
    """Run a simulated factory, the platform and the dashboard in one process."""
    if backfill is None:
        backfill = "1d" if speed > 1 and protocol == "direct" else "0s"
    server_section: dict[str, Any] = {"host": host, "port": port, "data_dir": str(data_dir)}
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            err_console.print("[bold red]error:[/] --tls-cert and --tls-key go together")
            raise typer.Exit(2)
        server_section["tls"] = {"cert_file": str(tls_cert), "key_file": str(tls_key)}
    try:
        cfg = validate_data(
            {
                "server": server_section,
                "simulator": {
                    "enabled": True,
                    "seed": seed,
                    "speed": speed,
                    "backfill": backfill,
                    "protocol": protocol,
                },
            },
            ShopfloorConfig,
            source="shopfloor demo",
        ).resolve_paths(Path.cwd())
        if cfg.server.tls is not None:
            cfg.server.tls.ssl_context()  # a bad file is named before anything starts
    except TlsFileError as err:
        option = {"cert_file": "--tls-cert", "key_file": "--tls-key"}.get(err.key, err.key)
        err_console.print(f"[bold red]error:[/] {option}: {err.reason}", highlight=False)
        raise typer.Exit(2) from err
    except ConfigError as err:
        raise _fail_config(err) from err
    _run(cfg, show_status=status and sys.stderr.isatty())


def _run(cfg: ShopfloorConfig, *, show_status: bool) -> None:
    from shopfloor.demo import run_platform

    _setup_logging(cfg.logging.level, rich=show_status)
    try:
        if not show_status:
            asyncio.run(run_platform(cfg))
            return
        with Live(
            Text("starting…"), console=err_console, refresh_per_second=4, transient=True
        ) as live:

            def update(figures: dict[str, Any]) -> None:
                live.update(_status_text(figures))

            asyncio.run(run_platform(cfg, status_line=update))
    except ConfigError as err:
        raise _fail_config(err) from err
    except (ShopfloorError, OSError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from err


def _status_text(f: dict[str, Any]) -> Text:
    text = Text()
    text.append("● ", style="green")
    text.append(f"{f['url']}  ", style="bold")
    text.append(f"{f['points_per_s']:,.0f} points/s  ")
    text.append(f"stored {f['stored']:,}  ")
    text.append(f"pending {f['pending']:,}  ")
    text.append(f"tags {f['tags']}  ")
    if f.get("sim_time_ns") is not None:
        sim = datetime.fromtimestamp(f["sim_time_ns"] / 1e9, tz=UTC)
        mode = "live" if f["caught_up"] else "back-filling"
        text.append(f"sim {sim:%Y-%m-%d %H:%M:%S}Z ({mode})", style="dim")
    text.append("   Ctrl-C to stop", style="dim")
    return text


def main() -> None:
    """Entry point of the ``shopfloor`` console script."""
    app()


__all__ = ["app", "main"]
