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

**Columns, not calculations.** The machines of one template share their calculations'
expressions, so the calculations are grouped by expression (and by depth in the
dependency order) and each group is evaluated for all its machines at once: one pass of
numpy per group and batch, whatever the number of machines, with the carried values in
one array per group (machines x inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shopfloor.errors import ConfigError
from shopfloor.model import PointBatch, Quality
from shopfloor.model.expressions import Expression, compile_expression
from shopfloor.model.points import Float64Array, Int64Array, UInt32Array

__all__ = ["Calculation", "Calculator", "Carry", "Rows", "evaluate"]

_SEVERITY = np.uint32(0xC0000000)
_BAD = np.uint32(0x80000000)
_UNCERTAIN = np.uint32(0x40000000)
_MIN_TS = np.iinfo(np.int64).min
IntpArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Calculation:
    """One machine's calculated tag.

    Attributes:
        path: the tag's path.
        expression: what it computes.
        inputs: name in the expression → tag path.
        constants: name in the expression → a number of this machine (an attribute).
    """

    path: str
    expression: str
    inputs: Mapping[str, str]
    constants: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rows:
    """Input points of one group of calculations, as columns.

    Attributes:
        machine: per point, the calculation it feeds (its index in the group).
        input: per point, which input it is (index into the group's names).
        ts, value, quality: the point.
    """

    machine: IntpArray
    input: IntpArray
    ts: Int64Array
    value: Float64Array
    quality: UInt32Array

    def __len__(self) -> int:
        return len(self.ts)

    def where(self, mask: npt.NDArray[np.bool_]) -> Rows:
        """The rows where ``mask`` holds."""
        return Rows(
            self.machine[mask],
            self.input[mask],
            self.ts[mask],
            self.value[mask],
            self.quality[mask],
        )


@dataclass(slots=True)
class Carry:
    """Per calculation of a group and input: the last value and quality, and whether the
    input has had one yet (arrays of shape calculations x inputs)."""

    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint32]
    known: npt.NDArray[np.bool_]

    @classmethod
    def empty(cls, calculations: int, inputs: int) -> Carry:
        """No input has had a value."""
        shape = (calculations, inputs)
        return cls(
            np.full(shape, np.nan),
            np.full(shape, int(Quality.BAD_WAITING_FOR_INITIAL_DATA), np.uint32),
            np.zeros(shape, np.bool_),
        )

    def copy(self) -> Carry:
        """An independent copy."""
        return Carry(self.value.copy(), self.quality.copy(), self.known.copy())


def evaluate(
    expression: Expression,
    names: Sequence[str],
    rows: Rows,
    carry: Carry,
    constants: Mapping[str, Float64Array] | None = None,
) -> tuple[Rows, Carry]:
    """The results of ``expression`` at the points of ``rows``, each calculation carrying
    its inputs' last values from ``carry``; returns them (``input`` is 0) and the carry out.
    ``constants`` holds the other names of the expression, one value per calculation.

    A pure function: ``carry`` is not changed. Points of one calculation and moment are
    applied in the order given (a later one of the same input wins), then evaluated once.
    """
    out = carry.copy()
    if not len(rows):
        return rows, out
    order = np.lexsort((rows.ts, rows.machine))  # stable: a moment keeps the given order
    machine, k = rows.machine[order], rows.input[order]
    ts, value, quality = rows.ts[order], rows.value[order], rows.quality[order]
    n = len(ts)
    at = np.arange(n)
    first = np.r_[True, machine[1:] != machine[:-1]]
    last = np.r_[machine[1:] != machine[:-1], True]
    segment = np.maximum.accumulate(np.where(first, at, 0))  # first row of each row's machine
    columns: dict[str, Float64Array] = {
        name: per_machine[machine] for name, per_machine in (constants or {}).items()
    }
    known = np.ones(n, np.bool_)
    bad = np.zeros(n, np.bool_)
    uncertain = np.zeros(n, np.bool_)
    ends = np.flatnonzero(last)
    for j, name in enumerate(names):
        latest = np.maximum.accumulate(np.where(k == j, at, -1))
        has = latest >= segment  # a point of this input earlier in the same machine's rows
        row = np.maximum(latest, 0)
        columns[name] = np.where(has, value[row], carry.value[machine, j])
        q = np.where(has, quality[row], carry.quality[machine, j])
        known &= has | carry.known[machine, j]
        severity = q & _SEVERITY
        bad |= (severity & _BAD) != 0
        uncertain |= severity == _UNCERTAIN
        moved = ends[has[ends]]
        out.value[machine[moved], j] = value[row[moved]]
        out.quality[machine[moved], j] = quality[row[moved]]
        out.known[machine[moved], j] = True
    # one result per calculation and moment, once all of the moment is applied
    emit = known & (last | np.r_[ts[1:] != ts[:-1], True])
    result = expression.values(columns)
    bad |= ~np.isfinite(result)
    code = np.where(bad, _BAD, np.where(uncertain, _UNCERTAIN, np.uint32(0))).astype(np.uint32)
    results = Rows(
        machine[emit],
        np.zeros(int(emit.sum()), np.intp),
        ts[emit],
        np.where(bad, np.nan, result)[emit],
        code[emit],
    )
    return results, out


_GroupKey = tuple[int, str, tuple[str, ...], tuple[str, ...]]
"""Depth, expression, input names, constant names: calculations evaluated together."""


@dataclass(slots=True)
class _Group:
    """Calculations with one expression and depth: one per machine of a template."""

    depth: int
    expression: Expression
    names: tuple[str, ...]
    paths: list[str]
    carry: Carry
    seen: Int64Array
    constants: dict[str, Float64Array]


class Calculator:
    """Every calculated tag of the plant, with the state each carries between batches.

    Args:
        calculations: the plant's calculated tags.

    Raises:
        ConfigError: an expression does not compile, or calculations feed each other in
            a cycle (a template loaded from a file never gets here with either).
    """

    def __init__(self, calculations: Sequence[Calculation]) -> None:
        depth = _depths(calculations)
        groups: dict[_GroupKey, list[Calculation]] = {}
        for calc in calculations:
            key = (
                depth[calc.path],
                calc.expression,
                tuple(sorted(calc.inputs)),
                tuple(sorted(calc.constants)),
            )
            groups.setdefault(key, []).append(calc)
        self._groups: list[_Group] = []
        self._feeds: dict[str, list[tuple[int, int, int]]] = {}
        """Input path → every (group, calculation in it, input) it feeds."""
        for (level, text, names, fixed), members in sorted(groups.items(), key=lambda kv: kv[0][0]):
            try:
                expression = compile_expression(text, {*names, *fixed})
            except ValueError as err:
                raise ConfigError(f"calculation {members[0].path}: {err}") from err
            g = len(self._groups)
            self._groups.append(
                _Group(
                    level,
                    expression,
                    names,
                    [c.path for c in members],
                    Carry.empty(len(members), len(names)),
                    np.full(len(members), _MIN_TS, np.int64),
                    {n: np.array([c.constants[n] for c in members]) for n in fixed},
                )
            )
            for i, calc in enumerate(members):
                for j, name in enumerate(names):
                    self._feeds.setdefault(calc.inputs[name], []).append((g, i, j))
        self.paths = frozenset(c.path for c in calculations)
        """The calculated tags' paths."""

    def __len__(self) -> int:
        return sum(len(g.paths) for g in self._groups)

    def derive(self, batch: PointBatch) -> PointBatch:
        """The calculated points that ``batch``'s points give (an empty batch if none),
        updating the carried state."""
        if not len(batch) or not any(tag in self._feeds for tag in batch.tags):
            return PointBatch.empty()
        sources = [(batch, _fed(batch, self._feeds))]
        derived: list[PointBatch] = []
        depth, taken = 0, 0
        for g, group in enumerate(self._groups):
            if group.depth != depth:  # what the groups before computed feeds the next ones
                depth = group.depth
                fresh = PointBatch.concat(derived[taken:])
                taken = len(derived)
                sources.append((fresh, _fed(fresh, self._feeds)))
            rows = _gather(g, sources)
            if not len(rows):
                continue
            out = self._step(group, rows)
            if len(out):
                derived.append(_batch(group.paths, out))
        return PointBatch.concat(derived)

    @staticmethod
    def _step(group: _Group, rows: Rows) -> Rows:
        """Evaluate one group over its input points, late points apart."""
        late = rows.ts < group.seen[rows.machine]
        parts: list[Rows] = []
        if late.any():
            empty = Carry.empty(*group.carry.value.shape)
            old, _ = evaluate(
                group.expression, group.names, rows.where(late), empty, group.constants
            )
            parts.append(old)
            rows = rows.where(~late)
        if len(rows):
            new, group.carry = evaluate(
                group.expression, group.names, rows, group.carry, group.constants
            )
            np.maximum.at(group.seen, rows.machine, rows.ts)
            parts.append(new)
        if len(parts) == 1:
            return parts[0]
        return Rows(*(np.concatenate([getattr(p, c) for p in parts]) for c in _COLUMNS))


_COLUMNS = ("machine", "input", "ts", "value", "quality")


_Fed = dict[int, tuple[list[int], list[int], list[int]]]
"""Per group: the tags of a batch that feed it (indices into its ``tags``), and for each
the calculation and input it feeds."""


def _fed(source: PointBatch, feeds: Mapping[str, list[tuple[int, int, int]]]) -> _Fed:
    """Which groups the tags of ``source`` feed (one pass over its distinct tags)."""
    out: _Fed = {}
    for t, path in enumerate(source.tags):
        for g, i, j in feeds.get(path, ()):
            tags, machines, inputs = out.setdefault(g, ([], [], []))
            tags.append(t)
            machines.append(i)
            inputs.append(j)
    return out


def _gather(g: int, sources: Sequence[tuple[PointBatch, _Fed]]) -> Rows:
    """The points of ``sources`` that feed group ``g``, with their calculation and input."""
    parts: list[Rows] = []
    for source, fed in sources:
        if g not in fed:
            continue
        tag, machine, inp = fed[g]
        # every row of each fed tag, once per (calculation, input) the tag feeds
        order = np.argsort(source.tag_index, kind="stable")
        counts = np.bincount(source.tag_index, minlength=len(source.tags))
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        tags = np.asarray(tag, np.intp)
        n = counts[tags]
        offsets = np.r_[0, np.cumsum(n)[:-1]]
        picked = order[np.repeat(starts[tags] - offsets, n) + np.arange(int(n.sum()))]
        parts.append(
            Rows(
                np.repeat(np.asarray(machine, np.intp), n),
                np.repeat(np.asarray(inp, np.intp), n),
                source.ts[picked],
                source.value[picked],
                source.quality[picked],
            )
        )
    if not parts:
        z = np.zeros(0, np.intp)
        return Rows(z, z, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint32))
    if len(parts) == 1:
        return parts[0]
    return Rows(*(np.concatenate([getattr(p, c) for p in parts]) for c in _COLUMNS))


def _batch(paths: Sequence[str], rows: Rows) -> PointBatch:
    """Results as a batch whose dictionary holds only the calculations that gave points."""
    used, index = np.unique(rows.machine, return_inverse=True)
    return PointBatch.from_columns(
        [paths[i] for i in used], index, rows.ts, rows.value, rows.quality
    )


def _depths(calculations: Sequence[Calculation]) -> dict[str, int]:
    """Per calculation, how many calculations lie below it (0: it reads only measurements).

    Raises:
        ConfigError: two calculations share a path, or some feed each other in a cycle.
    """
    by_path = {c.path: c for c in calculations}
    if len(by_path) != len(calculations):
        raise ConfigError("two calculations have one path")
    waiting = {c.path: {p for p in c.inputs.values() if p in by_path} for c in calculations}
    readers: dict[str, list[str]] = {}
    for path, deps in waiting.items():
        for dep in deps:
            readers.setdefault(dep, []).append(path)
    depth = {p: 0 for p, deps in waiting.items() if not deps}
    ready = list(depth)
    while ready:
        path = ready.pop()
        for other in readers.get(path, ()):
            waiting[other].discard(path)
            if not waiting[other]:
                reads = by_path[other].inputs.values()
                depth[other] = 1 + max(depth[p] for p in reads if p in by_path)
                ready.append(other)
    if len(depth) != len(calculations):
        stuck = sorted(p for p in by_path if p not in depth)
        raise ConfigError(f"calculations feed each other in a cycle: {', '.join(stuck)}")
    return depth
