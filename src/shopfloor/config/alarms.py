"""Alarm rules as written in the configuration (``[[alarms.rules]]``).

Example::

    [[alarms.rules]]
    tag = "acme/plant-1/press/line-1/cell-1/press-1/oil_temp"
    kind = "H"                 # HH, H, L, LL, state, bad_quality
    limit = 80.0
    deadband = 2.0             # off only at or below 78.0
    on_delay = "5s"
    priority = "high"          # critical, high, medium, low
    message = "Oil temperature {value:.1f} above {limit}"

Durations are kept as written and parsed by the properties, so an error quotes the
user's own words with the key and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.durations import parse_duration_s
from shopfloor.model.expressions import compile_expression

__all__ = ["AlarmRuleConfig", "AlarmSpec", "AlarmsSection", "repeated"]

AlarmKind = Literal["HH", "H", "L", "LL", "state", "bad_quality", "roc", "deviation", "expression"]
Priority = Literal["critical", "high", "medium", "low"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlarmSpec(_Section):
    """What an alarm does, wherever it is written (here on a tag, or in a template on a
    measurement)."""

    kind: AlarmKind = Field(
        description="`HH`/`H`: above `limit`; `L`/`LL`: below it; `state`: equal to it (a "
        "digital state); `bad_quality`: the tag's quality is Bad (communication lost); "
        "`roc`: changing faster than `limit` per second; `deviation`: further than "
        "`limit` from the `setpoint` tag; `expression`: `expression` over `inputs` is true."
    )
    limit: float | None = Field(
        None, description="The limit, or the state for `state`; not for `bad_quality`."
    )
    setpoint: str | None = Field(
        None,
        description="`deviation` only: the setpoint's tag path (in a template: a measurement "
        "of the same equipment).",
    )
    deadband: float = Field(
        0.0,
        ge=0,
        description="Hysteresis of limit alarms: `H` goes off only at or below "
        "`limit - deadband`, `L` at or above `limit + deadband`.",
    )
    on_delay: str = Field("0s", description="How long the condition must hold before the alarm.")
    off_delay: str = Field(
        "0s", description="How long the condition must be gone before the alarm clears."
    )
    expression: str | None = Field(
        None,
        description="`expression` only: a condition over `inputs`, e.g. "
        "`temp > 80 and state == 1` (and or not, comparisons, + - * /, abs min max).",
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="`expression` only: name → tag path (in a template: name → measurement).",
    )
    priority: Priority = Field("medium", description="ISA-18.2 priority.")
    message: str = Field(
        "{tag} {kind}: {value}",
        description="Text of the alarm; `{tag}`, `{kind}`, `{value}`, `{limit}` are filled "
        "in (Python format fields, e.g. `{value:.1f}`).",
    )

    @field_validator("on_delay", "off_delay")
    @classmethod
    def _delay(cls, value: str) -> str:
        if parse_duration_s(value) > 86400:
            raise ValueError(f"a delay of at most 1d, got {value!r}")
        return value

    @model_validator(mode="after")
    def _limit_fits_kind(self) -> Self:
        if (self.kind == "expression") != (self.expression is not None) or (
            self.kind != "expression" and self.inputs
        ):
            raise ValueError("expression and inputs go with kind expression, and only with it")
        if self.expression is not None:
            if not self.inputs:
                raise ValueError("an expression needs inputs (name = tag)")
            compile_expression(self.expression, set(self.inputs))  # names the fault
        limitless = self.kind in {"bad_quality", "expression"}
        if limitless and self.limit is not None:
            raise ValueError(f"kind {self.kind} takes no limit")
        if not limitless and self.limit is None:
            raise ValueError(f"kind {self.kind} needs a limit")
        if (self.kind == "deviation") != (self.setpoint is not None):
            raise ValueError("a setpoint goes with kind deviation, and only with it")
        if self.kind in {"roc", "deviation"} and self.limit is not None and self.limit <= 0:
            raise ValueError(f"kind {self.kind} needs a limit above 0")
        return self

    @property
    def on_delay_s(self) -> float:
        """``on_delay`` in seconds."""
        return parse_duration_s(self.on_delay)

    @property
    def off_delay_s(self) -> float:
        """``off_delay`` in seconds."""
        return parse_duration_s(self.off_delay)


class AlarmRuleConfig(AlarmSpec):
    """One alarm on one tag."""

    tag: str = Field(min_length=1, description="Path of the tag the rule watches.")
    name: str | None = Field(
        None, description="The alarm's name; default: the tag path, a dot and the kind."
    )

    @property
    def alarm_name(self) -> str:
        """The alarm's name: given, or ``tag.kind``."""
        return self.name or f"{self.tag}.{self.kind}"


def repeated(names: Sequence[str]) -> list[str]:
    """The names that occur more than once, sorted (for "named twice" errors)."""
    return sorted({n for n in names if names.count(n) > 1})


class AlarmsSection(_Section):
    """Alarms: rules on tags, and where their journal lives."""

    rules: list[AlarmRuleConfig] = Field(
        default_factory=list,
        description="`[[alarms.rules]]` tables: one alarm each (see the keys `alarms.rules.*`).",
    )
    journal: str = Field(
        "alarms.sqlite",
        min_length=1,
        description="The alarm journal file (every transition, durable); relative to "
        "server.data_dir.",
    )
    partitions: int = Field(
        0,
        ge=0,
        le=4096,
        description="Scaled out (docs/scale-out.md): 0 (default): each `shopfloor server` "
        "evaluates the alarms of the points it ingests itself, journaled in `journal`. "
        "N > 0 (needs a PostgreSQL historian with `shared = true`): the `shopfloor ingest` "
        "workers evaluate them, the rules split into N partitions by equipment, each owned "
        "by one worker at a time; the journal is in PostgreSQL and the API servers read it. "
        "Every process of one installation needs the same value.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AlarmsSection:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.alarm_name in seen:
                raise ValueError(f"two alarms are named {rule.alarm_name!r}; give one a name")
            seen.add(rule.alarm_name)
        return self
