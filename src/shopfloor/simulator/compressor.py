"""A simulated screw compressor: load/unload cycling on a receiver, power and outlet heat.

Loaded, the receiver pressure rises linearly at ``capacity - demand``; unloaded it falls
at ``demand``; the compressor loads at ``p_load`` and unloads at ``p_unload``. While it is
DOWN the pressure keeps falling with the demand until the receiver is empty. Each phase
is a segment of the machine's history, so pressure is exact at any sample time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shopfloor.model import DataType
from shopfloor.simulator.machines import (
    REASON_TAG,
    STATE_TAG,
    EnergyCounter,
    Float64Array,
    Int64Array,
    TagSpec,
    ambient_c,
    machine_rngs,
    power_tags,
)
from shopfloor.simulator.profiles import CompressorProfile, DownReason, State, Stop
from shopfloor.simulator.timeline import (
    NEVER_NS,
    NS_PER_H,
    NS_PER_S,
    RESUME,
    Event,
    Op,
    Segment,
    Timeline,
)

SWITCH = -1
DEMAND = -2


@dataclass(slots=True)
class CompressorSegment(Segment):
    """A load, unload or down phase with its values at ``start``."""

    state: int
    reason: int
    loaded: bool
    p0: float
    slope: float
    demand: float
    demand_left: int
    stop_end: int
    clocks: tuple[int, ...]
    heat: float
    rise0: float
    target: float


class CompressorTimeline(Timeline[CompressorSegment]):
    """History of one compressor.

    Args:
        profile: the compressor's profile.
        rng: its own generator for events.
        start_ns: when the history starts (running, mid-cycle, warm).
    """

    def __init__(
        self, profile: CompressorProfile, rng: np.random.Generator, *, start_ns: int
    ) -> None:
        self._p = profile
        self._rng = rng
        loaded = bool(rng.random() < 0.5)
        demand = self._draw_demand()
        target = self._target(State.RUNNING, loaded, 0.0)
        sentinel = CompressorSegment(
            start=start_ns - 1,
            end=start_ns,
            natural_end=start_ns + 1,
            cause=RESUME,
            state=State.RUNNING,
            reason=DownReason.NONE,
            loaded=loaded,
            p0=float(rng.uniform(profile.p_load, profile.p_unload)),
            slope=0.0,
            demand=demand,
            demand_left=self._draw_demand_left(),
            stop_end=start_ns,
            clocks=tuple(self._draw_clock(s) for s in profile.stops),
            heat=0.0,
            rise0=target,
            target=target,
        )
        super().__init__(sentinel)

    def _draw_demand(self) -> float:
        p = self._p
        share = min(max(p.demand_mean + p.demand_sd * float(self._rng.standard_normal()), 0.1), 0.9)
        return share * p.capacity_bar_s

    def _draw_demand_left(self) -> int:
        minutes = self._rng.exponential(self._p.demand_every_min)
        return max(NS_PER_S, int(minutes * 60 * NS_PER_S))

    def _draw_clock(self, stop: Stop) -> int:
        return max(NS_PER_S, int(self._rng.exponential(stop.every_h) * NS_PER_H))

    def _draw_stop(self, stop: Stop) -> int:
        minutes = stop.median_min * math.exp(stop.spread * float(self._rng.standard_normal()))
        return int(min(max(minutes, stop.median_min / 5), stop.median_min * 8) * 60 * NS_PER_S)

    def _target(self, state: int, loaded: bool, heat: float) -> float:
        rise = self._p.outlet.rise
        if state != State.RUNNING:
            return rise[3]
        return (rise[0] if loaded else rise[1]) + heat

    @staticmethod
    def pressure_at(seg: CompressorSegment, x: int) -> float:
        """Receiver pressure at ``x`` within ``seg``."""
        return max(seg.p0 + seg.slope * (x - seg.start) / NS_PER_S, 0.0)

    def _after(self, seg: CompressorSegment, events: list[Event]) -> CompressorSegment:
        p = self._p
        x = seg.end
        dt = x - seg.start
        pressure = self.pressure_at(seg, x)
        running = seg.state == State.RUNNING
        clocks = tuple(c - dt for c in seg.clocks) if running else seg.clocks
        demand, demand_left = seg.demand, seg.demand_left - dt
        state, reason, loaded, stop_end = seg.state, seg.reason, seg.loaded, seg.stop_end
        if x == seg.natural_end:
            cause = seg.cause
            if cause >= 0:
                stop = p.stops[cause]
                state, reason, stop_end = stop.state, stop.reason, x + self._draw_stop(stop)
                clocks = (*clocks[:cause], self._draw_clock(stop), *clocks[cause + 1 :])
            elif cause == SWITCH:
                loaded = not loaded
            elif cause == DEMAND:
                demand, demand_left = self._draw_demand(), self._draw_demand_left()
            else:
                state, reason, loaded = State.RUNNING, DownReason.NONE, pressure < p.p_unload
        heat = seg.heat
        for ev in events:
            if ev.op is Op.DOWN:
                state, reason, stop_end = State.DOWN, ev.reason, x + ev.duration
            elif ev.op is Op.HEAT:
                heat += ev.value
        natural, cause = demand_left, DEMAND
        if state == State.RUNNING:
            if loaded:
                slope = p.capacity_bar_s - demand
                switch = (p.p_unload - pressure) / slope
            else:
                slope = -demand
                switch = (pressure - p.p_load) / demand
            switch_ns = math.ceil(max(switch, 0.0) * NS_PER_S)
            if switch_ns < natural:
                natural, cause = switch_ns, SWITCH
            for i, c in enumerate(clocks):
                if c < natural:
                    natural, cause = c, i
        else:
            slope = -demand
            if stop_end - x < natural:
                natural, cause = stop_end - x, RESUME
        nxt = CompressorSegment(
            start=x,
            end=x,
            natural_end=x + max(min(natural, NEVER_NS), 0),
            cause=cause,
            state=state,
            reason=reason,
            loaded=loaded and state == State.RUNNING,
            p0=pressure,
            slope=slope,
            demand=demand,
            demand_left=demand_left,
            stop_end=stop_end,
            clocks=clocks,
            heat=heat,
            rise0=seg.target + (seg.rise0 - seg.target) * math.exp(-dt / NS_PER_S / p.outlet.tau_s),
            target=self._target(state, loaded, heat),
        )
        return self._close(nxt)


COMPRESSOR_STATIC_TAGS = (
    STATE_TAG,
    REASON_TAG,
    TagSpec("loaded", "", "Compressor loaded (delivering air)", DataType.BOOL, eng_high=1.0),
    TagSpec("pressure", "bar", "Receiver pressure (gauge)", eng_high=10.0),
)


def compressor_tags(profile: CompressorProfile) -> tuple[TagSpec, ...]:
    """Return the tags of a compressor, in output order."""
    th = profile.outlet
    return (
        *COMPRESSOR_STATIC_TAGS,
        TagSpec(th.tag, "degC", th.description, eng_high=th.eng_high),
        *power_tags(profile.rated_kw),
    )


class Compressor:
    """A screw compressor's signals.

    Args:
        machine_id: seeds its generators.
        profile: its profile with overrides applied.
        seed: the plant's seed.
        start_ns: when its history starts.
    """

    def __init__(
        self, machine_id: str, profile: CompressorProfile, *, seed: int, start_ns: int
    ) -> None:
        events, self._noise = machine_rngs(seed, machine_id)
        self.profile = profile
        self.tags = compressor_tags(profile)
        self._energy = EnergyCounter(float(np.round(events.uniform(1e4, 2e5), 1)))
        self.timeline = CompressorTimeline(profile, events, start_ns=start_ns)

    def sample(self, t: Int64Array) -> dict[str, Float64Array]:
        """Return every tag's values at the sorted times ``t``."""
        p = self.profile
        segs = self.timeline.covering(int(t[0]), int(t[-1]))
        m = len(segs)
        starts = np.fromiter((s.start for s in segs), np.int64, m)
        idx = np.searchsorted(starts, t, side="right") - 1
        dt_s = (t - starts[idx]).astype(np.float64) / NS_PER_S
        state = np.fromiter((s.state for s in segs), np.int64, m)[idx]
        loaded = np.fromiter((s.loaded for s in segs), np.bool_, m)[idx]
        p0 = np.fromiter((s.p0 for s in segs), np.float64, m)[idx]
        slope = np.fromiter((s.slope for s in segs), np.float64, m)[idx]
        pressure = np.maximum(p0 + slope * dt_s, 0.0)
        rise0 = np.fromiter((s.rise0 for s in segs), np.float64, m)[idx]
        target = np.fromiter((s.target for s in segs), np.float64, m)[idx]
        rise = target + (rise0 - target) * np.exp(-dt_s / p.outlet.tau_s)
        z = self._noise.standard_normal((len(t), 3))
        running = state == State.RUNNING
        span = p.p_unload - p.p_load
        share = np.where(
            loaded,
            0.92 + 0.08 * (pressure - p.p_load) / span,
            np.where(running, p.unloaded_share, 0),
        )
        noise = np.where(running, p.power_noise, 0.0) * z[:, 2]
        power = np.maximum(p.rated_kw * (share + noise), 0.0)
        return {
            "state": state.astype(np.float64),
            "down_reason": np.fromiter((s.reason for s in segs), np.float64, m)[idx],
            "loaded": loaded.astype(np.float64),
            "pressure": np.maximum(pressure + p.pressure_noise * z[:, 0], 0.0),
            p.outlet.tag: ambient_c(t) + rise + p.outlet.noise * z[:, 1],
            "power_kw": power,
            "energy_kwh": self._energy.integrate(t, power),
        }
