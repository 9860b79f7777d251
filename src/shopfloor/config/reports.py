"""Scheduled reports (``[[analytics.reports]]``): which report, in which formats, to which
notification channels, and when.

Example::

    [[analytics.reports]]
    kind = "day"                      # shift, day, week
    formats = ["xlsx", "pdf"]
    channels = ["shift-leads"]        # names of [[notify.channels]]
    at = "06:30"                      # day/week: local time the previous period is sent

    [[analytics.reports]]
    kind = "shift"
    channels = ["maintenance"]        # a robot: gets a short text, not the files
    settle = "15m"                    # sent this long after each shift ends

    [[analytics.reports]]
    kind = "week"
    channels = ["shift-leads"]
    weekday = "mon"                   # the last ISO week, sent each Monday at `at`
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopfloor.config.durations import parse_duration_s

__all__ = ["WEEKDAYS", "ReportSchedule"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ReportSchedule(BaseModel):
    """One report sent on a schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["shift", "day", "week"] = Field(
        description="`shift` (after each shift), `day` (the previous local day) or `week` "
        "(the previous ISO week)."
    )
    formats: list[Literal["xlsx", "pdf"]] = Field(
        default_factory=lambda: list[Literal["xlsx", "pdf"]](["xlsx", "pdf"]),
        min_length=1,
        description="The files attached to e-mails: `xlsx`, `pdf` or both.",
    )
    channels: list[str] = Field(
        min_length=1,
        description="Names of `[[notify.channels]]`: e-mail channels get the files as "
        "attachments, robots and webhooks a short text summary.",
    )
    at: str = Field(
        "06:30",
        description="day and week: the local time of day (`HH:MM`, plant time zone) the "
        "report of the period just ended is sent.",
    )
    weekday: Weekday = Field("mon", description="week: the day it is sent (`mon` … `sun`).")
    settle: str = Field(
        "15m",
        description="shift: how long after each shift's end its report is sent, so late "
        "points and operators' stop reasons are in.",
    )

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        from shopfloor.config.analytics import parse_time_of_day

        if parse_time_of_day(value) >= 1440:
            raise ValueError(f"at: a time of day before 24:00, got {value!r}")
        return value

    @field_validator("settle")
    @classmethod
    def _settle(cls, value: str) -> str:
        if not 0 <= parse_duration_s(value) <= 86400:
            raise ValueError(f"settle between 0s and 1d, got {value!r}")
        return value

    @property
    def settle_s(self) -> float:
        """``settle`` in seconds."""
        return parse_duration_s(self.settle)
