"""Alarm evaluation without I/O: rules in, points in, ISA-18.2 transitions out.

:class:`AlarmEvaluator` is the part of the alarm engine that decides: it compiles the
rules into condition tables (:class:`~.conditions.Conditions`), evaluates a batch as
columns and drives each alarm's state machine (:class:`~.alarms.Alarm`). It stores
nothing and tells nobody: the caller journals the transitions it returns. Two callers use
it: the per-process :class:`~.engine.AlarmEngine` (SQLite journal, fed by the live
channel) and the ingest workers' partition owners (:mod:`~.partitioned`, PostgreSQL
journal, fed by the committed-points feed), so both evaluate alarms the same way.

Not thread-safe: one thread calls it (each caller has its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shopfloor.errors import UnknownTagError
from shopfloor.model import PointBatch
from shopfloor.model.expressions import compile_expression
from shopfloor.server.rules.alarms import Alarm, AlarmStatus, Transition
from shopfloor.server.rules.conditions import ConditionKind, Conditions, ExpressionConditions
from shopfloor.server.rules.rule import AlarmRule

__all__ = ["AlarmEvaluator"]

_KINDS = {
    "HH": ConditionKind.HIGH,
    "H": ConditionKind.HIGH,
    "L": ConditionKind.LOW,
    "LL": ConditionKind.LOW,
    "state": ConditionKind.STATE,
    "bad_quality": ConditionKind.BAD_QUALITY,
    "roc": ConditionKind.RATE,
    "deviation": ConditionKind.DEVIATION,
}


class AlarmEvaluator:
    """The alarms of ``rules`` (names unique), all normal until :meth:`restore`.

    Raises:
        ValueError: two rules share a name.
    """

    def __init__(self, rules: Sequence[AlarmRule]) -> None:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("alarm names must be unique")
        self.rules = tuple(rules)
        self.index = {r.name: i for i, r in enumerate(self.rules)}
        watched = [
            t for r in rules for t in (r.tag, r.setpoint, *dict(r.inputs).values()) if t is not None
        ]
        self._tag_ids = {tag: i for i, tag in enumerate(dict.fromkeys(watched))}
        self._plain = np.array([i for i, r in enumerate(rules) if r.kind != "expression"], np.intp)
        self._combined = np.array(
            [i for i, r in enumerate(rules) if r.kind == "expression"], np.intp
        )
        plain = [rules[i] for i in self._plain]
        self._conditions = Conditions(
            [self._tag_ids[r.tag] for r in plain],
            [_KINDS[r.kind] for r in plain],
            [np.nan if r.limit is None else r.limit for r in plain],
            [r.deadband for r in plain],
            [-1 if r.setpoint is None else self._tag_ids[r.setpoint] for r in plain],
        )
        self._expressions = ExpressionConditions(
            [
                (
                    compile_expression(rules[i].expression or "", set(dict(rules[i].inputs))),
                    {name: self._tag_ids[tag] for name, tag in rules[i].inputs},
                )
                for i in self._combined
            ]
        )
        self.alarms: tuple[Alarm, ...] = ()
        self.restore({})

    @property
    def watched_tags(self) -> frozenset[str]:
        """Every tag path a rule reads (its tag, setpoint or inputs)."""
        return frozenset(self._tag_ids)

    def restore(self, saved: dict[str, AlarmStatus], kept: dict[str, Alarm] | None = None) -> None:
        """Give every rule its alarm: the one in ``kept`` (state, delays and shelve go on),
        else one in the state ``saved`` holds (normal without one), with its condition as
        it was: no re-alarm on a restart, a hand-over or an edit of the rules."""
        kept = kept or {}
        alarms = []
        for rule in self.rules:
            if rule.name in kept:
                alarms.append(kept[rule.name])
                continue
            alarms.append(
                Alarm(
                    rule.name,
                    on_delay_ns=int(rule.on_delay_s * 1e9),
                    off_delay_ns=int(rule.off_delay_s * 1e9),
                    status=saved.get(rule.name),
                )
            )
        for table, positions in (
            (self._conditions, self._plain),
            (self._expressions, self._combined),
        ):
            for k, i in enumerate(positions.tolist()):
                status = saved.get(self.rules[i].name)
                if status is not None:
                    table.active[k] = status.condition
                    table.seen[k] = status.seen_ns
        self.alarms = tuple(alarms)

    def process(self, batch: PointBatch) -> list[Transition]:
        """The transitions ``batch`` causes, in order (not journaled: the caller does)."""
        lookup = np.array([self._tag_ids.get(t, -1) for t in batch.tags], np.int64)
        if not len(lookup) or lookup.max() < 0:
            return []
        tags = lookup[batch.tag_index]
        watched = tags >= 0
        columns = (tags[watched], batch.ts[watched], batch.value[watched], batch.quality[watched])
        out: list[Transition] = []
        for table, positions in (
            (self._conditions, self._plain),
            (self._expressions, self._combined),
        ):
            changes = table.evaluate(*columns)
            for rule, ts, active, value in zip(
                positions[changes.rule].tolist(),
                changes.ts.tolist(),
                changes.active.tolist(),
                changes.value.tolist(),
                strict=True,
            ):
                out += self.alarms[rule].observe(active, ts, value)
        return out

    def tick(self, now_ns: int) -> list[Transition]:
        """Let delays and shelves run out at ``now_ns``."""
        return [t for alarm in self.alarms for t in alarm.tick(now_ns)]

    def alarm_named(self, name: str) -> Alarm:
        """The alarm called ``name``.

        Raises:
            UnknownTagError: no alarm has that name.
        """
        i = self.index.get(name)
        if i is None:
            raise UnknownTagError(f"no alarm named {name!r}")
        return self.alarms[i]
