"""``shopfloor loadgen``: simulated edges × tags through a real broker. Wiring only.

The work is :mod:`shopfloor.loadgen`'s. Prints what the edges saw (sent, acknowledged,
resent, points/s, latency percentiles); ``--json FILE`` writes the same figures for
scripts (tests/system/test_scale_out.py, bench/scale.py). Exit codes: 0 every batch
acknowledged, 1 some were not (or refused), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

__all__ = ["register_loadgen_command"]

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def register_loadgen_command(app: typer.Typer) -> None:
    """Add ``loadgen`` to ``app``."""
    app.command("loadgen")(loadgen)


def loadgen(
    *,
    broker: Annotated[str, typer.Option(help="Broker as host:port.")] = "127.0.0.1:1883",
    edges: Annotated[int, typer.Option(min=1, max=10_000, help="Simulated edges.")] = 4,
    tags: Annotated[int, typer.Option(min=1, max=100_000, help="Tags per edge.")] = 100,
    samples: Annotated[int, typer.Option(min=1, help="Values per tag in one batch.")] = 10,
    rate: Annotated[
        float, typer.Option(min=0, help="Points per second over all edges; 0: as fast as acked.")
    ] = 0.0,
    duration: Annotated[float, typer.Option(min=0, help="Seconds of producing.")] = 10.0,
    window: Annotated[int, typer.Option(min=1, help="Unanswered batches per edge.")] = 2,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an answer.")] = 10.0,
    drain: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the last answers.")
    ] = 60.0,
    topic_root: Annotated[
        str, typer.Option(help="Topic root, as ingest.mqtt.topic_root.")
    ] = "shopfloor/v1",
    prefix: Annotated[str, typer.Option(help="Edge ids are PREFIX-<n>.")] = "loadgen",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
) -> None:
    """Play N simulated edges × M tags through the broker to the platform's MQTT ingest."""
    from shopfloor.config.edge import UplinkMqttSection
    from shopfloor.loadgen import LoadPlan, run_load

    logging.basicConfig(level="WARNING", stream=sys.stderr)
    host, _, port = broker.rpartition(":")
    try:
        settings = UplinkMqttSection(
            host=host or "127.0.0.1", port=int(port), topic_root=topic_root, session_expiry="1h"
        )
    except (ValueError, ValidationError) as err:
        err_console.print(f"[bold red]error:[/] --broker/--topic-root: {err}")
        raise typer.Exit(2) from err
    plan = LoadPlan(
        edges=edges,
        tags=tags,
        samples=samples,
        rate=rate,
        duration_s=duration,
        window=window,
        timeout_s=timeout,
        drain_s=drain,
        edge_prefix=prefix,
    )
    report = asyncio.run(run_load(plan, settings))
    figures = report.summary()
    table = Table(title=f"loadgen: {edges} edges × {tags} tags through {broker}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name.replace("_", " "), _shown(value))
    out_console.print(table)
    if json_file is not None:
        json_file.write_text(json.dumps(figures, indent=2) + "\n")
    if report.unacknowledged or report.refused:
        raise typer.Exit(1)


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k} {v:,.1f}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"
