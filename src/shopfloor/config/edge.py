"""The edge agent's configuration file: who it is, where it sends, what it reads.

Sizes are written like ``512MiB``, ``1GiB`` or ``64MB`` (a plain number is bytes);
durations like ``500ms``, ``10s``, ``7d``.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shopfloor.config.connectors import ConnectorConfig
from shopfloor.config.models import LoggingSection, parse_duration_s
from shopfloor.config.mqtt_link import MqttLinkSettings
from shopfloor.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EdgeSection(_Section):
    """This edge's identity and files."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="Unique id of this edge; the platform records where points came from.",
    )
    data_dir: Path = Field(
        Path("edge-data"), description="Folder for the edge's state; relative to the file."
    )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size_bytes(text: str | int) -> int:
    """Parse ``512MiB``, ``1GiB``, ``64MB`` or a plain number of bytes.

    Raises:
        ValueError: not a size; the message shows the accepted forms.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size like 64MiB, 1GiB or 500MB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


_TOKEN = re.compile(r"^[\x21-\x7e]{1,512}$")
"""What may follow ``Bearer`` in a header: one word of visible ASCII."""


def _duration(value: str) -> str:
    parse_duration_s(value)
    return value


class UplinkMqttSection(MqttLinkSettings):
    """The broker an edge sends through when ``uplink.transport = "mqtt"``."""

    session_expiry: str = Field(
        "1d",
        description="How long the broker keeps this edge's session while it is away, so "
        "the platform's answers to batches sent before an outage still arrive.",
    )
    max_message: str = Field(
        "16MiB",
        description="Largest compressed batch published; a larger one is refused locally "
        "like an HTTP 413 (and quarantined). Keep it at or below the broker's "
        "`message_size_limit` and the platform's ingest.max_body_bytes.",
    )

    @field_validator("max_message")
    @classmethod
    def _size(cls, value: str) -> str:
        if parse_size_bytes(value) <= 0:
            raise ValueError("must be more than 0 bytes")
        return value

    @property
    def max_message_bytes(self) -> int:
        """``max_message`` in bytes."""
        return parse_size_bytes(self.max_message)

    def mqtt_client_id(self, edge_id: str) -> str:
        """The client id (names the persistent session)."""
        return self.client_id or f"shopfloor-edge-{edge_id}"


class UplinkSection(_Section):
    """Where the edge sends its points and how it drains its outbox."""

    transport: Literal["http", "mqtt"] = Field(
        "http",
        description="`http`: POST to the platform's API at `url`. `mqtt`: publish through "
        "the broker in `[uplink.mqtt]` (batches, tags and status; no HTTP needed).",
    )
    url: str = Field("http://127.0.0.1:8000", description="Base URL of the platform's HTTP API.")
    mqtt: UplinkMqttSection = Field(
        default_factory=UplinkMqttSection,
        description='The broker, with `transport = "mqtt"`.',
    )
    timeout: str = Field(
        "10s",
        description="Per-request timeout; a link that swallows packets is noticed after it. "
        "With MQTT: how long a published batch waits for the platform's answer on its "
        "acks topic before it is sent again.",
    )
    compression: Literal["zstd", "gzip", "none"] = Field(
        "zstd", description="Compression of batches on the wire (Content-Encoding)."
    )
    window: int = Field(
        8, ge=1, le=64, description="Batch requests in flight at once (one while unreachable)."
    )
    catch_up_after: str = Field(
        "2s",
        description="Batches older than this are backlog: sent after the live ones, oldest "
        "first, flagged historical once newer values went out.",
    )
    coalesce_points: int = Field(
        20_000,
        ge=0,
        description="Join consecutive backlog batches into requests of up to this many "
        "points while draining (0: one batch per request). Each batch keeps its own seq, "
        "so the platform still stores every one exactly once.",
    )
    max_refusals: int = Field(
        3,
        ge=1,
        description="A batch the platform refuses as invalid (400/413/415/422) this many "
        "times moves to quarantine.",
    )
    retry_min: str = Field(
        "0.5s",
        description="First wait after a failed request; it doubles (jittered) up to "
        "`retry_max` while the platform stays unreachable (a larger value is capped at "
        "`retry_max`).",
    )
    retry_max: str = Field(
        "30s", description="Longest wait between attempts while the platform is unreachable."
    )
    token_env: str | None = Field(
        None,
        description="Name of the environment variable that holds this edge's token (from "
        "`shopfloor edge credential`), sent as `Authorization: Bearer`; never the token "
        "itself in the file.",
    )
    token_file: Path | None = Field(
        None,
        description="File whose first line is this edge's token (mode 0600, or a container "
        "secret); relative to the configuration file.",
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the platform's certificate (the "
        "`ca.pem` of `shopfloor certs init`), to trust a private CA for an https:// `url`; "
        "then only it is trusted. Default: the system's trusted CAs. The platform's "
        "certificate and host name are always verified. Relative to the configuration file.",
    )
    cert_file: Path | None = Field(
        None,
        description="This edge's TLS client certificate (PEM, from `shopfloor certs "
        "issue-client`), for a platform with `[server.tls] client_ca`; with `key_file`. "
        "Relative to the configuration file.",
    )
    key_file: Path | None = Field(
        None,
        description="Private key (PEM, unencrypted, mode 0600) of `cert_file`; relative to "
        "the configuration file.",
    )

    @field_validator("timeout", "catch_up_after", "retry_min", "retry_max")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    # Field validators run only on keys written in the file, in declaration order, so
    # these name the second of two conflicting keys (and its line).
    @field_validator("token_env", "token_file", "cert_file", "key_file")
    @classmethod
    def _http_only(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("transport") == "mqtt":
            raise ValueError(
                f"{info.field_name} is for the HTTP transport; over MQTT the edge logs in "
                "with [uplink.mqtt] username and password_env or password_file, or with "
                "[uplink.mqtt.tls] cert_file and key_file"
            )
        return value

    @field_validator("token_file")
    @classmethod
    def _one_token_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("token_env") is not None:
            raise ValueError("give token_env or token_file, not both")
        return value

    @field_validator("key_file")
    @classmethod
    def _key_needs_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("cert_file") is None:
            raise ValueError("cert_file and key_file go together: give both or neither")
        return value

    @model_validator(mode="after")
    def _client_key_given(self) -> UplinkSection:
        if self.cert_file is not None and self.key_file is None:
            raise ValueError("cert_file needs key_file (the certificate's private key)")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("retry_min", "retry_max")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration_s(value) <= 0:
            raise ValueError(f"must be above zero, got {value!r}")
        return value

    @property
    def target(self) -> str:
        """Where batches go, for log lines: the URL, or ``mqtt://host:port``."""
        if self.transport == "mqtt":
            scheme = "mqtts" if self.mqtt.tls is not None else "mqtt"
            return f"{scheme}://{self.mqtt.where}"
        return self.url

    def token(self) -> str | None:
        """Read this edge's token from its environment variable or file (None: no token).

        Raises:
            ConfigError: the variable is unset or empty, the file cannot be read or is
                empty, or the token is not one line of visible characters.
        """
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            where = f"environment variable {self.token_env}"
            if not value:
                raise ConfigError(f"uplink.token_env: {where} is not set or empty")
        elif self.token_file is not None:
            where = f"token_file {self.token_file}"
            try:
                text = self.token_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
                raise ConfigError(f"uplink.token_file: cannot read {where}: {reason}") from err
            value = text.splitlines()[0].strip() if text.strip() else ""
            if not value:
                raise ConfigError(f"uplink.token_file: {where} is empty")
        else:
            return None
        if not _TOKEN.match(value):
            # never echo it: it is a secret, and a wrong one is still close to a right one
            raise ConfigError(
                f"uplink: the token in {where} is not one word of visible ASCII characters"
            )
        return value

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context trusting ``ca_file`` only and presenting ``cert_file`` (None:
        the system's CAs, no client certificate); reads the files: call it at start-up or
        off the event loop. Verification of the platform is never turned off.

        Raises:
            ConfigError: a file cannot be loaded, naming its key.
        """
        if self.ca_file is None and self.cert_file is None:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"uplink.ca_file: cannot load {self.ca_file}: {_why(err)}") from err
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            for name, path in (("cert_file", self.cert_file), ("key_file", self.key_file)):
                try:
                    path.read_bytes()
                except OSError as err:
                    raise ConfigError(f"uplink.{name}: cannot read {path}: {_why(err)}") from err
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except ssl.SSLError as err:
                name = "key_file" if "KEY_VALUES_MISMATCH" in str(err) else "cert_file"
                raise ConfigError(
                    f"uplink.{name}: cannot load {self.cert_file} with key {self.key_file}: "
                    f"{_why(err)}"
                ) from err
        return context

    def relative_to(self, base: Path) -> UplinkSection:
        """A copy whose relative files (token, CA, the MQTT broker's) are made absolute."""
        update: dict[str, Any] = {"mqtt": self.mqtt.relative_to(base)}
        for name in ("token_file", "ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if isinstance(value, Path) and not value.is_absolute():
                update[name] = base / value
        return self.model_copy(update=update)

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """The token, CA and client certificate files that cannot be used, as (key path,
        message)."""
        problems: list[tuple[tuple[str, ...], str]] = []
        checks = (
            ("token_file", self.token_file, self.token),
            ("ca_file", self.ca_file or self.cert_file, self.ssl_context),
        )
        for name, given, check in checks:
            if given is None:
                continue
            try:
                check()
            except ConfigError as err:
                where, message = str(err).split(": ", 1)
                loc = tuple(where.split("."))
                problems.append((loc if len(loc) > 1 else ("uplink", name), message))
        if self.mqtt.password_file is not None:
            try:
                self.mqtt.password()
            except ConfigError as err:
                problems.append((("uplink", "mqtt", "password_file"), str(err).split(": ", 1)[1]))
        return problems


def _why(err: OSError | ssl.SSLError) -> str:
    """The reason of a file or TLS error, without Python's errno prefix."""
    if isinstance(err, OSError) and not isinstance(err, ssl.SSLError) and err.strerror:
        return err.strerror
    return str(err)


class BufferSection(_Section):
    """The outbox: where every batch is kept until the platform committed it."""

    store: Literal["segments", "sqlite"] = Field(
        "segments",
        description="Storage engine: an append-only segment log (default, the faster "
        "one measured by bench/outbox.py) or SQLite in WAL mode.",
    )
    dir: Path | None = Field(
        None, description="Folder of the outbox; default: `outbox` in edge.data_dir."
    )
    durability: Literal["fsync", "none"] = Field(
        "fsync",
        description="fsync: a batch counts as kept once it is on disk (survives power "
        "loss). none: once it is in the page cache (survives a crash of the process only).",
    )
    max_size: str = Field(
        "1GiB", description="Most disk space for waiting batches, e.g. 512MiB or 4GiB."
    )
    max_age: str | None = Field(
        "6d",
        description="Batches older than this are dropped and counted; empty: no limit. "
        "Keep it below the platform's ingest-ledger retention (7 days by default).",
    )
    full_policy: Literal["drop-oldest", "stop-reading"] = Field(
        "drop-oldest",
        description="When full (max_size or the disk): drop whole oldest batches and count "
        "them, or stop reading the devices until there is room again.",
    )
    segment_size: str = Field("8MiB", description="Size of one segment file of the segment log.")

    @field_validator("max_size", "segment_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if parse_size_bytes(value) <= 0:
            raise ValueError("must be more than 0 bytes")
        return value

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _duration(value)

    @property
    def max_bytes(self) -> int:
        """``max_size`` in bytes."""
        return parse_size_bytes(self.max_size)

    @property
    def segment_bytes(self) -> int:
        """``segment_size`` in bytes."""
        return parse_size_bytes(self.segment_size)

    @property
    def max_age_s(self) -> float | None:
        """``max_age`` in seconds, None for no limit."""
        return None if self.max_age is None else parse_duration_s(self.max_age)


class HealthSection(_Section):
    """The edge's own health endpoints and its status reports to the platform."""

    enabled: bool = Field(True, description="Serve /healthz and /metrics on this edge.")
    host: str = Field(
        "127.0.0.1", description="Address the health endpoints bind to (0.0.0.0: all)."
    )
    port: int = Field(
        9180, ge=0, le=65535, description="Port of /healthz and /metrics (0: pick a free one)."
    )
    status_interval: str = Field(
        "10s", description="How often the edge reports its status to the platform."
    )

    @field_validator("status_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return _duration(value)


class EdgeConfig(_Section):
    """The whole edge configuration file."""

    edge: EdgeSection = Field(description="Identity.")
    uplink: UplinkSection = Field(default_factory=UplinkSection, description="Platform.")
    buffer: BufferSection = Field(default_factory=BufferSection, description="The durable outbox.")
    health: HealthSection = Field(
        default_factory=HealthSection, description="Health endpoints and status reports."
    )
    connectors: list[ConnectorConfig] = Field(
        default_factory=list, description="What to read, one section per device or broker."
    )
    logging: LoggingSection = Field(default_factory=LoggingSection, description="Logging.")

    @model_validator(mode="after")
    def _unique_names(self) -> EdgeConfig:
        names = [c.name for c in self.connectors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"connector names must be unique: {', '.join(duplicates)}")
        return self

    def resolve_paths(self, base: Path) -> EdgeConfig:
        """Return a copy whose relative paths are made absolute against ``base``.

        ``buffer.dir`` defaults to ``outbox`` in ``edge.data_dir``; a relative one is
        relative to the file too, and so are the uplink's token and CA files and
        ``uplink.mqtt``'s certificates and password file.
        """
        data_dir = self.edge.data_dir
        if not data_dir.is_absolute():
            data_dir = (base / data_dir).resolve()
        outbox = self.buffer.dir
        if outbox is None:
            outbox = data_dir / "outbox"
        elif not outbox.is_absolute():
            outbox = (base / outbox).resolve()
        return self.model_copy(
            update={
                "edge": self.edge.model_copy(update={"data_dir": data_dir}),
                "buffer": self.buffer.model_copy(update={"dir": outbox}),
                "uplink": self.uplink.relative_to(base),
            }
        )

    def file_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Settings naming files that cannot be used, as (key path, message); call after
        :meth:`resolve_paths` (``load_edge_config`` reports them with their lines)."""
        return self.uplink.file_problems()

    @property
    def outbox_dir(self) -> Path:
        """The outbox folder (``buffer.dir``, or ``outbox`` in ``edge.data_dir``)."""
        return self.buffer.dir if self.buffer.dir is not None else self.edge.data_dir / "outbox"
