"""Control charts as written in the configuration (``[[analytics.spc]]``).

Example::

    [[analytics.spc]]
    name = "bore-diameter"
    tag = "acme/plant-1/machining/line-1/cell-1/lathe-1/bore_diameter"
    kind = "xbar_r"             # xbar_r, xbar_s, imr
    subgroup_size = 5           # or bucket = "1h" (every point of the hour)
    baseline_start = 2026-03-02T06:00:00Z
    baseline_end = 2026-03-09T06:00:00Z   # or baseline_subgroups = 25
    lsl = 73.95
    usl = 74.05
    rules = ["WE1", "WE2", "WE3", "WE4"]
    alarm = true
    priority = "high"

Rule ids are checked here against the list in
:mod:`shopfloor.server.analytics.spc_rules` (configuration imports no server code; a
test keeps the two lists equal).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.alarms import Priority
from shopfloor.config.durations import parse_duration_s

__all__ = ["RULE_IDS", "SpcChartConfig", "SpcKind"]

SpcKind = Literal["xbar_r", "xbar_s", "imr"]
RuleId = Literal["WE1", "WE2", "WE3", "WE4", "N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8"]
RULE_IDS: tuple[str, ...] = RuleId.__args__  # type: ignore[attr-defined]
_WESTERN_ELECTRIC: list[RuleId] = ["WE1", "WE2", "WE3", "WE4"]


class SpcChartConfig(BaseModel):
    """One control chart on one tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The chart's id in `/api/v1/spc/{name}` (letters, digits, `_.-`).",
    )
    tag: str = Field(min_length=1, description="Path of the tag the chart plots.")
    kind: SpcKind = Field(
        description="`xbar_r` (subgroup means and ranges, subgroups up to 25), `xbar_s` "
        "(means and standard deviations, any size) or `imr` (individual points and "
        "moving ranges of two)."
    )
    subgroup_size: int | None = Field(
        None,
        ge=2,
        le=1000,
        description="`xbar_r`/`xbar_s`: subgroups of this many consecutive points; instead "
        "of `bucket`.",
    )
    bucket: str | None = Field(
        None,
        description="`xbar_r`/`xbar_s`: one subgroup per time bucket (`10m`, `1h`), aligned "
        "to UTC, of every Good point in it (buckets of one point are left out); instead "
        "of `subgroup_size`.",
    )
    baseline_start: datetime | None = Field(
        None,
        description="Start of the baseline (phase I) period the limits are computed from; "
        "a TOML date-time, UTC unless it has an offset. Without it the limits come from "
        "the range asked for.",
    )
    baseline_end: datetime | None = Field(
        None, description="End of the baseline period (exclusive); with `baseline_start`."
    )
    baseline_subgroups: int | None = Field(
        None,
        ge=2,
        description="The baseline is the first this many subgroups (of points, for `imr`) "
        "from `baseline_start`, or of the range asked for.",
    )
    lsl: float | None = Field(None, description="Lower specification limit, for capability.")
    usl: float | None = Field(None, description="Upper specification limit, for capability.")
    target: float | None = Field(None, description="Target value, drawn on the chart.")
    rules: list[RuleId] = Field(
        default_factory=lambda: list(_WESTERN_ELECTRIC),
        description="Run rules flagged on the X̄ or I chart: Western Electric `WE1`-`WE4`, "
        "Nelson `N1`-`N8`; the R, S or MR chart flags points beyond its limits.",
    )
    alarm: bool = Field(
        False,
        description="Raise the alarm `spc.<name>` while the latest subgroup breaks a rule "
        "(needs `baseline_start`: charts are judged as data arrives only against a fixed "
        "baseline).",
    )
    priority: Priority = Field("medium", description="Priority of the alarm (with `alarm`).")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and parse_duration_s(value) <= 0:
            raise ValueError(f"a bucket longer than zero, got {value!r}")
        return value

    @field_validator("baseline_start", "baseline_end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "imr":
            if self.subgroup_size is not None or self.bucket is not None:
                raise ValueError("kind imr plots single points: no subgroup_size or bucket")
        elif (self.subgroup_size is None) == (self.bucket is None):
            raise ValueError(f"kind {self.kind} needs subgroup_size or bucket (one of them)")
        if self.kind == "xbar_r" and (self.subgroup_size or 0) > 25:
            raise ValueError("xbar_r takes subgroups of at most 25 points; use xbar_s")
        if self.baseline_end is not None:
            if self.baseline_start is None:
                raise ValueError("baseline_end needs baseline_start")
            if self.baseline_end <= self.baseline_start:
                raise ValueError("baseline_end must be after baseline_start")
        elif self.baseline_start is not None and self.baseline_subgroups is None:
            raise ValueError("baseline_start needs baseline_end or baseline_subgroups")
        if self.lsl is not None and self.usl is not None and self.usl <= self.lsl:
            raise ValueError(f"usl ({self.usl}) must be above lsl ({self.lsl})")
        if len(set(self.rules)) != len(self.rules):
            raise ValueError("a rule is named twice in rules")
        return self

    @property
    def bucket_s(self) -> float | None:
        """``bucket`` in seconds."""
        return None if self.bucket is None else parse_duration_s(self.bucket)
