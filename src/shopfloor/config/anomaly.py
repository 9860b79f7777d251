"""Anomaly detection and remaining-useful-life settings: `[analytics.anomaly]`, `[analytics.rul]`.

Example::

    [analytics.anomaly]
    enabled = true
    tags = ["vibration_rms", "*_temp"]       # per machine, by name (shell patterns)
    ewma_limits = { vibration_rms = 8.0 }
    alarm = true

    [analytics.rul]
    enabled = true
    indicator = "vibration_rms"
    threshold = 7.1                           # the HH vibration limit: the failure level

The defaults are the settings measured against the simulator (docs/anomaly.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.alarms import Priority
from shopfloor.config.durations import parse_duration_s

__all__ = ["AnomalySection", "RulSection"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    parse_duration_s(value)
    return value


class AnomalySection(_Section):
    """Streaming anomaly detectors per machine, scored as data arrives."""

    enabled: bool = Field(
        False,
        description="Score every machine's watched tags as data arrives and store the "
        "score as the tag `<equipment>/anomaly_score`.",
    )
    tags: list[str] = Field(
        default_factory=lambda: ["vibration_rms", "*_temp"],
        min_length=1,
        description="The tags watched on each machine with a `state` tag, by name (the "
        "last path segment; shell patterns like `*_temp`).",
    )
    running_state: int = Field(
        1, description="The `state` tag's value while the machine runs: only then is it watched."
    )
    settle: str = Field(
        "15m",
        description="A machine is watched only after running this long (temperatures "
        "climbing back after a stop are no anomaly).",
    )
    window: int = Field(
        14400, ge=10, le=200_000, description="Values per tag in the rolling baseline."
    )
    refresh: int = Field(60, ge=1, description="Rows between two refits of the baseline.")
    min_points: int = Field(
        1800, ge=3, description="Values a tag needs in its baseline before it is scored."
    )
    z_threshold: float = Field(
        6.0, gt=0, description="Robust z-score (median/MAD) beyond which a value is anomalous."
    )
    ewma_lambda: float = Field(
        0.2, gt=0, le=1, description="Weight λ of the newest value in the EWMA chart."
    )
    ewma_limit: float = Field(
        20.0,
        gt=0,
        description="EWMA chart limit L, in standard deviations of the EWMA (wide: the "
        "robust z-score watches temperatures for steps; `ewma_limits` narrows it per tag).",
    )
    ewma_limits: dict[str, float] = Field(
        default_factory=lambda: {"vibration_rms": 8.0},
        description="EWMA limit per tag name, instead of `ewma_limit` (vibration's slow "
        "rise is the bearing fault to catch; temperatures follow the hall's daily swing).",
    )
    mahalanobis_alpha: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Per-row false-alarm probability of the multivariate (Mahalanobis) "
        "detector over each machine's watched tags; 0 turns it off (docs/anomaly.md says "
        "why it is off by default).",
    )
    direction: Literal["up", "down", "both"] = Field(
        "up", description="Which deviations of a single tag count: `up`, `down` or `both`."
    )
    alarm: bool = Field(
        False,
        description="Raise the alarm `anomaly.<equipment id>` (kind H, limit 1) on each "
        "machine's `anomaly_score`.",
    )
    priority: Priority = Field("medium", description="Priority of those alarms.")

    _settle = field_validator("settle")(_duration)

    @model_validator(mode="after")
    def _fits(self) -> AnomalySection:
        if self.min_points > self.window:
            raise ValueError(
                f"min_points ({self.min_points}) must not exceed window ({self.window})"
            )
        return self

    @property
    def settle_ns(self) -> int:
        """``settle`` in nanoseconds."""
        return round(parse_duration_s(self.settle) * 1e9)


class RulSection(_Section):
    """Remaining useful life per machine from a degrading health indicator."""

    enabled: bool = Field(
        False, description="Estimate each machine's remaining useful life periodically."
    )
    indicator: str = Field(
        "vibration_rms",
        min_length=1,
        description="Name of the health-indicator tag on each machine (rises towards failure).",
    )
    threshold: float = Field(
        7.1, description="The indicator's failure level (the demo plant's HH vibration limit)."
    )
    running_state: int = Field(
        1,
        description="The `state` tag's value while the machine runs: the indicator is "
        "fitted against running time only (wear stops with the machine).",
    )
    history: str = Field("12h", description="How much history each estimate fits.")
    interval: str = Field("5m", description="How often the estimates are refreshed.")
    bucket: str = Field("1m", description="Running time per median bucket of the indicator.")
    model: Literal["auto", "linear", "exponential"] = Field(
        "auto",
        description="Trend fitted: `linear`, `exponential` (over an offset) or `auto` "
        "(the better fit).",
    )
    confidence: float = Field(
        0.9, gt=0, lt=1, description="Two-sided coverage of the failure-time interval."
    )
    min_points: int = Field(30, ge=3, description="Fewest buckets that give an estimate.")

    _durations = field_validator("history", "interval", "bucket")(_duration)

    @property
    def history_ns(self) -> int:
        """``history`` in nanoseconds."""
        return round(parse_duration_s(self.history) * 1e9)

    @property
    def interval_s(self) -> float:
        """``interval`` in seconds."""
        return parse_duration_s(self.interval)

    @property
    def bucket_s(self) -> float:
        """``bucket`` in seconds."""
        return parse_duration_s(self.bucket)
