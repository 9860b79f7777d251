"""An alarm rule as the engine evaluates it, and how configuration becomes one."""

from __future__ import annotations

from dataclasses import dataclass

from shopfloor.config.alarms import AlarmSpec, AlarmsSection

__all__ = ["AlarmRule", "rule_of", "rules_from_config"]


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """One alarm on one tag (see :class:`~shopfloor.config.alarms.AlarmRuleConfig`)."""

    name: str
    tag: str
    kind: str
    limit: float | None = None
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    priority: str = "medium"
    message: str = "{tag} {kind}: {value}"
    setpoint: str | None = None
    expression: str | None = None
    inputs: tuple[tuple[str, str], ...] = ()
    """``expression`` rules: (name, tag path) of each input."""

    def text(self, value: float | None) -> str:
        """The message with its fields filled in (a broken template is shown as written)."""
        try:
            return self.message.format(tag=self.tag, kind=self.kind, value=value, limit=self.limit)
        except (KeyError, IndexError, ValueError, TypeError):  # e.g. {value:.1f} of None
            return self.message


def rule_of(
    spec: AlarmSpec,
    *,
    name: str,
    tag: str,
    setpoint: str | None = None,
    inputs: dict[str, str] | None = None,
) -> AlarmRule:
    """The engine's rule for an alarm as configured (on a tag, or from a template)."""
    return AlarmRule(
        name=name,
        tag=tag,
        kind=spec.kind,
        limit=spec.limit,
        deadband=spec.deadband,
        on_delay_s=spec.on_delay_s,
        off_delay_s=spec.off_delay_s,
        priority=spec.priority,
        message=spec.message,
        setpoint=setpoint,
        expression=spec.expression,
        inputs=tuple((inputs if inputs is not None else spec.inputs).items()),
    )


def rules_from_config(section: AlarmsSection) -> list[AlarmRule]:
    """The engine's rules from an ``[alarms]`` configuration section."""
    return [rule_of(r, name=r.alarm_name, tag=r.tag, setpoint=r.setpoint) for r in section.rules]
