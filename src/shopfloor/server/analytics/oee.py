"""OEE components of one machine, slice by slice, from its raw points (pure, numpy).

OEE = Availability × Performance × Quality, with

* A = run time / planned production time,
* P = ideal cycle time × total parts / run time (capped at 1, flagged when above),
* Q = good parts / total parts.

Ratios do not add up; their parts do. So what is computed and stored are the
*components* (planned, run and ideal time, parts, and the loss times) per slice of time,
and any range, line or shift is a sum of slices before the ratios are taken. A line's
OEE is thereby weighted by planned time and parts, never an average of machine ratios.

Slices are cut at every UTC hour, every shift start and end and every local midnight,
so an hour, a shift or a day is always a whole number of slices. Everything is measured
inside planned production time: run time, stops, and the parts counted (a part counts
when its counter point's time lies in planned production time). Time before a machine's
first state ever is not planned (it was not monitored yet); a state lost later (a Bad
point) is a stop.

The six big losses (Nakajima), as time:

* breakdowns: stops whose reason's class is ``failure`` (and unexplained stops);
* setup and adjustments: stops in the setup state, or with a ``setup`` reason;
* small stops: micro-stops, and stops with a ``minor`` reason (idling);
* reduced speed: run time − ideal time of the parts made;
* startup and production rejects: scrap × ideal cycle time. The counters do not tell
  startup rejects from production rejects, so both are one figure (``rejects``).

They add up: planned − ideal time of good parts = the five figures, exactly (when P ≤ 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shopfloor.config.analytics import DowntimeSection
from shopfloor.server.analytics.downtime import (
    FAILURE,
    MINOR,
    RUN,
    SETUP,
    StateRuns,
    Steps,
    classify,
    state_runs,
)
from shopfloor.server.analytics.intervals import Int64Array, Intervals
from shopfloor.server.analytics.shifts import ShiftCalendar

__all__ = [
    "COMPONENTS",
    "Counter",
    "MachineSeries",
    "Slices",
    "compute_slices",
    "counter_increments",
    "machine_runs",
    "read_window",
    "slice_cuts",
    "summarize",
]

Float64Array = npt.NDArray[np.float64]
HOUR_NS = 3600 * 10**9

COMPONENTS = (
    "planned_ns",
    "run_ns",
    "ideal_ns",
    "total",
    "good",
    "scrap",
    "reject_ns",
    "breakdown_ns",
    "setup_ns",
    "small_stop_ns",
    "stops",
    "micro_stops",
)
"""The additive figures stored per slice; every OEE figure is a function of their sums."""


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter's Good points, and its value in force before them (None if unknown)."""

    ts: Int64Array
    value: Float64Array
    baseline: float | None = None


def counter_increments(counter: Counter) -> tuple[Int64Array, Float64Array]:
    """Per point, how much the counter grew since the previous one.

    A drop is a reset (a PLC restart, a shift reset): the new value counts from 0, so
    ``100, 102, 3`` adds ``2`` then ``3``. The first point adds its growth over the
    baseline, or nothing when the baseline is unknown.
    """
    v = counter.value
    if not len(v):
        return counter.ts, v
    prev = np.concatenate(([np.nan if counter.baseline is None else counter.baseline], v[:-1]))
    inc = v - prev
    reset = inc < 0
    inc[reset] = v[reset]
    inc[np.isnan(inc)] = 0.0
    return counter.ts, inc


@dataclass(frozen=True, slots=True)
class MachineSeries:
    """What one machine's OEE is computed from, read for ``[read_start, read_end)``.

    Attributes:
        path: the equipment's path.
        equipment: its id (maintenance windows name it).
        ideal_cycle_s: the ideal time per part.
        state: the state tag's steps from ``read_start``.
        reason: the reason tag's steps, if the machine has one.
        parts: the total parts counter, if any.
        good: the good parts counter, if any (else good = total − scrap).
        scrap: the scrap counter, if any (else scrap = total − good).
        read_end: where the data read ends (the state is assumed to hold until then).
        overrides: operator-assigned reasons by stop start.
    """

    path: str
    equipment: str
    ideal_cycle_s: float
    state: Steps
    reason: Steps | None
    parts: Counter | None
    good: Counter | None
    scrap: Counter | None
    read_end: int
    overrides: Mapping[int, int] = field(default_factory=dict)

    @property
    def state_known(self) -> bool:
        """Whether the state is known at any time of the window (else: not monitored)."""
        return bool((~np.isnan(self.state.value)).any())

    @property
    def first_state_ns(self) -> int:
        """When the state is first known in the window (``read_end`` if never): time
        before it is not monitored, neither planned time nor a stop."""
        known = np.flatnonzero(~np.isnan(self.state.value))
        return int(self.state.ts[known[0]]) if len(known) else self.read_end

    @property
    def read_start(self) -> int:
        """Where the data read starts."""
        return int(self.state.ts[0])


def machine_runs(series: MachineSeries, settings: DowntimeSection) -> StateRuns:
    """The machine's classified runs over its whole read window."""
    runs = state_runs(series.state, series.reason, series.read_end, running=settings.running_state)
    return classify(runs, settings, overrides=series.overrides)


@dataclass(frozen=True, slots=True)
class Slices:
    """Components per slice of ``[start, end)``, as columns.

    Attributes:
        start: slice start (UTC ns).
        end: slice end.
        shift: index into the calendar's shift names, or -1 outside every shift.
        shift_start: start of the shift worked (0 outside every shift).
        values: each of :data:`COMPONENTS` per slice.
    """

    start: Int64Array
    end: Int64Array
    shift: Int64Array
    shift_start: Int64Array
    values: dict[str, Float64Array]

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def empty(cls) -> Slices:
        """No slices (a machine that never reported its state)."""
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, none, none, {c: np.empty(0) for c in COMPONENTS})


def _increments_by_slice(
    counter: Counter | None, bounds: Int64Array, planned: Intervals
) -> Float64Array | None:
    if counter is None:
        return None
    ts, inc = counter_increments(counter)
    keep = (ts >= bounds[0]) & (ts < bounds[-1]) & planned.contains(ts)
    idx = np.searchsorted(bounds, ts[keep], side="right") - 1
    out = np.bincount(idx, weights=inc[keep], minlength=len(bounds) - 1)
    return out.astype(np.float64)


def slice_cuts(
    calendar: ShiftCalendar, start: int, end: int
) -> tuple[Int64Array, Int64Array, Int64Array]:
    """Where ``[start, end)`` is cut into slices, and the shift worked in each slice.

    Cuts fall on every UTC hour, shift start and end and local midnight, so an hour, a
    shift or a day is a whole number of slices (energy is cut the same way as OEE).

    Returns:
        the slice bounds (one more than slices), per slice the index of the shift worked
        (-1 outside every shift) and that shift's start (0 outside every shift).
    """
    shifts = calendar.instances(start, end)
    cuts = [
        np.array([start, end], dtype=np.int64),
        np.arange((start // HOUR_NS + 1) * HOUR_NS, end, HOUR_NS, dtype=np.int64),
        shifts.start,
        shifts.end,
        calendar.day_starts(start, end),
    ]
    bounds = np.unique(np.concatenate(cuts))
    bounds = bounds[(bounds >= start) & (bounds <= end)]
    n = len(bounds) - 1
    inst = shifts.at(bounds[:-1])
    known = np.maximum(inst, 0) if len(shifts.start) else np.zeros(0, dtype=np.int64)
    shift = shifts.shift[known] if len(known) else np.full(n, -1, dtype=np.int64)
    shift_start = shifts.start[known] if len(known) else np.zeros(n, dtype=np.int64)
    return (
        bounds,
        np.where(inst >= 0, shift, -1).astype(np.int64),
        np.where(inst >= 0, shift_start, 0).astype(np.int64),
    )


def read_window(
    calendar: ShiftCalendar, settings: DowntimeSection, start: int, end: int
) -> tuple[int, int]:
    """What to read to compute ``[start, end)`` exactly as part of any longer window.

    ``micro_stop`` more on both sides, so a stop crossing an end is judged micro or not
    on what is known (one cut by the read window is then at least that long, hence never
    a micro-stop); and back to the start of the shift then worked, so a stop is counted
    once per shift wherever the window begins.
    """
    margin = settings.micro_stop_ns
    lo = start - margin
    worked = calendar.instances(lo, lo + 1)
    if len(worked.start):
        lo = min(lo, int(worked.start[0]) - 1)
    return lo, end + margin


def compute_slices(
    series: MachineSeries,
    calendar: ShiftCalendar,
    settings: DowntimeSection,
    start: int,
    end: int,
) -> Slices:
    """The components of ``series`` for ``[start, end)``, cut into slices.

    With the series read over :func:`read_window`, one call over a day gives the same
    sums as 24 calls over its hours.

    Args:
        series: the machine's points.
        calendar: the shift calendar.
        settings: downtime settings (micro-stop threshold, reason classes).
        start: window start (UTC ns).
        end: window end.
    """
    lo, hi = series.read_start, series.read_end
    bounds, shift, shift_start = slice_cuts(calendar, start, end)
    n = len(bounds) - 1
    planned = calendar.planned(lo, hi, equipment=series.equipment, path=series.path)
    first_known = min(series.first_state_ns, hi)
    if first_known > lo:  # before its first state ever the machine was not monitored
        planned = planned.minus(Intervals(np.array([lo]), np.array([first_known])))
    runs = machine_runs(series, settings)

    # elementary segments: no slice, planned interval or run changes inside one. They
    # span the whole read window, so a stop's first planned instant is seen as such.
    points = np.unique(np.concatenate((bounds, planned.boundaries(), runs.start, runs.end)))
    points = points[(points >= lo) & (points <= hi)]
    left, right = points[:-1], points[1:]
    inside = (left >= start) & (left < end)
    slice_of = np.clip(np.searchsorted(bounds, left, side="right") - 1, 0, max(n - 1, 0))
    run_of = np.searchsorted(runs.start, left, side="right") - 1
    in_plan = planned.contains(left)
    weight = np.where(in_plan & inside, right - left, 0).astype(np.float64)
    cls = runs.cls[run_of]
    counts = np.bincount(slice_of * 4 + cls, weights=weight, minlength=n * 4)
    by_class: Float64Array = counts.astype(np.float64).reshape(n, 4)

    # a stop is counted once per shift it costs planned time in, where it first does
    # (so one spanning a break counts once, one running on into the next shift twice)
    worked = calendar.instances(lo, hi)
    key = run_of * (len(worked.start) + 1) + worked.at(left) + 1
    costs = np.flatnonzero(in_plan & (cls != RUN))
    _, first = np.unique(key[costs], return_index=True)
    begins = np.zeros(len(left), dtype=bool)
    begins[costs[first]] = True
    begins &= inside
    micro = runs.micro[run_of]
    stops = np.bincount(slice_of[begins & ~micro], minlength=n).astype(np.float64)
    micro_stops = np.bincount(slice_of[begins & micro], minlength=n).astype(np.float64)

    total = _increments_by_slice(series.parts, bounds, planned)
    good = _increments_by_slice(series.good, bounds, planned)
    scrap = _increments_by_slice(series.scrap, bounds, planned)
    zero = np.zeros(n)
    if total is None:
        total = (good if good is not None else zero) + (scrap if scrap is not None else zero)
    if good is None:
        good = total - (scrap if scrap is not None else zero)
    if scrap is None:
        scrap = total - good
    ideal_ns = series.ideal_cycle_s * 1e9

    values: dict[str, Float64Array] = {
        "planned_ns": planned.measure(bounds[:-1], bounds[1:]).astype(np.float64),
        "run_ns": by_class[:, RUN],
        "ideal_ns": np.round(total * ideal_ns),
        "total": total,
        "good": good,
        "scrap": scrap,
        "reject_ns": np.round(scrap * ideal_ns),
        "breakdown_ns": by_class[:, FAILURE],
        "setup_ns": by_class[:, SETUP],
        "small_stop_ns": by_class[:, MINOR],
        "stops": stops,
        "micro_stops": micro_stops,
    }
    return Slices(
        start=bounds[:-1],
        end=bounds[1:],
        shift=shift,
        shift_start=shift_start,
        values=values,
    )


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def summarize(sums: Mapping[str, float]) -> dict[str, object]:
    """OEE, its factors and the six big losses (in seconds) from summed components.

    A factor is None when its denominator is 0 (no planned time, no run time, no
    parts). Performance above 1 (the ideal cycle time is set too long, or parts were
    counted that were made outside the run time seen) is capped at 1 and flagged.
    """
    planned = sums.get("planned_ns", 0.0)
    run = sums.get("run_ns", 0.0)
    ideal = sums.get("ideal_ns", 0.0)
    total = sums.get("total", 0.0)
    good = sums.get("good", 0.0)
    availability = _ratio(run, planned)
    performance = _ratio(ideal, run)
    capped = performance is not None and performance > 1.0
    if performance is not None:
        performance = min(performance, 1.0)
    quality = _ratio(good, total)
    oee = None
    if availability is not None and performance is not None and quality is not None:
        oee = availability * performance * quality
    elif availability == 0.0:
        oee = 0.0  # planned, never ran: nothing to measure speed or quality on, OEE is 0
    s = 1e9
    return {
        "availability": availability,
        "performance": performance,
        "quality": quality,
        "oee": oee,
        "performance_capped": capped,
        "planned_s": planned / s,
        "run_s": run / s,
        "ideal_s": ideal / s,
        "total": total,
        "good": good,
        "scrap": sums.get("scrap", 0.0),
        "stops": int(sums.get("stops", 0.0)),
        "micro_stops": int(sums.get("micro_stops", 0.0)),
        "losses": {
            "breakdowns_s": sums.get("breakdown_ns", 0.0) / s,
            "setup_adjustments_s": sums.get("setup_ns", 0.0) / s,
            "small_stops_s": sums.get("small_stop_ns", 0.0) / s,
            "reduced_speed_s": max(run - ideal, 0.0) / s,
            "rejects_s": sums.get("reject_ns", 0.0) / s,
        },
    }
