"""How the historian tidies itself up: ``[historian.compaction]`` and ``[historian.rollups]``.

Example::

    [historian.compaction]
    interval = "10m"     # how often closed days (DuckDB) or hours (PostgreSQL) are compacted
    grace = "10m"        # a day or hour is closed this long after it ended

    [historian.rollups]
    enabled = true       # answer queries from 1-minute and 1-hour rollups where exact
    interval = "1m"      # DuckDB: how often they are refreshed
    grace = "2m"         # DuckDB: a minute is rolled up this long after it ended

Durations are kept as written and parsed by the properties, so an error quotes the
user's own words with the key and line.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopfloor.config.durations import parse_duration_s

__all__ = ["CompactionSection", "RollupsSection"]


class _Periodic(BaseModel):
    """A job that runs every ``interval`` on ranges closed ``grace`` ago."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    longest_grace_s: ClassVar[float] = 86400.0

    interval: str
    grace: str

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not 1 <= parse_duration_s(value) <= 86400:
            raise ValueError(f"must be between 1s and 1d, got {value!r}")
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        if not 0 <= parse_duration_s(value) <= cls.longest_grace_s:
            raise ValueError(
                f"must be between 0s and {cls.longest_grace_s / 86400:g}d, got {value!r}"
            )
        return value

    @property
    def grace_s(self) -> float:
        """``grace`` in seconds."""
        return parse_duration_s(self.grace)


class CompactionSection(_Periodic):
    """Rewriting closed time ranges sorted by tag and time: most of the disk saving."""

    longest_grace_s: ClassVar[float] = 7 * 86400.0

    enabled: bool = Field(
        True,
        description="Compact closed ranges by itself; off, nothing is compacted (the "
        "history takes about 1.2× (DuckDB) to 3× (PostgreSQL) the disk).",
    )
    interval: str = Field(
        "10m", description="How often closed days (DuckDB) or hours (PostgreSQL) are looked for."
    )
    grace: str = Field(
        "10m",
        description="A day or hour is closed this long after it ended; points arriving "
        "later still land, in the uncompacted part.",
    )

    @property
    def interval_s(self) -> float | None:
        """Seconds between passes; None when compaction is off."""
        return parse_duration_s(self.interval) if self.enabled else None


class RollupsSection(_Periodic):
    """1-minute and 1-hour rollups that answer long-range queries exactly."""

    enabled: bool = Field(
        True,
        description="Answer queries from rollups where they are exact and keep them "
        "refreshed; off, every query reads raw points (turning them on again catches up).",
    )
    interval: str = Field("1m", description="DuckDB: how often rollups are refreshed.")
    grace: str = Field(
        "2m",
        description="DuckDB: a minute is rolled up this long after it ended; a point "
        "arriving later refreshes its hour at the next pass.",
    )

    @property
    def interval_s(self) -> float:
        """``interval`` in seconds."""
        return parse_duration_s(self.interval)
