"""Production analytics settings (``[analytics]``): shift calendar, downtime, OEE, energy,
SPC.

Example::

    [analytics.shifts]
    timezone = "Europe/Berlin"
    shifts = [
      { name = "early", start = "06:00", end = "14:00" },
      { name = "late",  start = "14:00", end = "22:00" },
      { name = "night", start = "22:00", end = "06:00" },   # crosses midnight
    ]
    breaks = [{ start = "12:00", end = "12:30" }]
    maintenance = [{ start = "2026-03-01T06:00", end = "2026-03-01T10:00", equipment = ["cnc-01"] }]

    [analytics.downtime]
    micro_stop = "2m"
    reason_classes = { "4" = "failure", "7" = "setup", "3" = "minor" }

Times of day are local to ``timezone``; a shift whose end is not after its start ends
the next day. Durations are kept as written and parsed by properties, so an error quotes
the user's own words.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.alarms import repeated
from shopfloor.config.anomaly import AnomalySection, RulSection
from shopfloor.config.durations import parse_duration_s
from shopfloor.config.reports import ReportSchedule
from shopfloor.config.spc import SpcChartConfig

__all__ = [
    "AnalyticsSection",
    "BreakEntry",
    "DowntimeSection",
    "EnergySection",
    "LossClass",
    "MaintenanceEntry",
    "OeeSection",
    "ShiftEntry",
    "ShiftsSection",
    "parse_time_of_day",
]

LossClass = Literal["failure", "setup", "minor"]
"""Where a stop's time goes among the six big losses: breakdowns, setup and adjustments,
or idling and minor stops."""

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def parse_time_of_day(text: str) -> int:
    """Minutes after midnight of ``HH:MM`` (``24:00`` is the end of the day).

    Raises:
        ValueError: not ``HH:MM``, or after ``24:00``.
    """
    match = _TIME_OF_DAY.match(text)
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise ValueError(f"expected a time of day like 06:00 or 22:30, got {text!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DailySpan(_Section):
    """A span at the same local time every day; one whose end is not after its start ends
    the next day."""

    start: str = Field(description="Local start time, `HH:MM`.")
    end: str = Field(description="Local end time, `HH:MM` (past midnight if not after start).")

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_of_day(value)
        return value

    @property
    def minutes(self) -> tuple[int, int]:
        """Start and end in minutes after the start day's midnight (end may pass 1440)."""
        start, end = parse_time_of_day(self.start), parse_time_of_day(self.end)
        return start, end if end > start else end + 1440


class ShiftEntry(_DailySpan):
    """One shift of every day."""

    name: str = Field(min_length=1, max_length=40, description="The shift's name.")
    end: str = Field(
        description="Local end time, `HH:MM`; not after `start` means the next day "
        "(a night shift crossing midnight)."
    )


class BreakEntry(_DailySpan):
    """A planned stop at the same local time every day (a meal break)."""


class MaintenanceEntry(_Section):
    """A dated planned stop (preventive maintenance), for some or all machines."""

    start: datetime = Field(
        description="When it starts (ISO 8601; without an offset it is local to the calendar)."
    )
    end: datetime = Field(description="When it ends (after `start`).")
    equipment: list[str] = Field(
        default_factory=list,
        description="The machines it stops, by id or path prefix; empty means all.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceEntry:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("start and end both need an offset, or neither")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


def _default_shifts() -> list[ShiftEntry]:
    return [
        ShiftEntry(name="early", start="06:00", end="14:00"),
        ShiftEntry(name="late", start="14:00", end="22:00"),
        ShiftEntry(name="night", start="22:00", end="06:00"),
    ]


class ShiftsSection(_Section):
    """The shift calendar: when production is planned."""

    timezone: str = Field("UTC", description="IANA time zone of the shift times (`Europe/Berlin`).")
    shifts: list[ShiftEntry] = Field(
        default_factory=_default_shifts,
        description="The shifts of every day; they must not overlap. Time outside every "
        "shift is not planned production time.",
    )
    breaks: list[BreakEntry] = Field(
        default_factory=list,
        description="Daily planned stops (breaks), excluded from planned production time.",
    )
    maintenance: list[MaintenanceEntry] = Field(
        default_factory=list,
        description="Dated planned stops (maintenance windows), excluded from planned "
        "production time of the machines they name.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name like Europe/Berlin)"
            ) from err
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> ShiftsSection:
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names):
            raise ValueError("shift names must be unique")
        taken: dict[int, str] = {}
        for shift in self.shifts:
            start, end = shift.minutes
            for minute in range(start, end):
                other = taken.setdefault(minute % 1440, shift.name)
                if other != shift.name:
                    raise ValueError(f"shifts {other!r} and {shift.name!r} overlap")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The calendar's time zone."""
        return ZoneInfo(self.timezone)


def _default_reason_classes() -> dict[str, LossClass]:
    # The demo plant's down_reason codes (templates/cnc-mill.toml).
    return {
        "1": "setup",  # tool change: an adjustment
        "2": "minor",  # material shortage: idling
        "3": "minor",  # jam
        "4": "failure",  # electrical fault
        "5": "setup",  # quality check: an adjustment
        "6": "failure",  # mechanical failure
        "7": "setup",  # changeover
    }


class DowntimeSection(_Section):
    """Stop events from machine states."""

    micro_stop: str = Field(
        "2m", description="Stops shorter than this are micro-stops (small stops), counted apart."
    )
    running_state: int = Field(1, description="The `state` tag's value meaning running.")
    setup_state: int = Field(
        3, description="The `state` tag's value meaning setup (its stops are setup losses)."
    )
    reason_classes: dict[str, LossClass] = Field(
        default_factory=_default_reason_classes,
        description="Reason code → loss class: `failure` (breakdowns), `setup` (setup and "
        "adjustments) or `minor` (idling and minor stops).",
    )
    default_class: LossClass = Field(
        "failure",
        description="Loss class of a stop whose reason is unmapped or unknown (no reason "
        "given): an unexplained stop counts as a breakdown until an operator assigns one.",
    )

    @field_validator("micro_stop")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("reason_classes")
    @classmethod
    def _codes(cls, value: dict[str, LossClass]) -> dict[str, LossClass]:
        for key in value:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"reason codes are integers, got {key!r}")
        return value

    @property
    def micro_stop_ns(self) -> int:
        """The micro-stop threshold in nanoseconds."""
        return round(parse_duration_s(self.micro_stop) * 1e9)

    def class_of(self, reason: int) -> LossClass:
        """The loss class of a reason code."""
        return self.reason_classes.get(str(reason), self.default_class)


class OeeSection(_Section):
    """The OEE job: closed hours computed once and stored."""

    enabled: bool = Field(
        True, description="Compute and store OEE per machine per closed hour in the background."
    )
    settle: str = Field(
        "5m",
        description="How long after an hour closes the job waits for late points before "
        "computing it (plus `downtime.micro_stop`).",
    )
    backfill: str = Field(
        "7d", description="How far back the job computes hours on its first start."
    )
    interval: str = Field("1m", description="How often the job looks for hours to compute.")

    @field_validator("settle", "backfill", "interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_s(value)
        return value


class EnergySection(_Section):
    """Energy per machine, line and shift from energy counters or power tags."""

    enabled: bool = Field(
        True,
        description="Compute and store energy per machine per closed hour in the background, "
        "beside OEE.",
    )
    counter: str = Field(
        "energy_kwh",
        min_length=1,
        description="Measurement name of a machine's energy counter (kWh meter reading); "
        "preferred over `power` where a machine has both.",
    )
    power: str = Field(
        "power_kw",
        min_length=1,
        description="Measurement name of a machine's active power (kW), integrated over time "
        "where there is no counter.",
    )
    max_gap: str = Field(
        "10m",
        description="Longest interval between two readings still taken as data: a power "
        "reading holds at most this long, and a counter increase over a longer interval "
        "is counted at the reading, not spread over time nothing is known of. Longer than "
        "the edge's report-by-exception heartbeat.",
    )
    rollover: float | None = Field(
        None,
        gt=0,
        description="Value at which the energy counter wraps to 0 (`999999.9`); a drop is "
        "then a rollover when that is the shorter way round, else a reset. None: every "
        "drop is a reset.",
    )

    @field_validator("max_gap")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration_s(value) <= 0:
            raise ValueError("max_gap must be positive")
        return value

    @property
    def max_gap_ns(self) -> int:
        """The maximum gap in nanoseconds."""
        return round(parse_duration_s(self.max_gap) * 1e9)


class AnalyticsSection(_Section):
    """Production analytics: shift calendar, downtime, OEE and control charts."""

    store: str = Field(
        "analytics.sqlite",
        description="SQLite file of stored OEE hours and operator-assigned stop reasons "
        "(WAL, `synchronous=FULL`); relative to `server.data_dir`. Not used with "
        "`historian.shared = true`: they are then in the historian's schema.",
    )
    shifts: ShiftsSection = Field(default_factory=ShiftsSection, description="Shift calendar.")
    downtime: DowntimeSection = Field(
        default_factory=DowntimeSection, description="Stop events and reason classes."
    )
    oee: OeeSection = Field(default_factory=OeeSection, description="The stored OEE job.")
    energy: EnergySection = Field(
        default_factory=EnergySection, description="Energy per machine, line and shift."
    )
    spc: list[SpcChartConfig] = Field(
        default_factory=list,
        description="`[[analytics.spc]]` tables: one control chart each (see the keys "
        "`analytics.spc.*`).",
    )
    anomaly: AnomalySection = Field(
        default_factory=AnomalySection, description="Streaming anomaly detectors per machine."
    )
    rul: RulSection = Field(
        default_factory=RulSection, description="Remaining useful life per machine."
    )
    reports: list[ReportSchedule] = Field(
        default_factory=list,
        description="`[[analytics.reports]]` tables: shift, day and week reports sent to "
        "notification channels (see the keys `analytics.reports.*`).",
    )
    partitions: int = Field(
        0,
        ge=0,
        le=4096,
        description="Scaled out (docs/scale-out.md): 0 (default): each `shopfloor server` "
        "runs the OEE and energy jobs and the SPC and anomaly monitors for every machine. "
        "N > 0 (needs a PostgreSQL historian with `shared = true`): the machines are split "
        "into N partitions by equipment and each server runs them only for the partitions "
        "it leases (PostgreSQL advisory locks); a stopped server's move to the others "
        "within seconds. Every server of one installation needs the same value.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AnalyticsSection:
        twice = repeated([chart.name for chart in self.spc])
        if twice:
            raise ValueError(f"two control charts are named {twice[0]!r}")
        return self
