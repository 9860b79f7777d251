"""Stop events from a machine's ``state`` (and ``down_reason``) tag, as numpy run lengths.

A machine's state and reason are step functions: each point's value holds until the
next point. Their change times are merged, and every maximal stretch of one (state,
reason) pair is a *run*; the runs whose state is not running are stop events. A stop
whose reason changes part-way (a jam that turns out to be an electrical fault) is two
events, so each reason is charged exactly the time it was in force.

Runs tile time without gaps or overlaps, which is why availability can never be negative
nor a second counted twice: each nanosecond belongs to exactly one run and, inside
planned production time, to exactly one loss class.

Micro-stops are judged on the whole stretch the machine was not running (idle one
minute, then down one minute is one two-minute stop), so the flag does not depend on
how a reason was recorded. Unknown state (before the first Good point, or a NaN) is a
stop with reason 0: a machine that tells nothing is not producing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shopfloor.config.analytics import DowntimeSection
from shopfloor.server.analytics.intervals import Int64Array

__all__ = [
    "FAILURE",
    "LOSS_NAMES",
    "MINOR",
    "RUN",
    "SETUP",
    "StateRuns",
    "Steps",
    "classify",
    "state_runs",
]

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

RUN, FAILURE, SETUP, MINOR = 0, 1, 2, 3
"""Time classes of a run: running, or a stop charged to breakdowns, setup and
adjustments, or idling and minor stops."""
LOSS_NAMES = {FAILURE: "failure", SETUP: "setup", MINOR: "minor"}
_CLASS_CODE = {"failure": FAILURE, "setup": SETUP, "minor": MINOR}


@dataclass(frozen=True, slots=True)
class Steps:
    """A step function: ``value[i]`` holds from ``ts[i]`` until ``ts[i + 1]``; NaN is unknown."""

    ts: Int64Array
    value: Float64Array

    @classmethod
    def of(
        cls,
        start: int,
        initial: float | None,
        ts: npt.ArrayLike,
        value: npt.ArrayLike,
        good: BoolArray | None = None,
    ) -> Steps:
        """The step function from ``start``: ``initial`` (the value in force then, None if
        unknown) followed by the Good points at or after ``start``, in time order.

        Two points at one time: the later one in the input wins.
        """
        t = np.asarray(ts, dtype=np.int64)
        v = np.asarray(value, dtype=np.float64)
        keep = t >= start
        if good is not None:
            keep &= good
        t = np.concatenate(([start], t[keep]))
        v = np.concatenate(([np.nan if initial is None else initial], v[keep]))
        last = np.append(t[1:] != t[:-1], True)  # the last of equal times wins
        return cls(t[last], v[last])

    def at(self, t: Int64Array) -> Float64Array:
        """The value in force at each time (NaN before the first)."""
        k = np.searchsorted(self.ts, t, side="right") - 1
        out: Float64Array = np.where(k >= 0, self.value[np.maximum(k, 0)], np.nan)
        return out


@dataclass(frozen=True, slots=True)
class StateRuns:
    """Maximal runs of one (state, reason), tiling ``[start[0], end[-1])``.

    Attributes:
        start: run start (UTC ns).
        end: run end (the next run's start, or the window end).
        state: the state (0 when unknown).
        reason: the reason code in force (0 while running, when none or unknown).
        cls: RUN, FAILURE, SETUP or MINOR (set by :func:`classify`; RUN before).
        micro: whether the run belongs to a stop shorter than the micro-stop threshold.
        assigned: whether an operator assigned the reason.
    """

    start: Int64Array
    end: Int64Array
    state: Int64Array
    reason: Int64Array
    cls: Int64Array
    micro: BoolArray
    assigned: BoolArray

    def __len__(self) -> int:
        return len(self.start)

    def stops(self) -> npt.NDArray[np.intp]:
        """Indexes of the runs that are stop events."""
        return np.flatnonzero(self.cls != RUN)


def state_runs(state: Steps, reason: Steps | None, end: int, *, running: int) -> StateRuns:
    """The (state, reason) runs from ``state.ts[0]`` to ``end``.

    Args:
        state: the state tag's steps.
        reason: the reason tag's steps (None: the machine gives no reasons).
        end: where the last run ends.
        running: the state value meaning running.
    """
    t = state.ts if reason is None else np.union1d(state.ts, reason.ts)
    t = t[(t >= state.ts[0]) & (t < end)]
    s = np.nan_to_num(state.at(t), nan=0.0).astype(np.int64)
    r = (
        np.zeros(len(t), dtype=np.int64)
        if reason is None
        else np.nan_to_num(reason.at(t), nan=0.0).astype(np.int64)
    )
    r[s == running] = 0  # a reason changing while running splits nothing
    change = np.ones(len(t), dtype=bool)
    change[1:] = (s[1:] != s[:-1]) | (r[1:] != r[:-1])
    starts = t[change]
    n = len(starts)
    return StateRuns(
        start=starts,
        end=np.append(starts[1:], np.int64(end)),
        state=s[change],
        reason=r[change],
        cls=np.zeros(n, dtype=np.int64),
        micro=np.zeros(n, dtype=bool),
        assigned=np.zeros(n, dtype=bool),
    )


def classify(
    runs: StateRuns, settings: DowntimeSection, *, overrides: Mapping[int, int] | None = None
) -> StateRuns:
    """Runs with operator reasons applied, micro-stops flagged and loss classes set.

    A stop stretch shorter than ``micro_stop`` is a small stop whatever its reason; a
    stop in the setup state is a setup loss; any other takes its reason's class.

    Args:
        runs: from :func:`state_runs`.
        settings: threshold, states and reason classes.
        overrides: operator-assigned reasons by run start (UTC ns).
    """
    reason = runs.reason.copy()
    assigned = np.zeros(len(runs), dtype=bool)
    if overrides:
        keys = np.fromiter(overrides.keys(), dtype=np.int64, count=len(overrides))
        codes = np.fromiter(overrides.values(), dtype=np.int64, count=len(overrides))
        hit = np.isin(runs.start, keys) & (runs.state != settings.running_state)
        order = np.argsort(keys)
        pos = np.searchsorted(keys[order], runs.start[hit])
        reason[hit] = codes[order][pos]
        assigned = hit
    stopped = runs.state != settings.running_state
    # stretches of consecutive stopped runs, their lengths, and each run's stretch
    head = stopped & ~np.concatenate(([False], stopped[:-1]))
    stretch = np.cumsum(head) - 1
    lengths = np.bincount(
        stretch[stopped],
        weights=(runs.end - runs.start)[stopped].astype(np.float64),
        minlength=int(head.sum()),
    )
    micro = np.zeros(len(runs), dtype=bool)
    micro[stopped] = lengths[stretch[stopped]] < settings.micro_stop_ns
    default = _CLASS_CODE[settings.default_class]
    cls = np.full(len(runs), default, dtype=np.int64)
    for code, name in settings.reason_classes.items():
        cls[reason == int(code)] = _CLASS_CODE[name]
    cls[runs.state == settings.setup_state] = SETUP
    cls[micro] = MINOR
    cls[~stopped] = RUN
    return StateRuns(
        start=runs.start,
        end=runs.end,
        state=runs.state,
        reason=reason,
        cls=cls,
        micro=micro,
        assigned=assigned,
    )
