"""Sorted, disjoint time intervals as two int64 columns, and their measure.

Every analytics question here ("how much planned time lies in this hour", "how much of
this stop was during a break") is a measure of an intersection. Keeping intervals sorted
and disjoint makes that a cumulative sum and two binary searches, with no Python loop per
point, and makes double counting impossible by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Int64Array", "Intervals"]

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Intervals:
    """Half-open intervals ``[start[i], end[i])``, sorted, disjoint, non-empty."""

    start: Int64Array
    end: Int64Array

    @classmethod
    def empty(cls) -> Intervals:
        """No time at all."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64))

    @classmethod
    def union(cls, starts: npt.ArrayLike, ends: npt.ArrayLike) -> Intervals:
        """The union of possibly overlapping, unsorted intervals (empty ones dropped)."""
        s = np.asarray(starts, dtype=np.int64)
        e = np.asarray(ends, dtype=np.int64)
        keep = e > s
        s, e = s[keep], e[keep]
        if not len(s):
            return cls.empty()
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        reach = np.maximum.accumulate(e)
        # a new interval begins where its start lies beyond everything before it
        new = np.empty(len(s), dtype=bool)
        new[0] = True
        new[1:] = s[1:] > reach[:-1]
        heads = np.flatnonzero(new)
        tails = np.append(heads[1:] - 1, len(s) - 1)
        return cls(s[heads], reach[tails])

    def __len__(self) -> int:
        return len(self.start)

    def total(self) -> int:
        """The measure in nanoseconds."""
        return int((self.end - self.start).sum())

    def covered_before(self, t: npt.ArrayLike) -> Int64Array:
        """Per time in ``t``: the measure of these intervals before it."""
        times = np.asarray(t, dtype=np.int64)
        lengths = np.concatenate(([0], np.cumsum(self.end - self.start)))
        k = np.searchsorted(self.start, times, side="right")
        out: Int64Array = lengths[k]
        inside = k > 0
        last_end = self.end[np.maximum(k - 1, 0)] if len(self) else np.zeros_like(times)
        over = np.where(inside, np.clip(last_end - times, 0, None), 0)
        return out - over

    def measure(self, a: npt.ArrayLike, b: npt.ArrayLike) -> Int64Array:
        """Per pair, the measure of these intervals inside ``[a, b)`` (0 when b <= a)."""
        lo = np.asarray(a, dtype=np.int64)
        hi = np.maximum(np.asarray(b, dtype=np.int64), lo)
        out: Int64Array = self.covered_before(hi) - self.covered_before(lo)
        return out

    def contains(self, t: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per time, whether it lies inside an interval."""
        times = np.asarray(t, dtype=np.int64)
        k = np.searchsorted(self.start, times, side="right") - 1
        if not len(self):
            return np.zeros(len(times), dtype=bool)
        ok: npt.NDArray[np.bool_] = (k >= 0) & (times < self.end[np.maximum(k, 0)])
        return ok

    def minus(self, other: Intervals) -> Intervals:
        """These intervals without ``other``'s time."""
        if not len(self) or not len(other):
            return self
        points = np.unique(np.concatenate((self.start, self.end, other.start, other.end)))
        left, right = points[:-1], points[1:]
        keep = self.contains(left) & ~other.contains(left)
        return Intervals.union(left[keep], right[keep])

    def clip(self, a: int, b: int) -> Intervals:
        """These intervals inside ``[a, b)``."""
        s = np.maximum(self.start, a)
        e = np.minimum(self.end, b)
        keep = e > s
        return Intervals(s[keep], e[keep])

    def boundaries(self) -> Int64Array:
        """Every start and end, for splitting time into elementary segments."""
        out: Int64Array = np.concatenate((self.start, self.end))
        return out
