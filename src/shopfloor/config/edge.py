"""The edge agent's configuration file: who it is, where it sends, what it reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.connectors import ConnectorConfig
from shopfloor.config.models import LoggingSection, parse_duration_s


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


class UplinkSection(_Section):
    """Where the edge sends its points."""

    url: str = Field("http://127.0.0.1:8000", description="Base URL of the platform's HTTP API.")
    timeout: str = Field("10s", description="Per-request timeout.")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class EdgeConfig(_Section):
    """The whole edge configuration file."""

    edge: EdgeSection = Field(description="Identity.")
    uplink: UplinkSection = Field(default_factory=UplinkSection, description="Platform.")
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
        """Return a copy whose relative paths are made absolute against ``base``."""
        data_dir = self.edge.data_dir
        if not data_dir.is_absolute():
            data_dir = (base / data_dir).resolve()
        return self.model_copy(update={"edge": self.edge.model_copy(update={"data_dir": data_dir})})
