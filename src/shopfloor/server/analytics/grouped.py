"""A range of hourly sums, grouped by hour, shift or day: stored hours where they exist,
the rest computed on demand — the one algorithm behind OEE and energy answers.

Whole hours in ``[start, end)`` come from the analytics file as SQL sums; the partial
hours at the ends, the open hour and hours not stored (yet, or invalidated) are computed
from history with the same function the hourly jobs store with, so an answer does not
depend on which hours happened to be stored. Lines and ranges sum components; ratios are
made from the sums afterwards, never averaged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from shopfloor.server.analytics.oee import HOUR_NS
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.analytics.store_base import AnalyticsStorage, GroupSums

__all__ = ["HourlySlices", "SumSource", "edges", "gaps", "group_key", "grouped_sums"]

T = TypeVar("T")
Item = TypeVar("Item", bound="_HasPath")
Key = tuple[object, ...]


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


class HourlySlices(Protocol):
    """What :func:`grouped_sums` needs of computed slices (OEE's and energy's)."""

    @property
    def start(self) -> npt.NDArray[np.int64]: ...
    @property
    def end(self) -> npt.NDArray[np.int64]: ...
    @property
    def shift(self) -> npt.NDArray[np.int64]: ...
    @property
    def shift_start(self) -> npt.NDArray[np.int64]: ...
    @property
    def values(self) -> Mapping[str, npt.NDArray[np.float64]]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SumSource:
    """How one kind of hourly sums is stored and computed.

    Attributes:
        kind: the kind of rows in the analytics file (``"oee"``, ``"energy"``).
        components: the additive columns summed.
        calendar: the shift calendar (group keys).
        store_call: runs a function on the analytics store's thread.
        read_start: where the read for computing ``[lo, hi)`` starts (values in force
            there are looked up once per distinct start).
        values_before: the values in force at a time, for the items to compute.
        slices: computes the slices of one item over ``[lo, hi)``.
        known_paths: the tag paths the historian has.
    """

    kind: str
    components: Sequence[str]
    calendar: ShiftCalendar
    store_call: Callable[[Callable[[AnalyticsStorage], Any]], Awaitable[Any]]
    read_start: Callable[[int, int], int]
    values_before: Callable[[list[Any], int, set[str]], Awaitable[Any]]
    slices: Callable[..., Awaitable[HourlySlices]]
    known_paths: Callable[[], Awaitable[set[str]]]


def group_key(calendar: ShiftCalendar, sl: HourlySlices, i: int, group: str) -> Key:
    """The group of slice ``i``: its hour, (shift name, shift start), its day, or all."""
    t = int(sl.start[i])
    if group == "hour":
        return (t // HOUR_NS * HOUR_NS,)
    if group == "shift":
        k = int(sl.shift[i])
        return (calendar.names[k] if k >= 0 else "", int(sl.shift_start[i]))
    if group == "day":
        return (calendar.day_of(t),)
    return ("",)


async def grouped_sums(
    source: SumSource,
    items: Sequence[Item],
    start: int,
    end: int,
    group: str,
) -> list[GroupSums]:
    """The items' summed components over ``[start, end)`` per group, oldest first.

    ``end`` is taken as it is: the caller clamps it to now.
    """
    kind = source.kind
    first = -(-start // HOUR_NS) * HOUR_NS
    last = end // HOUR_NS * HOUR_NS
    paths = [m.path for m in items]
    stored: dict[str, set[int]] = {}
    whole: set[str] = set()  # items with every hour in [first, last) stored
    groups: dict[Key, GroupSums] = {}

    def add(key: Key, lo: int, hi: int, sums: dict[str, float]) -> None:
        g = groups.get(key)
        if g is None:
            groups[key] = GroupSums(key, lo, hi, dict(sums))
            return
        for c in source.components:
            g.sums[c] += sums[c]
        groups[key] = GroupSums(key, min(g.start_ns, lo), max(g.end_ns, hi), g.sums)

    if first < last:
        counts = await source.store_call(lambda s: s.count_hours(paths, first, last, kind=kind))
        whole = {p for p, n in counts.items() if n == (last - first) // HOUR_NS}
        partial = [m.path for m in items if m.path not in whole]
        if partial:
            stored = await source.store_call(
                lambda s: s.stored_hours(partial, first, last, kind=kind)
            )
        rows = await source.store_call(lambda s: s.sum_hours(paths, first, last, group, kind=kind))
        for row in rows:
            add(row.key, row.start_ns, row.end_ns, row.sums)
    known = await source.known_paths()
    todo = [
        (m, lo, hi)
        for m in items
        for lo, hi in (
            edges(start, end, first, last)
            if m.path in whole
            else gaps(start, end, stored.get(m.path))
        )
    ]
    # the values in force where each read starts: one lookup per distinct start
    starts = {source.read_start(lo, hi) for _, lo, hi in todo}
    before = {
        t: await source.values_before([m for m, *_ in todo], t, known) for t in sorted(starts)
    }
    for m, lo, hi in todo:
        sl = await source.slices(m, lo, hi, known=known, before=before[source.read_start(lo, hi)])
        for i in range(len(sl)):
            sums = {c: float(sl.values[c][i]) for c in source.components}
            add(group_key(source.calendar, sl, i, group), int(sl.start[i]), int(sl.end[i]), sums)
    return sorted(groups.values(), key=lambda g: (g.start_ns, g.key))


def edges(start: int, end: int, first: int, last: int) -> list[tuple[int, int]]:
    """The partial hours at both ends of ``[start, end)`` when ``[first, last)`` is stored."""
    return [(lo, hi) for lo, hi in ((start, first), (last, end)) if hi > lo]


def gaps(start: int, end: int, stored: set[int] | None) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` not covered by whole stored hours, merged."""
    stored = stored or set()
    out: list[tuple[int, int]] = []
    h = start // HOUR_NS * HOUR_NS
    while h < end:
        lo, hi = max(start, h), min(end, h + HOUR_NS)
        whole = lo == h and hi == h + HOUR_NS
        if not (whole and h in stored):
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        h += HOUR_NS
    return out
