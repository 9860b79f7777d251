"""The configuration file's schema.

Every setting has a description; the README's configuration reference lists them all and
a test fails when one is missing there. Unknown keys are errors (``extra="forbid"``), so
a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shopfloor.config.alarms import AlarmsSection
from shopfloor.config.analytics import AnalyticsSection
from shopfloor.config.assets import AssetsSection
from shopfloor.config.connectors import ConnectorConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.config.ingest_mqtt import MqttIngestSection
from shopfloor.config.notify import NotifySection
from shopfloor.config.retention import RetentionSection
from shopfloor.config.secrets import read_secret
from shopfloor.config.security import SecuritySection
from shopfloor.config.sparkplug_node import SparkplugNodeSection
from shopfloor.config.tls import ServerTlsSection
from shopfloor.config.uns import UnsSection
from shopfloor.config.upkeep import CompactionSection, RollupsSection

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
    tls: ServerTlsSection | None = Field(
        None,
        description="Serve HTTPS: the certificate, its key and optionally the CA of edges' "
        "client certificates (see the `server.tls` keys).",
    )
    max_request_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="The largest request body of any route but those edges write to (which "
        "take `ingest.max_body_bytes`); larger ones are answered 413 without being read.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_tls_keys(cls, data: object) -> object:
        if isinstance(data, dict) and {"tls_cert_file", "tls_key_file"} & data.keys():
            raise ValueError(
                "tls_cert_file and tls_key_file moved to a [server.tls] table as cert_file "
                "and key_file"
            )
        return data

    def relative_to(self, base: Path) -> ServerSection:
        """A copy whose relative paths are made absolute against ``base``."""
        update: dict[str, Any] = {}
        if not self.data_dir.is_absolute():
            update["data_dir"] = (base / self.data_dir).resolve()
        if self.tls is not None:
            update["tls"] = self.tls.relative_to(base)
        return self.model_copy(update=update) if update else self

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """The TLS files that cannot be used, as (key path, message)."""
        return [] if self.tls is None else self.tls.file_problems()


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None if it can."""
    try:
        with path.open("rb"):
            return None
    except IsADirectoryError:
        return "a folder, not a file"
    except OSError as err:
        return err.strerror or str(err)


class _HistorianWriterSection(_Section):
    """Write batching and the ingest ledger: the same knobs for every backend."""

    flush_interval_s: float = Field(
        1.0, gt=0, le=60, description="Longest time an accepted point waits before commit."
    )
    flush_rows: int = Field(
        100_000, ge=1, description="Commit as soon as this many points are waiting."
    )
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
    retention: RetentionSection = Field(
        default_factory=RetentionSection,
        description="How long history is kept and how much disk it may use.",
    )
    compaction: CompactionSection = Field(
        default_factory=CompactionSection,
        description="Rewriting closed time ranges sorted by tag and time.",
    )
    rollups: RollupsSection = Field(
        default_factory=RollupsSection,
        description="1-minute and 1-hour rollups for long-range queries.",
    )


class DuckDBHistorianSection(_HistorianWriterSection):
    """The embedded historian: one DuckDB file, no server to install."""

    kind: Literal["duckdb"] = Field("duckdb", description="Historian backend.")
    path: Path = Field(
        Path("history.duckdb"),
        description="Database file; relative paths are relative to server.data_dir.",
    )
    memory_limit: str = Field("512MB", description="DuckDB memory limit, e.g. 512MB or 2GB.")

    def resolved(self, *, data_dir: Path, base: Path) -> DuckDBHistorianSection:
        """A copy whose database file is made absolute against ``data_dir``."""
        del base  # the file lives with the data, not with the configuration
        if self.path.is_absolute():
            return self
        return self.model_copy(update={"path": data_dir / self.path})


class PostgresHistorianSection(_HistorianWriterSection):
    """The plant's own PostgreSQL server (TimescaleDB when it is installed).

    The password never sits in the file: it comes from an environment variable
    (``password_env``), a file (``password_file``, e.g. a container secret), or libpq's own
    ``~/.pgpass`` / ``PGPASSWORD`` when neither is given.
    """

    kind: Literal["postgres"] = Field(description="Historian backend.")
    dsn: str | None = Field(
        None,
        description="libpq connection string or URI (`host=db dbname=shopfloor user=shopfloor` "
        "or `postgresql://shopfloor@db/shopfloor`), without a password; instead of "
        "host, port, dbname and user.",
    )
    host: str | None = Field(
        None,
        description="Database server host name, address or socket folder; default: libpq's "
        "(PGHOST, else the local socket).",
    )
    port: int = Field(5432, ge=1, le=65535, description="TCP port of the database server.")
    dbname: str = Field("shopfloor", min_length=1, description="Database name.")
    user: str = Field("shopfloor", min_length=1, description="Database user (role).")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the password."
    )
    password_file: Path | None = Field(
        None,
        description="File whose first line is the password (e.g. a container secret); "
        "relative to the configuration file.",
    )
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer",
        description="TLS to the database server, as libpq's sslmode; `verify-full` checks "
        "the server certificate and host name.",
    )
    sslrootcert: Path | None = Field(
        None,
        description="PEM file of the CA that signed the server's certificate (for `verify-ca` "
        "and `verify-full`); relative to the configuration file.",
    )
    schema_name: str = Field(
        "shopfloor",
        min_length=1,
        max_length=63,
        description="Schema holding the historian's tables (created if missing); one server "
        "writes to one schema.",
    )
    read_connections: int = Field(
        2, ge=1, le=64, description="Most database connections that queries use at once."
    )
    ledger_max_gaps: int = Field(
        10_000,
        ge=1,
        description="Most open gaps in one edge's batch sequence the ingest ledger keeps in "
        "memory.",
    )
    ledger_prune_interval_s: float = Field(
        600.0, gt=0, description="How often ingest-ledger rows past retention are deleted."
    )
    shared: bool = Field(
        False,
        description="Several processes write this schema: `shopfloor ingest` workers and "
        "the `shopfloor server` processes beside them (docs/scale-out.md). Commits are "
        "serialised across processes and duplicates are decided by the ingest ledger table; "
        "set it in every process's file (an unshared historian refuses to start beside "
        "shared ones, and the other way round).",
    )
    timescale: Literal["auto", "always", "never"] = Field(
        "never",
        description="For a new schema: a TimescaleDB hypertable when the extension can be "
        "loaded (`auto`), always (fail without it) or never (the compressed blocks layout "
        "with rollups, the tested one). The TimescaleDB layout is untested: no TimescaleDB "
        "where the tests run. An existing schema keeps its layout.",
    )

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            params = conninfo_to_dict(value)
        except psycopg.ProgrammingError as err:
            raise ValueError(f"not a PostgreSQL connection string: {err}") from None
        if "password" in params:
            raise ValueError(
                "the dsn holds a password: remove it and use password_env or password_file"
            )
        return value

    # Field validators run only on keys written in the file, in declaration order, so
    # these name the second of two conflicting keys (and its line) rather than the table.
    @field_validator("host", "port", "dbname", "user")
    @classmethod
    def _not_with_dsn(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("dsn") is not None:
            raise ValueError(f"give dsn or {info.field_name}, not both")
        return value

    @field_validator("password_file")
    @classmethod
    def _one_password_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("password_env") is not None:
            raise ValueError("give password_env or password_file, not both")
        return value

    def resolved(self, *, data_dir: Path, base: Path) -> PostgresHistorianSection:
        """A copy whose password and CA files are made absolute against ``base`` (the
        configuration file's folder)."""
        del data_dir  # nothing of a database server lives in the data folder
        update = {
            name: base / value
            for name in ("password_file", "sslrootcert")
            if isinstance(value := getattr(self, name), Path) and not value.is_absolute()
        }
        return self.model_copy(update=update) if update else self

    def password(self) -> str | None:
        """Read the password from its environment variable or file (None: libpq's own).

        Raises:
            ConfigError: the variable is unset or the file cannot be read.
        """
        return read_secret(env=self.password_env, file=self.password_file, what="historian")

    def connection_string(self) -> str:
        """The libpq connection string, password included; keep it out of logs.

        Raises:
            ConfigError: the password's variable is unset or its file cannot be read.
        """
        params: dict[str, Any] = {}
        if self.dsn is None:
            params.update(port=self.port, dbname=self.dbname, user=self.user)
            if self.host is not None:
                params["host"] = self.host
        # settings written as keys win over the same ones inside the dsn
        if "sslmode" in self.model_fields_set or self.dsn is None:
            params["sslmode"] = self.sslmode
        if self.sslrootcert is not None:
            params["sslrootcert"] = str(self.sslrootcert)
        password = self.password()
        if password is not None:
            params["password"] = password
        return make_conninfo(self.dsn or "", **params)

    @property
    def timescale_wanted(self) -> bool | None:
        """``timescale`` as the historian takes it: None for auto."""
        return {"auto": None, "always": True, "never": False}[self.timescale]


HistorianSection = Annotated[
    DuckDBHistorianSection | PostgresHistorianSection, Field(discriminator="kind")
]


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
    edge_credentials: Path | None = Field(
        None,
        description="File of per-edge token hashes (`shopfloor edge credential`); when set, "
        "ingest, tag and status requests need `Authorization: Bearer <token>` of the edge "
        "they name. Empty: no credentials required. Relative to the configuration file; "
        "re-read when it changes.",
    )

    @field_validator("edge_credentials", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def relative_to(self, base: Path) -> IngestSection:
        """A copy whose relative paths (credentials, MQTT files) are made absolute."""
        update: dict[str, Any] = {"mqtt": self.mqtt.relative_to(base)}
        if self.edge_credentials is not None and not self.edge_credentials.is_absolute():
            update["edge_credentials"] = base / self.edge_credentials
        return self.model_copy(update=update)

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """The credentials file, if it cannot be read, as (key path, message)."""
        if self.edge_credentials is None:
            return []
        reason = _unreadable(self.edge_credentials)
        if reason is None:
            return []
        hint = " (create it with `shopfloor edge credential EDGE_ID --file FILE`)"
        missing = not self.edge_credentials.exists()
        return [
            (
                ("ingest", "edge_credentials"),
                f"cannot read {self.edge_credentials}: {reason}{hint if missing else ''}",
            )
        ]


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
    alarms: AlarmsSection = Field(
        default_factory=AlarmsSection, description="Alarm rules and their journal."
    )
    notify: NotifySection = Field(
        default_factory=NotifySection, description="Alarm notifications: channels and routes."
    )
    sparkplug_node: SparkplugNodeSection = Field(
        default_factory=SparkplugNodeSection,
        description="The platform as a Sparkplug B edge node.",
    )
    uns: UnsSection = Field(
        default_factory=UnsSection, description="Publishing to a Unified Namespace on MQTT."
    )
    assets: AssetsSection = Field(
        default_factory=AssetsSection, description="The plant's ISA-95 asset model."
    )
    analytics: AnalyticsSection = Field(
        default_factory=AnalyticsSection,
        description="Analyses of stored history: shift calendar, stop reasons, the stored OEE "
        "job, control charts (SPC).",
    )
    simulator: SimulatorSection = Field(
        default_factory=SimulatorSection, description="In-process simulated factory."
    )
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Logging.")
    security: SecuritySection = Field(
        default_factory=SecuritySection,
        description="Users, sessions, API tokens and the secret key (docs/auth.md).",
    )
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

    @model_validator(mode="after")
    def _report_channels(self) -> ShopfloorConfig:
        names = {c.name for c in self.notify.channels}
        for i, report in enumerate(self.analytics.reports):
            for name in report.channels:
                if name not in names:
                    known = ", ".join(sorted(names)) or "none configured"
                    raise ValueError(
                        f"analytics.reports[{i}].channels: no [[notify.channels]] named "
                        f"{name!r} ({known})"
                    )
        return self

    @model_validator(mode="after")
    def _partitioned_alarms(self) -> ShopfloorConfig:
        section = self.historian
        if self.alarms.partitions and not (
            isinstance(section, PostgresHistorianSection) and section.shared
        ):
            raise ValueError(
                "alarms.partitions: alarms evaluated by ingest workers keep their journal in "
                'the shared historian: set historian.kind = "postgres" and historian.shared = '
                "true, or alarms.partitions = 0"
            )
        if self.analytics.partitions and not (
            isinstance(section, PostgresHistorianSection) and section.shared
        ):
            raise ValueError(
                "analytics.partitions: the API servers share the analytics through leases "
                'in the shared historian: set historian.kind = "postgres" and '
                "historian.shared = true, or analytics.partitions = 0"
            )
        return self

    def resolve_paths(self, base: Path) -> ShopfloorConfig:
        """Return a copy whose relative paths are made absolute against ``base``."""
        server = self.server.relative_to(base)
        return self.model_copy(
            update={
                "server": server,
                "historian": self.historian.resolved(data_dir=server.data_dir, base=base),
                "ingest": self.ingest.relative_to(base),
                "assets": self.assets.relative_to(base),
                "notify": self.notify.relative_to(base),
                "security": self.security.relative_to(base),
            }
        )

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Settings naming files that cannot be used, as (key path, message); call after
        :meth:`resolve_paths` (``load_config`` reports them with their lines)."""
        return [*self.server.file_problems(), *self.ingest.file_problems()]
