"""The configuration file's schema.

Every setting has a description; the README's configuration reference lists them all and
a test fails when one is missing there. Unknown keys are errors (``extra="forbid"``), so
a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.connectors import ConnectorConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.config.ingest_mqtt import MqttIngestSection

__all__ = ["ShopfloorConfig", "parse_duration_s"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSection(_Section):
    """Where the platform listens and keeps its files."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        Path("shopfloor-data"),
        description="Folder for the historian database and other state; relative paths are "
        "relative to the configuration file.",
    )


class DuckDBHistorianSection(_Section):
    """The embedded historian: one DuckDB file, no server to install."""

    kind: Literal["duckdb"] = Field("duckdb", description="Historian backend.")
    path: Path = Field(
        Path("history.duckdb"),
        description="Database file; relative paths are relative to server.data_dir.",
    )
    flush_interval_s: float = Field(
        1.0, gt=0, le=60, description="Longest time an accepted point waits before commit."
    )
    flush_rows: int = Field(
        100_000, ge=1, description="Commit as soon as this many points are waiting."
    )
    memory_limit: str = Field("512MB", description="DuckDB memory limit, e.g. 512MB or 2GB.")
    max_pending_rows: int = Field(
        2_000_000,
        ge=1000,
        description="Most points accepted but not yet committed; ingest waits beyond it.",
    )
    ack_delay_s: float = Field(
        0.0,
        ge=0,
        le=5,
        description="Longest an acknowledged batch waits for other batches to share its "
        "commit; 0 commits as soon as the writer is free.",
    )
    ledger_retention_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="How long the ingest ledger remembers delivered batches; keep every "
        "edge's outbox maximum age below it.",
    )


HistorianSection = Annotated[DuckDBHistorianSection, Field(discriminator="kind")]


class IngestSection(_Section):
    """Limits on what edges may send."""

    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest accepted ingest request body in bytes."
    )
    max_future_s: float = Field(
        300.0,
        ge=0,
        description="Points further ahead are stored with quality Uncertain and counted per "
        "edge; times before 2000 or from 2100 on refuse the batch.",
    )
    max_pending_points: int = Field(
        1_000_000,
        ge=1,
        description="Above this many points waiting for the historian, edges get 429 with "
        "Retry-After; keep it below historian.max_pending_rows.",
    )
    retry_after_s: float = Field(1.0, gt=0, description="Seconds a refused edge is told to wait.")
    mqtt: MqttIngestSection = Field(
        default_factory=MqttIngestSection,
        description="Edges that send through an MQTT broker instead of HTTP.",
    )
    max_edges: int = Field(
        1000,
        ge=1,
        description="Edges whose latest status is kept in memory; beyond it the longest "
        "silent is forgotten.",
    )


class SimulatorSection(_Section):
    """A simulated factory running inside the server process (demo and trials)."""

    enabled: bool = Field(False, description="Run the simulated factory in-process.")
    seed: int = Field(1, description="Random seed; the same seed gives the same plant.")
    speed: float = Field(
        1.0,
        gt=0,
        le=10_000,
        description="Simulated seconds per wall second while back-filling history.",
    )
    backfill: str = Field(
        "0s",
        description="How far in the past the simulated clock starts (e.g. 1d); it runs at "
        "`speed` until it reaches now, then in real time.",
    )
    period: str = Field("1s", description="Sample period of every simulated tag.")
    protocol: Literal["direct", "modbus", "opcua", "sparkplug"] = Field(
        "direct",
        description="How the platform reads the simulated factory: `direct` in-process, or "
        "through a real protocol stack (the plant served over Modbus TCP, OPC UA or "
        "Sparkplug B on 127.0.0.1, read by the matching connector). Protocols run in "
        "real time: no back-fill.",
    )

    @field_validator("backfill", "period")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @model_validator(mode="after")
    def _protocols_run_in_real_time(self) -> SimulatorSection:
        if self.protocol != "direct" and parse_duration_s(self.backfill) > 0:
            raise ValueError(
                f"protocol {self.protocol!r} serves the plant in real time: set backfill = '0s'"
            )
        return self


class LoggingSection(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written to the log."
    )


class ShopfloorConfig(_Section):
    """The whole configuration file."""

    server: ServerSection = Field(default_factory=ServerSection, description="HTTP server.")
    historian: HistorianSection = Field(
        default_factory=DuckDBHistorianSection, description="Time-series storage."
    )
    ingest: IngestSection = Field(default_factory=IngestSection, description="Ingest limits.")
    simulator: SimulatorSection = Field(
        default_factory=SimulatorSection, description="In-process simulated factory."
    )
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Logging.")
    connectors: list[ConnectorConfig] = Field(
        default_factory=list,
        description="Devices read by the server process itself (a single-box install), "
        "with the same sections as an edge's `[[connectors]]`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_historian_kind(cls, data: object) -> object:
        # The backend is chosen by `kind`; a file that leaves it out means the default.
        if isinstance(data, dict) and isinstance(data.get("historian"), dict):
            data["historian"] = {"kind": "duckdb", **data["historian"]}
        return data

    def resolve_paths(self, base: Path) -> ShopfloorConfig:
        """Return a copy whose relative paths are made absolute against ``base``."""
        data_dir = self.server.data_dir
        if not data_dir.is_absolute():
            data_dir = (base / data_dir).resolve()
        hist_path = self.historian.path
        if not hist_path.is_absolute():
            hist_path = data_dir / hist_path
        return self.model_copy(
            update={
                "server": self.server.model_copy(update={"data_dir": data_dir}),
                "historian": self.historian.model_copy(update={"path": hist_path}),
                "ingest": self.ingest.model_copy(
                    update={"mqtt": self.ingest.mqtt.relative_to(base)}
                ),
            }
        )
