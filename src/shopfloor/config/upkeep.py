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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopfloor.config.durations import parse_duration_s

__all__ = ["CompactionSection", "RollupsSection"]


def _duration(value: str, *, low_s: float, high_s: float) -> str:
    seconds = parse_duration_s(value)
    if not low_s <= seconds <= high_s:
        raise ValueError(f"must be between {low_s:g}s and {high_s / 86400:g}d, got {value!r}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompactionSection(_Section):
    """Rewriting closed time ranges sorted by tag and time: most of the disk saving."""

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

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return _duration(value, low_s=1, high_s=86400)

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        return _duration(value, low_s=0, high_s=7 * 86400)

    @property
    def interval_s(self) -> float | None:
        """Seconds between passes; None when compaction is off."""
        return parse_duration_s(self.interval) if self.enabled else None

    @property
    def grace_s(self) -> float:
        """``grace`` in seconds."""
        return parse_duration_s(self.grace)


class RollupsSection(_Section):
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

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return _duration(value, low_s=1, high_s=86400)

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: str) -> str:
        return _duration(value, low_s=0, high_s=86400)

    @property
    def interval_s(self) -> float:
        """``interval`` in seconds."""
        return parse_duration_s(self.interval)

    @property
    def grace_s(self) -> float:
        """``grace`` in seconds."""
        return parse_duration_s(self.grace)
