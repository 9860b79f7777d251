"""Alarm conditions evaluated over whole batches of points: columns in, changes out.

One :class:`Conditions` table holds every per-point rule (limits, digital states, Bad
quality) as columns; :meth:`Conditions.evaluate` takes a batch's columns, pairs each
point with the rules of its tag, and returns only the points where a rule's condition
changed. The work is numpy over (point, rule) pairs; no Python object per point, so
10,000 rules keep up with 100,000 points a second.

Deadband (hysteresis) per limit: a high limit comes on above ``limit`` and goes off
only at or below ``limit - deadband`` (a low limit mirrored), so a value hovering at
the limit does not chatter; rate-of-change and deviation rules are high limits on
``|dv/dt|`` and ``|value - setpoint|``. Points of Bad quality, and NaN values, leave
limit and state conditions as they are (the Bad-quality rule is the one that sees them). A point
older than the newest a rule has taken is ignored (a resent batch, late data), as the
alarm state machine ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from shopfloor.model.expressions import Expression
from shopfloor.model.points import Float64Array, Int64Array, UInt32Array, is_bad

__all__ = ["ConditionChanges", "ConditionKind", "Conditions", "ExpressionConditions"]

BoolArray = npt.NDArray[np.bool_]
IntpArray = npt.NDArray[np.intp]


class ConditionKind(IntEnum):
    """What makes a rule's condition true."""

    HIGH = 1
    """value > limit (HH and H rules); off at <= limit - deadband."""
    LOW = 2
    """value < limit (L and LL rules); off at >= limit + deadband."""
    STATE = 3
    """value == limit (a digital state, e.g. 1 for "motor tripped")."""
    BAD_QUALITY = 4
    """the point's quality is Bad (communication lost, sensor failure)."""
    RATE = 5
    """|value change per second| > limit, between a tag's consecutive usable points."""
    DEVIATION = 6
    """|value - setpoint| > limit, the setpoint tag's value in force at the point's time."""


@dataclass(frozen=True, slots=True)
class ConditionChanges:
    """Where conditions changed, in time order per rule.

    Attributes:
        rule: the rule's position in the :class:`Conditions` table.
        ts: the timestamp of the point that changed it.
        active: the condition's new value.
        value: the point's value.
    """

    rule: IntpArray
    ts: Int64Array
    active: BoolArray
    value: Float64Array

    def __len__(self) -> int:
        return len(self.rule)


class Conditions:
    """Per-point rules as columns, with each rule's current condition.

    Args:
        tag: the tag id each rule watches.
        kind: :class:`ConditionKind` values.
        limit: the limit (HIGH, LOW, RATE per second, DEVIATION) or the state (STATE);
            ignored for BAD_QUALITY.
        deadband: hysteresis of HIGH, LOW, RATE and DEVIATION rules (>= 0).
        reference: per rule, the tag id of a DEVIATION rule's setpoint (-1: none).
    """

    def __init__(
        self,
        tag: npt.ArrayLike,
        kind: npt.ArrayLike,
        limit: npt.ArrayLike,
        deadband: npt.ArrayLike,
        reference: npt.ArrayLike | None = None,
    ) -> None:
        self.tag: Int64Array = np.asarray(tag, np.int64)
        self.kind = np.asarray(kind, np.int8)
        self.limit: Float64Array = np.asarray(limit, np.float64)
        self.deadband: Float64Array = np.asarray(deadband, np.float64)
        n = len(self.tag)
        if not len(self.kind) == len(self.limit) == len(self.deadband) == n:
            raise ValueError("condition columns differ in length")
        if np.any(self.deadband < 0) or np.any(np.isnan(self.deadband)):
            raise ValueError("a deadband must be >= 0")
        if not np.isin(self.kind, [int(k) for k in ConditionKind]).all():
            raise ValueError("unknown condition kind")
        self.reference: Int64Array = (
            np.full(n, -1, np.int64) if reference is None else np.asarray(reference, np.int64)
        )
        if len(self.reference) != n:
            raise ValueError("condition columns differ in length")
        if np.any((self.kind == ConditionKind.DEVIATION) & (self.reference < 0)):
            raise ValueError("a deviation rule needs a reference tag")
        self.active: BoolArray = np.zeros(n, np.bool_)
        self._last_t: Int64Array = np.zeros(n, np.int64)
        self._last_v: Float64Array = np.full(n, np.nan)
        """Per rule: its tag's last usable point (RATE), or its setpoint's (DEVIATION)."""
        self.seen: Int64Array = np.full(n, np.iinfo(np.int64).min, np.int64)
        """Per rule, the newest point timestamp taken; older points are ignored."""
        self._by_tag = np.argsort(self.tag, kind="stable")
        self._sorted_tags = self.tag[self._by_tag]

    def __len__(self) -> int:
        return len(self.tag)

    def evaluate(
        self, tag: Int64Array, ts: Int64Array, value: Float64Array, quality: UInt32Array
    ) -> ConditionChanges:
        """Take a batch (any order) and return where conditions changed; they stay changed."""
        tag = np.asarray(tag, np.int64)
        point, rule = self._pairs(tag)
        t = ts[point]
        newer = t >= self.seen[rule]  # a resent or late point never moves a rule back
        point, rule, t = point[newer], rule[newer], t[newer]
        if not len(rule):
            self._follow_references(tag, ts, value, quality)
            return _no_changes()
        order = np.lexsort((t, rule))
        point, rule, t = point[order], rule[order], t[order]
        v, q = value[point], quality[point]
        starts = np.flatnonzero(np.r_[True, rule[1:] != rule[:-1]])
        sizes = np.diff(np.r_[starts, len(rule)])
        first_of = np.repeat(starts, sizes)
        usable = ~is_bad(q) & ~np.isnan(v)
        kind = self.kind[rule]
        measured = v
        if np.any(kind == ConditionKind.RATE):
            rate = self._rates(
                rule, t, v=v, usable=usable, first_of=first_of, ends=starts + sizes - 1
            )
            measured = np.where(kind == ConditionKind.RATE, rate, measured)
        if np.any(kind == ConditionKind.DEVIATION):
            setpoint = self._references(rule, t, tag=tag, ts=ts, value=value, quality=quality)
            off = np.abs(v - setpoint)
            measured = np.where(kind == ConditionKind.DEVIATION, off, measured)
        self._follow_references(tag, ts, value, quality)
        decision = self._decide(rule, measured, q)
        at = np.arange(len(rule))
        latest = np.maximum.accumulate(np.where(decision >= 0, at, -1))
        decided = latest >= first_of
        state = np.where(decided, decision[np.maximum(latest, 0)] == 1, self.active[rule])
        before = np.empty_like(state)
        before[1:] = state[:-1]
        before[starts] = self.active[rule[starts]]
        changed = state != before
        ends = starts + sizes - 1
        self.active[rule[ends]] = state[ends]
        self.seen[rule[ends]] = t[ends]
        return ConditionChanges(rule[changed], t[changed], state[changed], v[changed])

    def _rates(
        self,
        rule: IntpArray,
        t: Int64Array,
        *,
        v: Float64Array,
        usable: BoolArray,
        first_of: IntpArray,
        ends: IntpArray,
    ) -> Float64Array:
        """Per pair (sorted by rule, time): |change per second| since the rule's previous
        usable point (in the batch, else carried from the last); NaN where unknown."""
        at = np.arange(len(rule))
        latest = np.maximum.accumulate(np.where(usable, at, -1))
        prev = np.r_[-1, latest[:-1]]
        inside = prev >= first_of
        pv = np.where(inside, v[np.maximum(prev, 0)], self._last_v[rule])
        pt = np.where(inside, t[np.maximum(prev, 0)], self._last_t[rule])
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.abs(v - pv) / ((t - pt) / 1e9)
        rate = np.where(usable & (t > pt), rate, np.nan)
        is_rate = self.kind[rule] == ConditionKind.RATE
        last_usable = latest[ends]
        carry = (last_usable >= first_of[ends]) & is_rate[ends]
        self._last_v[rule[ends][carry]] = v[last_usable[carry]]
        self._last_t[rule[ends][carry]] = t[last_usable[carry]]
        return rate

    def _references(
        self,
        rule: IntpArray,
        t: Int64Array,
        *,
        tag: Int64Array,
        ts: Int64Array,
        value: Float64Array,
        quality: UInt32Array,
    ) -> Float64Array:
        """Per pair: the setpoint in force at its time (the last usable setpoint point at
        or before it in this batch, else the one carried); NaN for other rules."""
        ref = self.reference[rule]
        out = np.where(ref >= 0, self._last_v[rule], np.nan)
        good = ~is_bad(quality) & ~np.isnan(value)
        for r in np.unique(ref[ref >= 0]).tolist():  # a few setpoint tags
            mine = np.flatnonzero((tag == r) & good)
            if not len(mine):
                continue
            mine = mine[np.argsort(ts[mine], kind="stable")]
            pairs = np.flatnonzero(ref == r)
            at = np.searchsorted(ts[mine], t[pairs], side="right") - 1
            found = at >= 0
            out[pairs[found]] = value[mine[at[found]]]
        return out

    def _follow_references(
        self, tag: Int64Array, ts: Int64Array, value: Float64Array, quality: UInt32Array
    ) -> None:
        """Carry each deviation rule's setpoint: the newest usable point of its tag."""
        deviation = np.flatnonzero(self.kind == ConditionKind.DEVIATION)
        if not len(deviation) or not len(tag):
            return
        good = ~is_bad(quality) & ~np.isnan(value)
        for r in np.unique(self.reference[deviation]).tolist():
            mine = np.flatnonzero((tag == r) & good)
            if not len(mine):
                continue
            newest = mine[np.argsort(ts[mine], kind="stable")[-1]]  # of equal times: the last
            rules = deviation[self.reference[deviation] == r]
            fresher = rules[self._last_t[rules] <= ts[newest]]
            self._last_v[fresher] = value[newest]
            self._last_t[fresher] = ts[newest]

    def _pairs(self, tag: Int64Array) -> tuple[IntpArray, IntpArray]:
        """Every (point, rule) pair whose rule watches the point's tag."""
        lo = np.searchsorted(self._sorted_tags, tag, side="left")
        hi = np.searchsorted(self._sorted_tags, tag, side="right")
        count = hi - lo
        total = int(count.sum())
        point = np.repeat(np.arange(len(tag)), count)
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        rule = self._by_tag[np.repeat(lo, count) + offset]
        return point.astype(np.intp), rule.astype(np.intp)

    def _decide(self, rule: IntpArray, v: Float64Array, q: UInt32Array) -> npt.NDArray[np.int8]:
        """Per pair: 1 sets the condition, 0 clears it, -1 leaves it (inside the deadband,
        or a point this rule cannot judge). ``v`` is what the rule measures: the value, its
        rate of change or its deviation."""
        kind, limit, band = self.kind[rule], self.limit[rule], self.deadband[rule]
        bad = is_bad(q)
        usable = ~bad & ~np.isnan(v)
        high = np.isin(kind, [ConditionKind.HIGH, ConditionKind.RATE, ConditionKind.DEVIATION])
        with np.errstate(invalid="ignore"):
            on = np.select(
                [high, kind == ConditionKind.LOW, kind == ConditionKind.STATE],
                [v > limit, v < limit, v == limit],
                bad,
            )
            off = np.select(
                [high, kind == ConditionKind.LOW, kind == ConditionKind.STATE],
                [v <= limit - band, v >= limit + band, v != limit],
                ~bad,
            )
        judged = usable | (kind == ConditionKind.BAD_QUALITY)
        decision = np.full(len(rule), -1, np.int8)
        decision[judged & off] = 0
        decision[judged & on] = 1
        return decision


def _no_changes() -> ConditionChanges:
    return ConditionChanges(
        np.zeros(0, np.intp), np.zeros(0, np.int64), np.zeros(0, np.bool_), np.zeros(0)
    )


class ExpressionConditions:
    """Rules whose condition is an expression over several tags (see
    :mod:`shopfloor.model.expressions`): evaluated at every point of any input, in time
    order, with each input's last value carried. While an input has no usable value (none
    yet, after a restart, or a Bad point) the condition stays as it was: the Bad-quality
    rule is the one that speaks of lost data.

    Args:
        expressions: per rule, the compiled expression and its inputs as name → tag id.
    """

    def __init__(self, expressions: list[tuple[Expression, dict[str, int]]]) -> None:
        self._rules = expressions
        n = len(expressions)
        self.active: BoolArray = np.zeros(n, np.bool_)
        self.seen: Int64Array = np.full(n, np.iinfo(np.int64).min, np.int64)
        self._last = [dict.fromkeys(inputs, np.nan) for _, inputs in expressions]

    def __len__(self) -> int:
        return len(self._rules)

    def evaluate(
        self, tag: Int64Array, ts: Int64Array, value: Float64Array, quality: UInt32Array
    ) -> ConditionChanges:
        """Where the expressions' conditions changed (rule = position among these rules)."""
        out: list[ConditionChanges] = []
        usable_value = np.where(is_bad(quality), np.nan, value)
        for r, (expression, inputs) in enumerate(self._rules):
            ids = np.fromiter(inputs.values(), np.int64, len(inputs))
            mine = np.flatnonzero(np.isin(tag, ids) & (ts >= self.seen[r]))
            if not len(mine):
                continue
            mine = mine[np.argsort(ts[mine], kind="stable")]
            t, v, k = ts[mine], usable_value[mine], tag[mine]
            at = np.arange(len(mine))
            columns = {}
            for name, tag_id in inputs.items():
                latest = np.maximum.accumulate(np.where(k == tag_id, at, -1))
                column = np.where(latest >= 0, v[np.maximum(latest, 0)], self._last[r][name])
                columns[name] = column
                self._last[r][name] = float(column[-1])
            known = np.logical_and.reduce([~np.isnan(col) for col in columns.values()])
            decided = np.maximum.accumulate(np.where(known, at, -1))
            state = np.where(
                decided >= 0,
                expression.evaluate(columns)[np.maximum(decided, 0)],
                self.active[r],
            )
            before = np.r_[self.active[r], state[:-1]]
            changed = np.flatnonzero(state != before)
            if len(changed):
                out.append(
                    ConditionChanges(
                        np.full(len(changed), r, np.intp), t[changed], state[changed], v[changed]
                    )
                )
            self.active[r] = state[-1]
            self.seen[r] = t[-1]
        if not out:
            return _no_changes()
        return ConditionChanges(
            np.concatenate([c.rule for c in out]),
            np.concatenate([c.ts for c in out]),
            np.concatenate([c.active for c in out]),
            np.concatenate([c.value for c in out]),
        )
