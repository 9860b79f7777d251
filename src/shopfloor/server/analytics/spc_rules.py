"""Western Electric and Nelson run rules over the points of a control chart, vectorised.

A control chart's limits catch one wild point; the run rules catch what limits miss: a
shift of one sigma shows up as a run on one side long before a point crosses 3 sigma.
Each rule is a pattern over consecutive plotted points, judged in zones of the chart's
own sigma around its centre line (zone A: 2-3 sigma, B: 1-2, C: within 1).

Western Electric Company, *Statistical Quality Control Handbook* (1956), section 1-B:

- ``WE1``: one point beyond 3 sigma.
- ``WE2``: two of three consecutive points beyond 2 sigma, on the same side.
- ``WE3``: four of five consecutive points beyond 1 sigma, on the same side.
- ``WE4``: eight consecutive points on the same side of the centre line.

Nelson, L. S. (1984) "The Shewhart control chart - tests for special causes", *Journal
of Quality Technology* 16(4), 237-239:

- ``N1``: one point beyond 3 sigma.
- ``N2``: nine points in a row on the same side of the centre line.
- ``N3``: six points in a row steadily increasing or steadily decreasing.
- ``N4``: fourteen points in a row alternating up and down.
- ``N5``: two of three points in a row beyond 2 sigma, on the same side.
- ``N6``: four of five points in a row beyond 1 sigma, on the same side.
- ``N7``: fifteen points in a row within 1 sigma, on either side.
- ``N8``: eight points in a row beyond 1 sigma, on either side (none within 1 sigma).

Conventions (the same as Minitab's, so results compare): a violation is reported at
the point that completes the pattern, and again at every later point that completes it
anew (a run of ten on one side fires ``N2`` at its ninth and tenth points). In the
"k of m" rules the completing point must itself be one of the k. A point exactly on
the centre line is on neither side and breaks runs; equal neighbours break trends and
alternation; a NaN point (an empty subgroup) breaks every pattern it falls in.

Everything here is numpy over whole series: each rule is a boolean mask per point and
a sum over a sliding window, so a year of one-minute subgroups is milliseconds of work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ALL_RULES",
    "NELSON",
    "RULE_TEXT",
    "WESTERN_ELECTRIC",
    "Violation",
    "describe",
    "evaluate_rules",
    "rule_hits",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

WESTERN_ELECTRIC: Final = ("WE1", "WE2", "WE3", "WE4")
NELSON: Final = ("N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8")
ALL_RULES: Final = (*WESTERN_ELECTRIC, *NELSON)

RULE_TEXT: Final[dict[str, str]] = {
    "WE1": "one point beyond 3 sigma",
    "WE2": "2 of 3 consecutive points beyond 2 sigma on the same side",
    "WE3": "4 of 5 consecutive points beyond 1 sigma on the same side",
    "WE4": "8 consecutive points on the same side of the centre line",
    "N1": "one point beyond 3 sigma",
    "N2": "9 points in a row on the same side of the centre line",
    "N3": "6 points in a row steadily increasing or decreasing",
    "N4": "14 points in a row alternating up and down",
    "N5": "2 of 3 points in a row beyond 2 sigma on the same side",
    "N6": "4 of 5 points in a row beyond 1 sigma on the same side",
    "N7": "15 points in a row within 1 sigma",
    "N8": "8 points in a row beyond 1 sigma on either side",
}
"""What each rule means, for messages and the API."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule broken at one point.

    Attributes:
        rule: the rule's id (``WE2``, ``N3`` …).
        index: the point that completes the pattern.
        points: the points that make the pattern, ascending, ``index`` last (for "k of
            m" rules only the k points beyond the zone, not the whole window).
    """

    rule: str
    index: int
    points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _KOfM:
    k: int
    m: int
    zone: float  # beyond this many sigma on one side


@dataclass(frozen=True, slots=True)
class _Run:
    length: int  # points in a row


_K_OF_M: Final = {
    "WE1": _KOfM(1, 1, 3.0),
    "N1": _KOfM(1, 1, 3.0),
    "WE2": _KOfM(2, 3, 2.0),
    "N5": _KOfM(2, 3, 2.0),
    "WE3": _KOfM(4, 5, 1.0),
    "N6": _KOfM(4, 5, 1.0),
}
_SAME_SIDE: Final = {"WE4": _Run(8), "N2": _Run(9)}


def evaluate_rules(
    values: npt.ArrayLike,
    center: npt.ArrayLike,
    sigma: npt.ArrayLike,
    rules: Iterable[str] = WESTERN_ELECTRIC,
) -> list[Violation]:
    """The violations of ``rules`` among the plotted points, by point, then rule order.

    Args:
        values: the plotted points in time order (NaN: no point there).
        center: the centre line, one value or one per point.
        sigma: the sigma of the plotted statistic (a third of the distance from centre
            to control limit), one value or one per point; where it is not above zero
            only the trend and alternation rules (``N3``, ``N4``) can fire.
        rules: rule ids from :data:`ALL_RULES`.

    Raises:
        ValueError: an unknown rule id, or ``center``/``sigma`` of another length.
    """
    x = np.asarray(values, dtype=np.float64)
    wanted = list(dict.fromkeys(rules))
    unknown = [r for r in wanted if r not in RULE_TEXT]
    if unknown:
        raise ValueError(f"unknown rule {unknown[0]!r}; known: {', '.join(ALL_RULES)}")
    z = _standardised(x, center, sigma)
    found: list[Violation] = []
    for rule in wanted:
        hits, windows = rule_hits(rule, x, z)
        for index in np.flatnonzero(hits):
            found.append(Violation(rule, int(index), windows(int(index))))
    found.sort(key=lambda v: (v.index, ALL_RULES.index(v.rule)))
    return found


def _standardised(x: FloatArray, center: npt.ArrayLike, sigma: npt.ArrayLike) -> FloatArray:
    """Each point in sigmas from the centre line (NaN where sigma is not above zero)."""
    c = np.broadcast_to(np.asarray(center, dtype=np.float64), x.shape)
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, (x - c) / np.where(s > 0, s, 1.0), np.nan)


def rule_hits(rule: str, x: FloatArray, z: FloatArray) -> tuple[BoolArray, _Windows]:
    """Where ``rule`` is completed, and a function from such a point to its points.

    Args:
        rule: a rule id.
        x: the plotted points (for trend and alternation rules).
        z: the same points in sigmas from the centre line.
    """
    if rule in _K_OF_M:
        spec = _K_OF_M[rule]
        above = z > spec.zone
        below = z < -spec.zone
        hits = (above & _count_ending(above, spec.m, spec.k)) | (
            below & _count_ending(below, spec.m, spec.k)
        )
        return hits, _Windows(spec.m, above, below)
    if rule in _SAME_SIDE:
        n = _SAME_SIDE[rule].length
        above, below = z > 0, z < 0
        return _count_ending(above, n, n) | _count_ending(below, n, n), _Windows(n)
    if rule == "N3":  # 6 points: 5 differences all of one sign
        diff = np.diff(x)
        up = np.concatenate([[False], diff > 0])[: x.size]
        down = np.concatenate([[False], diff < 0])[: x.size]
        return _count_ending(up, 5, 5) | _count_ending(down, 5, 5), _Windows(6)
    if rule == "N4":  # 14 points: 13 differences, each of the other sign to the last
        sign = np.sign(np.diff(x))
        flips = np.concatenate([[False, False], (sign[1:] * sign[:-1]) < 0])[: x.size]
        return _count_ending(flips, 12, 12), _Windows(14)
    if rule == "N7":
        within = np.abs(z) < 1.0
        return _count_ending(within, 15, 15), _Windows(15)
    if rule == "N8":
        beyond = np.abs(z) > 1.0
        return _count_ending(beyond, 8, 8), _Windows(8)
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(ALL_RULES)}")


class _Windows:
    """The points of a violation: the m-point window ending at it, or within that window
    the points beyond the zone on the completing point's side."""

    def __init__(
        self, m: int, above: BoolArray | None = None, below: BoolArray | None = None
    ) -> None:
        self._m = m
        self._above = above
        self._below = below

    def __call__(self, index: int) -> tuple[int, ...]:
        first = max(0, index - self._m + 1)
        if self._above is None or self._below is None:
            return tuple(range(first, index + 1))
        side = self._above if self._above[index] else self._below
        return tuple(int(i) for i in np.flatnonzero(side[first : index + 1]) + first)


def _count_ending(flags: BoolArray, window: int, at_least: int) -> BoolArray:
    """Per point: whether at least ``at_least`` of the ``window`` flags ending there are
    set (False while fewer than ``window`` points precede)."""
    out = np.zeros(flags.shape, dtype=np.bool_)
    if flags.size < window:
        return out
    counts = sliding_window_view(flags.astype(np.int16), window).sum(axis=1)
    out[window - 1 :] = counts >= at_least
    return out


def describe(rules: Sequence[str]) -> dict[str, str]:
    """The text of each rule id given, for an API answer."""
    return {r: RULE_TEXT[r] for r in rules}
