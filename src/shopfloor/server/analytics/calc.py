"""Calculated tags: values computed from other tags of a machine as their points arrive.

A calculation (``[[calculations]]`` in a template, SiteWise's *transform*) has an
expression over inputs. It is evaluated at every point of any input, in time order,
with the last value of each other input carried forward, as expression alarms are; it
gives nothing until every input has had a value. Several points of one moment give one
result, taken once all of them are applied.

**Where it runs.** :class:`Calculator` is the ingest stage's ``derive`` step: the
ingestor appends the derived points to the batch they came from before it publishes and
stores it. So a calculated point is written once and published once, in the same commit
as its inputs, and for an edge's batch it is in the same ledger entry: a batch sent again
stores neither. A calculated point never comes back through ``derive`` (it is not in the
batch that was derived from), so a calculation cannot feed itself; one calculation may
read another, evaluated in dependency order in the same pass (cycles are refused when
the template is loaded and again here).

**Quality.** A result is Bad (value NaN) when any input's carried point is Bad,
Uncertain when any is Uncertain, Good otherwise; a Good result that is not a finite
number (a division by zero) is stored Bad, as a value no one can use.

**Late points.** Points older than the last one a calculation took (an edge's backlog
arriving after a restart) are evaluated among themselves, with no carried values from
the future, and do not change the carried state; results that would need an earlier
value of an input are not computed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shopfloor.errors import ConfigError
from shopfloor.model import PointBatch, Quality
from shopfloor.model.expressions import Expression, compile_expression
from shopfloor.model.points import Float64Array, Int64Array, UInt32Array

__all__ = ["Calculation", "Calculator", "Carry", "Series", "evaluate"]

_SEVERITY = np.uint32(0xC0000000)
_BAD = np.uint32(0x80000000)
_UNCERTAIN = np.uint32(0x40000000)
_MIN_TS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class Calculation:
    """One machine's calculated tag: its path, expression and inputs (name → tag path)."""

    path: str
    expression: str
    inputs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Series:
    """Points of one tag (or one calculation's results) as columns, oldest first."""

    ts: Int64Array
    value: Float64Array
    quality: UInt32Array

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(slots=True)
class Carry:
    """The last value and quality of each input, and whether it has had one yet."""

    value: Float64Array
    quality: UInt32Array
    known: npt.NDArray[np.bool_]

    @classmethod
    def empty(cls, inputs: int) -> Carry:
        """No input has had a value."""
        return cls(
            np.full(inputs, np.nan),
            np.full(inputs, int(Quality.BAD_WAITING_FOR_INITIAL_DATA), np.uint32),
            np.zeros(inputs, np.bool_),
        )


def evaluate(
    expression: Expression,
    names: Sequence[str],
    inputs: Sequence[Series],
    carry: Carry,
) -> tuple[Series, Carry]:
    """The results of ``expression`` at the points of ``inputs`` (one series per name, in
    the order of ``names``), carrying ``carry`` in; returns them and the carry out.

    A pure function: ``carry`` is not changed.
    """
    k = np.concatenate([np.full(len(s), j, np.int32) for j, s in enumerate(inputs)])
    if not len(k):
        return Series(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint32)), carry
    ts = np.concatenate([s.ts for s in inputs])
    value = np.concatenate([s.value for s in inputs])
    quality = np.concatenate([s.quality for s in inputs])
    order = np.argsort(ts, kind="stable")
    k, ts, value, quality = k[order], ts[order], value[order], quality[order]
    at = np.arange(len(k))
    columns: dict[str, Float64Array] = {}
    known = np.ones(len(k), np.bool_)
    bad = np.zeros(len(k), np.bool_)
    uncertain = np.zeros(len(k), np.bool_)
    out = Carry(carry.value.copy(), carry.quality.copy(), carry.known.copy())
    for j, name in enumerate(names):
        latest = np.maximum.accumulate(np.where(k == j, at, -1))
        has = latest >= 0
        row = np.maximum(latest, 0)
        columns[name] = np.where(has, value[row], carry.value[j])
        q = np.where(has, quality[row], carry.quality[j])
        known &= has | carry.known[j]
        severity = q & _SEVERITY
        bad |= (severity & _BAD) != 0
        uncertain |= severity == _UNCERTAIN
        if has[-1]:
            out.value[j], out.quality[j], out.known[j] = value[row[-1]], q[-1], True
    # one result per moment: the last row of each timestamp, once all of it is applied
    emit = known & np.r_[ts[1:] != ts[:-1], True]
    result = expression.values(columns)
    bad |= ~np.isfinite(result)
    code = np.where(bad, _BAD, np.where(uncertain, _UNCERTAIN, np.uint32(0))).astype(np.uint32)
    return (
        Series(ts[emit], np.where(bad, np.nan, result)[emit], code[emit]),
        out,
    )


@dataclass(slots=True)
class _State:
    calc: Calculation
    expression: Expression
    names: tuple[str, ...]
    paths: tuple[str, ...]
    carry: Carry
    seen: int = _MIN_TS
    dependents: list[int] = field(default_factory=list)


class Calculator:
    """Every calculated tag of the plant, with the state each carries between batches.

    Args:
        calculations: the plant's calculated tags.

    Raises:
        ConfigError: an expression does not compile, or calculations feed each other in
            a cycle (a template loaded from a file never gets here with either).
    """

    def __init__(self, calculations: Sequence[Calculation]) -> None:
        ordered = _dependency_order(calculations)
        rank = {c.path: i for i, c in enumerate(ordered)}
        self._states: list[_State] = []
        self._by_input: dict[str, list[int]] = {}
        for i, calc in enumerate(ordered):
            try:
                expression = compile_expression(calc.expression, set(calc.inputs))
            except ValueError as err:
                raise ConfigError(f"calculation {calc.path}: {err}") from err
            names = tuple(calc.inputs)
            paths = tuple(calc.inputs[n] for n in names)
            self._states.append(_State(calc, expression, names, paths, Carry.empty(len(names))))
            for path in set(calc.inputs.values()):
                self._by_input.setdefault(path, []).append(i)
                if path in rank:
                    self._states[rank[path]].dependents.append(i)
        self.paths = frozenset(rank)
        """The calculated tags' paths."""

    def __len__(self) -> int:
        return len(self._states)

    def derive(self, batch: PointBatch) -> PointBatch:
        """The calculated points that ``batch``'s points give (an empty batch if none),
        updating the carried state."""
        watched = [i for i, tag in enumerate(batch.tags) if tag in self._by_input]
        if not watched or not len(batch):
            return PointBatch.empty()
        series = _split(batch, watched)
        pending = sorted({c for tag in series for c in self._by_input[tag]})
        queued = set(pending)
        results: dict[str, Series] = {}
        while pending:
            i = heapq.heappop(pending)
            state = self._states[i]
            out = self._step(state, series)
            if not len(out):
                continue
            series[state.calc.path] = results[state.calc.path] = out
            for d in state.dependents:
                if d not in queued:
                    queued.add(d)
                    heapq.heappush(pending, d)
        return _batch(results)

    def _step(self, state: _State, series: Mapping[str, Series]) -> Series:
        """Evaluate one calculation over the points of its inputs in ``series``."""
        empty = Series(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint32))
        inputs = [series.get(p, empty) for p in state.paths]
        current = [_where(s, s.ts >= state.seen) for s in inputs]
        late = [_where(s, s.ts < state.seen) for s in inputs]
        parts: list[Series] = []
        if any(len(s) for s in late):
            old, _ = evaluate(state.expression, state.names, late, Carry.empty(len(inputs)))
            parts.append(old)
        if any(len(s) for s in current):
            new, state.carry = evaluate(state.expression, state.names, current, state.carry)
            state.seen = max(state.seen, *(int(s.ts[-1]) for s in current if len(s)))
            parts.append(new)
        if len(parts) == 1:
            return parts[0]
        return Series(
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.quality for p in parts]),
        )


def _where(s: Series, mask: npt.NDArray[np.bool_]) -> Series:
    if mask.all():
        return s
    return Series(s.ts[mask], s.value[mask], s.quality[mask])


def _split(batch: PointBatch, tags: Sequence[int]) -> dict[str, Series]:
    """The points of the tags ``tags`` (indices into ``batch.tags``), per path, in time order."""
    order = np.argsort(batch.tag_index, kind="stable")
    counts = np.bincount(batch.tag_index, minlength=len(batch.tags))
    starts = np.r_[0, np.cumsum(counts)]
    out: dict[str, Series] = {}
    for t in tags:
        rows = order[starts[t] : starts[t + 1]]
        if not len(rows):
            continue
        rows = rows[np.argsort(batch.ts[rows], kind="stable")]
        out[batch.tags[t]] = Series(batch.ts[rows], batch.value[rows], batch.quality[rows])
    return out


def _batch(results: Mapping[str, Series]) -> PointBatch:
    if not results:
        return PointBatch.empty()
    paths = list(results)
    return PointBatch.from_columns(
        paths,
        np.concatenate([np.full(len(results[p]), i, np.int32) for i, p in enumerate(paths)]),
        np.concatenate([results[p].ts for p in paths]),
        np.concatenate([results[p].value for p in paths]),
        np.concatenate([results[p].quality for p in paths]),
    )


def _dependency_order(calculations: Sequence[Calculation]) -> list[Calculation]:
    """``calculations`` with each after the calculations it reads (Kahn's algorithm)."""
    by_path = {c.path: c for c in calculations}
    if len(by_path) != len(calculations):
        raise ConfigError("two calculations have one path")
    waiting = {c.path: {p for p in c.inputs.values() if p in by_path} for c in calculations}
    readers: dict[str, list[str]] = {}
    for path, deps in waiting.items():
        for dep in deps:
            readers.setdefault(dep, []).append(path)
    ready = [p for p, deps in waiting.items() if not deps]
    ordered: list[Calculation] = []
    while ready:
        path = ready.pop()
        ordered.append(by_path[path])
        for other in readers.get(path, ()):
            waiting[other].discard(path)
            if not waiting[other]:
                ready.append(other)
    if len(ordered) != len(calculations):
        stuck = sorted(p for p, deps in waiting.items() if deps)
        raise ConfigError(f"calculations feed each other in a cycle: {', '.join(stuck)}")
    return ordered
