"""Energy of one machine, slice by slice, from an energy counter or a power tag (pure, numpy).

Energy is additive, so like OEE's components it is computed per slice (cut at every UTC
hour, shift start and end and local midnight: :func:`~.oee.slice_cuts`) and any hour,
shift, day, range, line or plant is a sum of slices. Per slice:

* ``kwh``: all the energy;
* ``producing_kwh``: while the ``state`` tag says running;
* ``idle_kwh``: while not running (idle, setup, down) inside planned production time;
* ``planned_stop_kwh``: while not running outside planned production time (breaks,
  maintenance, between shifts);
* ``unknown_kwh``: while the state is unknown (no state tag, as on an energy meter, or
  no Good state point yet); ``kwh`` is the sum of the four;
* ``good``: good parts made (all of them, not only in planned time: all energy counts);
* ``data_ns``: time covered by readings, so a gap in the data shows as a gap.

Both sources become *pieces*: energy spread evenly over ``[start, end)``, and energy
counted at an instant.

* A counter's increase between two readings (a drop is a reset, or with ``rollover`` the
  shorter way round the dial) is spread evenly between them when they are at most
  ``max_gap`` apart; over a longer gap the metered energy is real but when it was used is
  not known, so it is counted at the later reading rather than spread over time nothing
  is known of (and a state that held then).
* Power is integrated step/hold: a reading holds until the next, at most ``max_gap``.
  Step/hold rather than trapezoid because readings arrive by exception (a deadband): a
  new reading means the value moved, and until then it stayed within the deadband of the
  last one; the trapezoid would draw a ramp across a step change that never happened, and
  across a gap it would invent a value. A Bad reading ends the hold (no data, no energy).

Both rules look back at most ``max_gap``, so reading ``max_gap`` more on both sides
(:func:`read_window`) makes a day computed at once give exactly the sums of its hours
computed one by one.

Within a slice, energy is split by cumulative energy ``E(t)`` (piecewise linear) cut at
every state change and planned-time boundary: a vectorized pass, no loop per point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shopfloor.server.analytics.downtime import Steps
from shopfloor.server.analytics.intervals import Int64Array, Intervals
from shopfloor.server.analytics.oee import Counter, counter_increments, slice_cuts
from shopfloor.server.analytics.shifts import ShiftCalendar

__all__ = [
    "COUNTER",
    "ENERGY_COMPONENTS",
    "POWER",
    "EnergySeries",
    "EnergySlices",
    "Pieces",
    "compute_energy",
    "counter_pieces",
    "good_increments",
    "meter_increments",
    "power_pieces",
    "read_window",
    "summarize_energy",
]

Float64Array = npt.NDArray[np.float64]
NS_PER_H = 3600 * 10**9
COUNTER, POWER = "counter", "power"

ENERGY_COMPONENTS = (
    "kwh",
    "producing_kwh",
    "idle_kwh",
    "planned_stop_kwh",
    "unknown_kwh",
    "good",
    "data_ns",
)
"""The additive figures stored per slice; every energy figure is a function of their sums."""

_PRODUCING, _IDLE, _PLANNED_STOP, _UNKNOWN = 0, 1, 2, 3
_CLASS_NAMES = ("producing_kwh", "idle_kwh", "planned_stop_kwh", "unknown_kwh")


@dataclass(frozen=True, slots=True)
class Pieces:
    """Energy in time: ``kwh[i]`` spread evenly over ``[start[i], end[i])`` (sorted,
    disjoint), and ``at_kwh[j]`` counted at the instant ``at[j]``."""

    start: Int64Array
    end: Int64Array
    kwh: Float64Array
    at: Int64Array
    at_kwh: Float64Array

    def total(self) -> float:
        """All the energy."""
        return float(self.kwh.sum() + self.at_kwh.sum())


def meter_increments(
    value: Float64Array, baseline: float | None, rollover: float | None
) -> Float64Array:
    """Per reading, how much the meter grew since the previous one.

    Without ``rollover`` a drop is a reset and the new value counts from 0 (this is
    :func:`~.oee.counter_increments`, shared with the part counters). With ``rollover``
    (the value the meter wraps at), a drop is taken the shorter way round the dial:
    ``999990 → 5`` at ``1e6`` is a rollover of 15, ``500 → 0`` a reset.
    """
    ts = np.zeros(len(value), dtype=np.int64)
    _, inc = counter_increments(Counter(ts, value.astype(np.float64, copy=True), baseline))
    if rollover is None or not len(value):
        return inc
    prev = np.concatenate(([np.nan if baseline is None else baseline], value[:-1]))
    drop = value < prev
    wrapped = rollover - prev + value
    use = drop & (wrapped < prev - value)
    inc[use] = wrapped[use]
    return inc


def counter_pieces(
    counter: Counter, *, read_start: int, max_gap_ns: int, rollover: float | None = None
) -> Pieces:
    """The energy of a counter's Good readings (in time order) as pieces.

    Args:
        counter: the readings from ``read_start`` and the value in force before them.
        read_start: where the readings start (the baseline's time is before it).
        max_gap_ns: readings further apart: the increase is counted at the later one.
        rollover: the value the meter wraps at, if any.
    """
    ts, v = counter.ts, counter.value
    inc = meter_increments(v, counter.baseline, rollover)
    if not len(ts):
        empty = np.empty(0, dtype=np.int64)
        return Pieces(empty, empty, np.empty(0), empty, np.empty(0))
    # the baseline's own time is unknown: only that it lies before read_start
    prev = np.concatenate(([read_start - max_gap_ns - 1], ts[:-1]))
    spread = (ts - prev <= max_gap_ns) & (ts > prev)
    return Pieces(prev[spread], ts[spread], inc[spread], ts[~spread], inc[~spread])


def power_pieces(ts: Int64Array, kw: Float64Array, *, read_end: int, max_gap_ns: int) -> Pieces:
    """The energy of power readings (in time order; NaN is a Bad reading) as pieces:
    each holds until the next reading, at most ``max_gap_ns`` and not past ``read_end``.

    Of two readings at one time the later one in the input wins.
    """
    last = np.append(ts[1:] != ts[:-1], True) if len(ts) else np.empty(0, dtype=bool)
    ts, kw = ts[last], kw[last]
    nxt = np.append(ts[1:], read_end)
    end = np.minimum(np.minimum(nxt, ts + max_gap_ns), read_end)
    keep = (end > ts) & ~np.isnan(kw)
    s, e = ts[keep], end[keep]
    kwh = kw[keep] * (e - s).astype(np.float64) / NS_PER_H
    empty = np.empty(0, dtype=np.int64)
    return Pieces(s, e, kwh, empty, np.empty(0))


def good_increments(
    parts: Counter | None, good: Counter | None, scrap: Counter | None
) -> tuple[Int64Array, Float64Array]:
    """Good parts made, per point: the good counter's increments; without one, the parts
    counter's minus the scrap counter's (each at its own time); without parts, none."""
    if good is not None:
        return counter_increments(good)
    if parts is None:
        return np.empty(0, dtype=np.int64), np.empty(0)
    ts, inc = counter_increments(parts)
    if scrap is not None:
        s_ts, s_inc = counter_increments(scrap)
        ts, inc = np.concatenate((ts, s_ts)), np.concatenate((inc, -s_inc))
    return ts, inc


@dataclass(frozen=True, slots=True)
class EnergySeries:
    """What one machine's energy is computed from, read for ``[read_start, read_end)``.

    Attributes:
        path: the equipment's path.
        equipment: its id (maintenance windows name it).
        source: ``counter`` or ``power``.
        pieces: the energy in time (:func:`counter_pieces` or :func:`power_pieces`).
        state: the state tag's steps from ``read_start``, or None without a state tag.
        running_state: the state value meaning running.
        good_ts: times of good-part increments.
        good_inc: the increments.
        read_start: where the data read starts.
        read_end: where it ends.
    """

    path: str
    equipment: str
    source: str
    pieces: Pieces
    state: Steps | None
    running_state: int
    good_ts: Int64Array
    good_inc: Float64Array
    read_start: int
    read_end: int


def read_window(start: int, end: int, max_gap_ns: int) -> tuple[int, int]:
    """What to read to compute ``[start, end)`` exactly as part of any longer window:
    ``max_gap`` more on both sides (the furthest a reading's energy reaches)."""
    return start - max_gap_ns, end + max_gap_ns


@dataclass(frozen=True, slots=True)
class EnergySlices:
    """Energy components per slice of ``[start, end)``, as columns (see :class:`~.oee.Slices`)."""

    start: Int64Array
    end: Int64Array
    shift: Int64Array
    shift_start: Int64Array
    values: dict[str, Float64Array]

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def empty(cls) -> EnergySlices:
        """No slices."""
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, none, none, {c: np.empty(0) for c in ENERGY_COMPONENTS})


def _cumulative(pieces: Pieces, origin: int) -> tuple[Float64Array, Float64Array]:
    """Breakpoints (ns after ``origin``, as floats: exact below 104 days) and the energy
    before each, of the spread pieces: ``E(t)`` is linear in between."""
    before = np.concatenate(([0.0], np.cumsum(pieces.kwh)))
    x = np.empty(2 * len(pieces.start))
    y = np.empty(2 * len(pieces.start))
    x[0::2] = (pieces.start - origin).astype(np.float64)
    x[1::2] = (pieces.end - origin).astype(np.float64)
    y[0::2] = before[:-1]
    y[1::2] = before[1:]
    return x, y


def compute_energy(
    series: EnergySeries,
    calendar: ShiftCalendar,
    start: int,
    end: int,
) -> EnergySlices:
    """The energy components of ``series`` for ``[start, end)``, cut into slices.

    With the series read over :func:`read_window`, one call over a day gives the same
    sums as 24 calls over its hours (up to float rounding).

    Args:
        series: the machine's energy, state and good parts.
        calendar: the shift calendar (planned production time).
        start: window start (UTC ns).
        end: window end.
    """
    if end <= start:
        return EnergySlices.empty()
    bounds, shift, shift_start = slice_cuts(calendar, start, end)
    n = len(bounds) - 1
    lo, hi = series.read_start, series.read_end
    planned = calendar.planned(lo, hi, equipment=series.equipment, path=series.path)
    state = series.state
    cuts = [bounds, planned.boundaries()]
    if state is not None:
        cuts.append(state.ts)
    points = np.unique(np.concatenate(cuts))
    points = points[(points >= start) & (points <= end)]
    left = points[:-1]

    pieces = series.pieces
    x, y = _cumulative(pieces, start)
    if len(x):
        e_at = np.interp((points - start).astype(np.float64), x, y, left=0.0, right=y[-1])
    else:
        e_at = np.zeros(len(points))
    seg_kwh = np.diff(e_at)
    seg_of_at = np.searchsorted(points, pieces.at, side="right") - 1
    ok = (pieces.at >= start) & (pieces.at < end)
    seg_kwh = (
        seg_kwh
        + np.bincount(seg_of_at[ok], weights=pieces.at_kwh[ok], minlength=len(left))[: len(left)]
    )

    if state is None:
        cls = np.full(len(left), _UNKNOWN, dtype=np.int64)
    else:
        sv = state.value[np.searchsorted(state.ts, left, side="right") - 1]
        cls = np.where(
            np.isnan(sv),
            _UNKNOWN,
            np.where(
                sv == series.running_state,
                _PRODUCING,
                np.where(planned.contains(left), _IDLE, _PLANNED_STOP),
            ),
        ).astype(np.int64)
    slice_of = np.clip(np.searchsorted(bounds, left, side="right") - 1, 0, max(n - 1, 0))
    by_class = np.bincount(slice_of * 4 + cls, weights=seg_kwh, minlength=n * 4).reshape(n, 4)

    covered = Intervals.union(pieces.start, pieces.end)
    data_ns = covered.measure(bounds[:-1], bounds[1:]).astype(np.float64)
    keep = (series.good_ts >= start) & (series.good_ts < end)
    g_idx = np.searchsorted(bounds, series.good_ts[keep], side="right") - 1
    good = np.bincount(g_idx, weights=series.good_inc[keep], minlength=n).astype(np.float64)

    values: dict[str, Float64Array] = {
        name: by_class[:, k].astype(np.float64) for k, name in enumerate(_CLASS_NAMES)
    }
    values["kwh"] = by_class.sum(axis=1).astype(np.float64)
    values["good"] = good
    values["data_ns"] = data_ns
    return EnergySlices(bounds[:-1], bounds[1:], shift, shift_start, values)


def summarize_energy(
    sums: Mapping[str, float], *, has_state: bool, has_parts: bool
) -> dict[str, object]:
    """The energy figures of summed components.

    The split by state is None when no machine summed has a state tag (an energy meter,
    which tells energy only); ``kwh_per_good_part`` is None without parts or when none
    were good.
    """
    kwh = sums.get("kwh", 0.0)
    good = sums.get("good", 0.0)
    split = {name: (sums.get(name, 0.0) if has_state else None) for name in _CLASS_NAMES}
    return {
        "kwh": kwh,
        **split,
        "good_parts": good if has_parts else None,
        "kwh_per_good_part": kwh / good if has_parts and good > 0 else None,
        "data_s": sums.get("data_ns", 0.0) / 1e9,
    }
