"""Continuous-time machine histories, built lazily one segment at a time.

A machine's history is a list of segments. Within a segment the state is constant and
every continuous quantity has a closed form from the segment's start values: temperature
is a first-order lag towards a state-dependent target, wear grows exponentially while
running. So the sampler evaluates any timestamps at once, without stepping, and the
history does not depend on how a caller chops simulated time into calls.

Random stops are competing clocks of remaining *running* time, so the history is the
same whatever the sample period. Segments are drawn from the machine's own random
generator in time order, only as far as a caller has sampled.

Injected faults are events. An event cuts the history at its time: everything after
is dropped and drawn again with the event applied. Segments before the plant's current
time are never changed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from shopfloor.simulator.profiles import DownReason, MachineProfile, State, Stop

NS_PER_S = 1_000_000_000
NS_PER_H = 3600 * NS_PER_S
NEVER_NS = 2**62
"""A clock that never runs out (about 146 years)."""

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Causes that end a segment besides a random stop (whose cause is its index in stops).
JOB_END = -1
WEAR_TRIP = -2
RESUME = -3


class Op(IntEnum):
    """What an injected event does to a machine."""

    DOWN = 1
    WEAR = 2
    HEAT = 3


@dataclass(frozen=True, slots=True)
class Event:
    """An injected change at time ``at``; ``seq`` orders events at the same time."""

    at: int
    seq: int
    op: Op
    reason: int = 0
    value: float = 0.0
    duration: int = 0


@dataclass(slots=True)
class Segment:
    """A stretch of constant state ``[start, end)``.

    ``natural_end`` is when the state would end by itself, and ``cause`` why; ``end`` is
    earlier when an event cuts the segment.
    """

    start: int
    end: int
    natural_end: int
    cause: int


S = TypeVar("S", bound=Segment)


def _event_at(event: Event) -> int:
    return event.at


def _event_key(event: Event) -> tuple[int, int]:
    return (event.at, event.seq)


def _seg_start(seg: Segment) -> int:
    return seg.start


class Timeline(Generic[S]):
    """The lazily drawn history of one machine; subclasses say how one segment follows another.

    Args:
        sentinel: a 1 ns segment ending at the start time whose values are the initial
            conditions; its ``natural_end`` lies beyond its ``end``, so the first real
            segment continues its state.
    """

    def __init__(self, sentinel: S) -> None:
        self.segments: list[S] = [sentinel]
        self._events: list[Event] = []
        self._seq = 0

    def schedule(
        self, at: int, op: Op, *, reason: int = 0, value: float = 0.0, duration: int = 0
    ) -> None:
        """Add an event at ``at`` and redraw the history from then on."""
        event = Event(at, self._seq, op, reason, value, duration)
        self._seq += 1
        bisect.insort(self._events, event, key=_event_key)
        self._cut(at)

    def extend(self, t_last: int) -> None:
        """Draw segments until one covers ``t_last``."""
        segs = self.segments
        while segs[-1].end <= t_last:
            last = segs[-1]
            lo = bisect.bisect_right(self._events, last.start, key=_event_at)
            hi = bisect.bisect_right(self._events, last.end, key=_event_at)
            segs.append(self._after(last, self._events[lo:hi]))

    def covering(self, t_first: int, t_last: int) -> list[S]:
        """Return the segments from the one holding ``t_first`` to the one holding ``t_last``."""
        self.extend(t_last)
        i0 = bisect.bisect_right(self.segments, t_first, key=_seg_start) - 1
        i1 = bisect.bisect_right(self.segments, t_last, key=_seg_start)
        return self.segments[max(i0, 0) : i1]

    def prune(self, now: int) -> None:
        """Forget segments and events that ended before ``now``."""
        drop = 0
        while drop < len(self.segments) - 1 and self.segments[drop].end < now:
            drop += 1
        del self.segments[:drop]
        keep = bisect.bisect_left(self._events, now, key=_event_at)
        del self._events[:keep]

    def _close(self, seg: S) -> S:
        """Set ``seg.end``: its natural end, or the first event after its start if earlier."""
        i = bisect.bisect_right(self._events, seg.start, key=_event_at)
        nxt = self._events[i].at if i < len(self._events) else NEVER_NS
        seg.end = min(seg.natural_end, nxt)
        return seg

    def _cut(self, x: int) -> None:
        i = bisect.bisect_left(self.segments, x, key=_seg_start) - 1
        if i < 0:  # only before the start time, which callers rule out
            raise ValueError("cannot change the history before it starts")
        del self.segments[i + 1 :]
        if self.segments[i].end > x:
            self._truncate(self.segments[i], x)

    def _truncate(self, seg: S, x: int) -> None:
        seg.end = x

    def _after(self, seg: S, events: list[Event]) -> S:
        """Return the segment that starts where ``seg`` ends, applying ``events`` there."""
        raise NotImplementedError


def _empty_i64() -> Int64Array:
    return np.empty(0, dtype=np.int64)


def _empty_f64() -> Float64Array:
    return np.empty(0, dtype=np.float64)


def _empty_bool() -> BoolArray:
    return np.empty(0, dtype=np.bool_)


@dataclass(slots=True)
class StateSegment(Segment):
    """A segment of a RUNNING/IDLE/SETUP/DOWN machine with its values at ``start``."""

    state: int
    reason: int
    stop_end: int
    clocks: tuple[int, ...]
    job_left: int
    new_job: bool
    renew: bool
    wear0: float
    wear_rate: float
    heat: float
    rise0: tuple[float, ...]
    target: tuple[float, ...]
    speed: float
    parts0: int
    scrap0: int
    cycle0: float
    part_ts: Int64Array = field(default_factory=_empty_i64)
    part_scrap: BoolArray = field(default_factory=_empty_bool)
    part_cycle: Float64Array = field(default_factory=_empty_f64)


@dataclass(frozen=True, slots=True)
class StateView:
    """A state machine evaluated at sample times (every array has one row per sample).

    Attributes:
        state: State values.
        reason: DownReason values.
        rise: temperature rise above ambient, one row per thermal (K).
        wear: vibration above healthy, mm/s (zeros without wear).
        speed: the job's speed set point (whatever the state).
        parts: cumulative parts made.
        scrap: cumulative scrap.
        cycle: duration of the last completed cycle, s.
        phase: fraction of the ideal cycle since the last completion or resume.
    """

    state: npt.NDArray[np.int64]
    reason: npt.NDArray[np.int64]
    rise: Float64Array
    wear: Float64Array
    speed: Float64Array
    parts: Int64Array
    scrap: Int64Array
    cycle: Float64Array
    phase: Float64Array


class StateTimeline(Timeline[StateSegment]):
    """History of a machine with jobs, random stops, heat, wear and (maybe) parts.

    Args:
        profile: the machine's profile (with any per-machine overrides applied).
        rng: the machine's own generator for its events.
        start_ns: when the history starts; the machine is running, warm, mid-job.
    """

    def __init__(self, profile: MachineProfile, rng: np.random.Generator, *, start_ns: int) -> None:
        self._p = profile
        self._rng = rng
        self._tau = tuple(th.tau_s for th in profile.thermals)
        wear0, rate = 0.0, 0.0
        if profile.wear is not None:
            life = self._draw_life()
            rate = profile.wear.rate_for_life(life)
            consumed = rng.uniform(0.0, 0.9) * life
            wear0 = profile.wear.knee * math.expm1(rate * consumed)
        parts0 = scrap0 = 0
        cycle0 = 0.0
        if profile.output is not None:
            parts0 = int(rng.integers(1_000, 50_000))
            scrap0 = round(parts0 * profile.output.scrap_base)
            cycle0 = profile.output.ideal_cycle_s
        target = self._targets(State.RUNNING, 0.0)
        sentinel = StateSegment(
            start=start_ns - 1,
            end=start_ns,
            natural_end=start_ns + 1,
            cause=RESUME,
            state=State.RUNNING,
            reason=DownReason.NONE,
            stop_end=start_ns,
            clocks=tuple(self._draw_clock(s) for s in profile.stops),
            job_left=int(rng.random() * self._draw_job()),
            new_job=False,
            renew=False,
            wear0=wear0,
            wear_rate=rate,
            heat=0.0,
            rise0=target,
            target=target,
            speed=self._draw_speed(),
            parts0=parts0,
            scrap0=scrap0,
            cycle0=cycle0,
        )
        super().__init__(sentinel)

    # ------------------------------------------------------------------ draws
    def _draw_clock(self, stop: Stop) -> int:
        if math.isinf(stop.every_h):
            return NEVER_NS
        return max(NS_PER_S, int(self._rng.exponential(stop.every_h) * NS_PER_H))

    def _draw_stop(self, stop: Stop) -> int:
        minutes = stop.median_min * math.exp(stop.spread * float(self._rng.standard_normal()))
        minutes = min(max(minutes, stop.median_min / 5, 0.5), stop.median_min * 8)
        return int(minutes * 60 * NS_PER_S)

    def _draw_job(self) -> int:
        if self._p.job_median_h is None:
            return NEVER_NS
        hours = self._p.job_median_h * math.exp(0.6 * float(self._rng.standard_normal()))
        return max(10 * 60 * NS_PER_S, int(hours * NS_PER_H))

    def _draw_speed(self) -> float:
        sp = self._p.speed
        return 0.0 if sp is None else float(self._rng.uniform(sp.low, sp.high))

    def _draw_life(self) -> float:
        assert self._p.wear is not None
        return self._p.wear.life_median_h * math.exp(0.4 * float(self._rng.standard_normal()))

    # ------------------------------------------------------------ closed forms
    def _targets(self, state: int, heat: float) -> tuple[float, ...]:
        extra = heat if state != State.DOWN else 0.0
        return tuple(th.rise[state - 1] + extra for th in self._p.thermals)

    def _rise_at(self, seg: StateSegment, x: int) -> tuple[float, ...]:
        dt_s = (x - seg.start) / NS_PER_S
        return tuple(
            g + (r - g) * math.exp(-dt_s / tau)
            for r, g, tau in zip(seg.rise0, seg.target, self._tau, strict=True)
        )

    def _wear_at(self, seg: StateSegment, x: int) -> float:
        wear = self._p.wear
        if wear is None or seg.state != State.RUNNING:
            return seg.wear0
        dt_h = (x - seg.start) / NS_PER_H
        return (seg.wear0 + wear.knee) * math.exp(min(seg.wear_rate * dt_h, 50.0)) - wear.knee

    def _wear_trip_in(self, wear0: float, rate: float) -> int:
        wear = self._p.wear
        if wear is None or rate <= 0:
            return NEVER_NS
        limit = wear.trip - wear.healthy
        if wear0 >= limit:
            return 0
        hours = math.log((limit + wear.knee) / (wear0 + wear.knee)) / rate
        return min(NEVER_NS, math.ceil(hours * NS_PER_H))

    # ------------------------------------------------------------- transitions
    def _after(self, seg: StateSegment, events: list[Event]) -> StateSegment:
        p = self._p
        x = seg.end
        running = seg.state == State.RUNNING
        dt = x - seg.start if running else 0
        clocks = tuple(c - dt for c in seg.clocks)
        job_left = seg.job_left - dt
        wear = self._wear_at(seg, x)
        state, reason, stop_end = seg.state, seg.reason, seg.stop_end
        new_job, renew, wear_rate, speed = seg.new_job, seg.renew, seg.wear_rate, seg.speed
        if x == seg.natural_end:
            cause = seg.cause
            if cause >= 0:
                stop = p.stops[cause]
                state, reason, stop_end = stop.state, stop.reason, x + self._draw_stop(stop)
                clocks = (*clocks[:cause], self._draw_clock(stop), *clocks[cause + 1 :])
            elif cause == JOB_END and p.changeover is not None:
                stop = p.changeover
                state, reason, stop_end = stop.state, stop.reason, x + self._draw_stop(stop)
                new_job = True
            elif cause == WEAR_TRIP and p.wear is not None:
                stop = p.wear.repair
                state, reason, stop_end = stop.state, stop.reason, x + self._draw_stop(stop)
                renew = True
            else:
                state, reason = State.RUNNING, DownReason.NONE
                if new_job:
                    job_left, speed, new_job = self._draw_job(), self._draw_speed(), False
                if renew:
                    wear, wear_rate, renew = 0.0, self._new_wear_rate(), False
        heat = seg.heat
        for ev in events:
            if ev.op is Op.DOWN:
                state, reason, stop_end = State.DOWN, ev.reason, x + ev.duration
            elif ev.op is Op.WEAR:
                wear_rate *= ev.value
            elif ev.op is Op.HEAT:
                heat += ev.value
        if state == State.RUNNING:
            natural, cause = self._next_stop(clocks, job_left, self._wear_trip_in(wear, wear_rate))
            natural_end = x + max(natural, 0)
        else:
            natural_end, cause = max(stop_end, x), RESUME
        nxt = StateSegment(
            start=x,
            end=x,
            natural_end=natural_end,
            cause=cause,
            state=state,
            reason=reason,
            stop_end=stop_end,
            clocks=clocks,
            job_left=job_left,
            new_job=new_job,
            renew=renew,
            wear0=wear,
            wear_rate=wear_rate,
            heat=heat,
            rise0=self._rise_at(seg, x),
            target=self._targets(state, heat),
            speed=speed,
            parts0=seg.parts0 + len(seg.part_ts),
            scrap0=seg.scrap0 + int(np.count_nonzero(seg.part_scrap)),
            cycle0=float(seg.part_cycle[-1]) if len(seg.part_cycle) else seg.cycle0,
        )
        self._close(nxt)
        if state == State.RUNNING:
            self._make_parts(nxt)
        return nxt

    @staticmethod
    def _next_stop(clocks: tuple[int, ...], job_left: int, trip: int) -> tuple[int, int]:
        """Return the running time until the first competing stop, and its cause."""
        natural, cause = NEVER_NS, RESUME
        for i, c in enumerate(clocks):
            if c < natural:
                natural, cause = c, i
        if job_left < natural:
            natural, cause = job_left, JOB_END
        if trip < natural:
            natural, cause = trip, WEAR_TRIP
        return natural, cause

    def _new_wear_rate(self) -> float:
        assert self._p.wear is not None
        return self._p.wear.rate_for_life(self._draw_life())

    def _truncate(self, seg: StateSegment, x: int) -> None:
        seg.end = x
        keep = int(np.searchsorted(seg.part_ts, x, side="left"))
        seg.part_ts = seg.part_ts[:keep]
        seg.part_scrap = seg.part_scrap[:keep]
        seg.part_cycle = seg.part_cycle[:keep]

    def _make_parts(self, seg: StateSegment) -> None:
        """Draw the cycles completed in a running segment and which of them are scrap."""
        out = self._p.output
        span = seg.end - seg.start
        if out is None or span <= 0:
            return
        rng = self._rng
        n = int(span // (out.ideal_cycle_s * NS_PER_S)) + 1
        jitter = np.abs(rng.normal(0.0, 0.01, n))
        slow = np.where(rng.random(n) < out.slow_prob, rng.uniform(0.05, out.slow_max, n), 0.0)
        # a micro-stop longer than a few means would be a real stop, which the state covers
        pause = np.minimum(rng.exponential(out.micro_mean_s, n), 4 * out.micro_mean_s)
        micro = np.where(rng.random(n) < out.micro_prob, pause, 0.0)
        cycle = out.ideal_cycle_s * (1.0 + jitter + slow) + micro
        ts = seg.start + np.cumsum(np.rint(cycle * NS_PER_S).astype(np.int64))
        k = int(np.searchsorted(ts, seg.end, side="left"))
        ts, cycle = ts[:k], cycle[:k]
        rel_s = (ts - seg.start) / NS_PER_S
        q = out.quality_channel
        tq = seg.target[q]
        rise = tq + (seg.rise0[q] - tq) * np.exp(-rel_s / self._tau[q])
        dev = np.abs(rise - self._p.thermals[q].rise[0])
        prob = out.scrap_base + out.gain_per_k * np.maximum(dev - out.tolerance_k, 0.0)
        if self._p.wear is not None:
            w = self._p.wear
            grown = np.exp(np.minimum(seg.wear_rate * rel_s / 3600.0, 50.0))
            wear = (seg.wear0 + w.knee) * grown - w.knee
            prob = prob + out.wear_gain * (np.minimum(wear / (w.trip - w.healthy), 1.0)) ** 2
        seg.part_ts = ts
        seg.part_scrap = rng.random(k) < np.minimum(prob, 0.6)
        seg.part_cycle = cycle

    # ----------------------------------------------------------------- sampling
    def evaluate(self, t: Int64Array) -> StateView:
        """Evaluate the history at the sorted sample times ``t``."""
        segs = self.covering(int(t[0]), int(t[-1]))
        m = len(segs)
        starts = np.fromiter((s.start for s in segs), np.int64, m)
        idx = np.searchsorted(starts, t, side="right") - 1
        seg_state = np.fromiter((s.state for s in segs), np.int64, m)
        state = seg_state[idx]
        running = state == State.RUNNING
        dt_s = (t - starts[idx]).astype(np.float64) / NS_PER_S
        n_th = len(self._tau)
        rise = np.empty((n_th, len(t)))
        if n_th:
            rise0 = np.array([s.rise0 for s in segs], dtype=np.float64).reshape(m, n_th)
            target = np.array([s.target for s in segs], dtype=np.float64).reshape(m, n_th)
            for c, tau in enumerate(self._tau):
                g = target[idx, c]
                rise[c] = g + (rise0[idx, c] - g) * np.exp(-dt_s / tau)
        wear = np.zeros(len(t))
        if self._p.wear is not None:
            w0 = np.fromiter((s.wear0 for s in segs), np.float64, m)[idx]
            rate = np.fromiter((s.wear_rate for s in segs), np.float64, m)[idx]
            knee = self._p.wear.knee
            grown = (w0 + knee) * np.exp(np.minimum(rate * dt_s / 3600.0, 50.0)) - knee
            wear = np.where(running, grown, w0)
        part_ts = np.concatenate([s.part_ts for s in segs])
        done = np.searchsorted(part_ts, t, side="right")
        scrap_cum = np.zeros(len(part_ts) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([s.part_scrap for s in segs]), out=scrap_cum[1:])
        cycles = np.concatenate([[segs[0].cycle0], *(s.part_cycle for s in segs)])
        last_done = np.concatenate([[np.iinfo(np.int64).min], part_ts])[done]
        anchor = np.maximum(last_done, starts[idx])
        ideal = self._p.output.ideal_cycle_s if self._p.output is not None else 60.0
        phase = np.mod((t - anchor) / (ideal * NS_PER_S), 1.0)
        return StateView(
            state=state,
            reason=np.fromiter((s.reason for s in segs), np.int64, m)[idx],
            rise=rise,
            wear=wear,
            speed=np.fromiter((s.speed for s in segs), np.float64, m)[idx],
            parts=segs[0].parts0 + done,
            scrap=segs[0].scrap0 + scrap_cum[done],
            cycle=cycles[done],
            phase=phase,
        )
