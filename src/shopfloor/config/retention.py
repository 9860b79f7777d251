"""The historian's retention and disk budget settings (``[historian.retention]``).

Example::

    [historian.retention]
    raw = "90d"              # raw points of every tag not matched below ("" = keep forever)
    rollup_1m = "400d"       # 1-minute rollups
    rollup_1h = ""           # 1-hour rollups: forever
    disk_budget = "20GB"     # beyond it the oldest days go first ("" = no budget)

    [[historian.retention.rules]]
    match = "acme/plant-1/utilities/**"
    raw = "30d"

Values are kept as written (so error messages and reports quote the user's own words)
and parsed by the properties; validation parses each once, so a typo is a key-and-line
error at load time, never at the first retention pass.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopfloor.config.durations import parse_duration_s

__all__ = [
    "RetentionRule",
    "RetentionSection",
    "check_pattern",
    "is_glob",
    "parse_bytes",
    "parse_retention_s",
]

_RETENTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|w|y)\s*$")
_RETENTION_S = {"h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)\s*$", re.IGNORECASE)
_BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_GLOB = set("*?[")


def parse_retention_s(text: str) -> float | None:
    """``"90d"`` → seconds; ``""`` → None (keep forever). Units: h, d, w, y (365 days).

    Raises:
        ValueError: not a retention; the message shows the accepted forms.
    """
    if not text.strip():
        return None
    match = _RETENTION.match(text)
    if not match:
        hint = " (months: write days, e.g. 183d)" if text.strip().endswith(("m", "mo")) else ""
        raise ValueError(
            f'expected a retention like 12h, 30d, 8w or 2y, or "" to keep forever, '
            f"got {text!r}{hint}"
        )
    seconds = float(match.group(1)) * _RETENTION_S[match.group(2)]
    if seconds < 3600:
        raise ValueError(f"a retention must be at least 1h, got {text!r}")
    return seconds


def parse_bytes(text: str) -> int | None:
    """``"20GB"`` → 20·10⁹ bytes (``GiB`` → 2³⁰); ``""`` → None (no budget).

    Raises:
        ValueError: not a size; the message shows the accepted forms.
    """
    if not text.strip():
        return None
    match = _BYTES.match(text)
    if not match:
        raise ValueError(
            f'expected a size like 500MB, 20GB or 1.5TiB, or "" for none, got {text!r}'
        )
    size = int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError(f"a size must be more than 0 bytes, got {text!r}")
    return size


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a usable tag-path glob or asset prefix, else raise.

    ``**`` matches across ``/``, ``*`` and ``?`` within one segment, ``[...]`` a class;
    without them the pattern is a path or an asset folder (whole segments).

    Raises:
        ValueError: empty, an empty segment, or an unclosed ``[``.
    """
    stripped = pattern.strip().rstrip("/")
    if not stripped:
        raise ValueError("match must name a tag path, asset folder or glob")
    if any(not segment for segment in stripped.split("/")):
        raise ValueError(f"match {pattern!r} has an empty segment")
    if "[" in stripped and "]" not in stripped[stripped.index("[") :]:
        raise ValueError(f"match {pattern!r} has a '[' without its ']'")
    return stripped


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a glob rather than a path or asset prefix."""
    return bool(_GLOB & set(pattern))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionRule(_Section):
    """Raw retention for the tags a path glob or asset prefix matches (the first rule wins)."""

    match: str = Field(
        description="Tag path glob (`**` spans levels, `*` one level) or asset prefix, e.g. "
        "`acme/plant-1/utilities/**` or `acme/plant-1/utilities`."
    )
    raw: str = Field(
        description="How long raw points of the matched tags are kept (`30d`, `12w`, `2y`); "
        '`""` keeps them forever.'
    )

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        return check_pattern(value)

    @field_validator("raw")
    @classmethod
    def _raw(cls, value: str) -> str:
        parse_retention_s(value)
        return value

    @property
    def raw_s(self) -> float | None:
        """``raw`` in seconds; None keeps forever."""
        return parse_retention_s(self.raw)


class RetentionSection(_Section):
    """How long history is kept, and how much disk it may take."""

    raw: str = Field(
        "",
        description="How long raw points are kept unless a rule says otherwise (`90d`, `12w`, "
        '`2y`); `""` keeps them forever. Whole UTC days go once all of the day is older.',
    )
    rules: list[RetentionRule] = Field(
        default_factory=list,
        description="Raw retention per tag class: `[[historian.retention.rules]]` tables with "
        "`match` and `raw`, tried in order (the first match wins).",
    )
    rollup_1m: str = Field(
        "",
        description='How long 1-minute rollups (tables `rollup_1m*`) are kept; `""` forever.',
    )
    rollup_1h: str = Field(
        "",
        description='How long 1-hour rollups (tables `rollup_1h*`) are kept; `""` forever.',
    )
    disk_budget: str = Field(
        "",
        description="Most disk the history may use (`500MB`, `20GB`, `1TiB`); beyond it the "
        'oldest raw days are evicted first, then the oldest rollups. `""`: no budget.',
    )
    interval: str = Field(
        "15m",
        description="How often retention and the disk budget are enforced (`5m`, `1h`).",
    )

    @field_validator("raw", "rollup_1m", "rollup_1h")
    @classmethod
    def _retention(cls, value: str) -> str:
        parse_retention_s(value)
        return value

    @field_validator("disk_budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        parse_bytes(value)
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        seconds = parse_duration_s(value)
        if not 1 <= seconds <= 86400:
            raise ValueError(f"the interval must be between 1s and 1d, got {value!r}")
        return value

    @property
    def raw_s(self) -> float | None:
        """``raw`` in seconds; None keeps forever."""
        return parse_retention_s(self.raw)

    @property
    def rollup_1m_s(self) -> float | None:
        """``rollup_1m`` in seconds; None keeps forever."""
        return parse_retention_s(self.rollup_1m)

    @property
    def rollup_1h_s(self) -> float | None:
        """``rollup_1h`` in seconds; None keeps forever."""
        return parse_retention_s(self.rollup_1h)

    @property
    def disk_budget_bytes(self) -> int | None:
        """``disk_budget`` in bytes; None: no budget."""
        return parse_bytes(self.disk_budget)

    @property
    def interval_s(self) -> float:
        """``interval`` in seconds."""
        return parse_duration_s(self.interval)
