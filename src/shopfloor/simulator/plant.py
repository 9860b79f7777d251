"""The simulated plant: machines from a layout, sampled together into one PointBatch.

Simulated time is explicit: the caller says when sampling starts and how far apart
samples are, and the plant never reads a clock. Run it in real time (advance one step
each second), faster than real time, or back-fill a month as fast as the CPU allows::

    plant = Plant.default(seed=1)
    batch = plant.advance(start_ns=t0, steps=3600)          # one hour at 1 s
    batch = plant.advance(steps=3600)                       # the next hour

The same seed and the same calls give bit-identical batches, and a machine's signals
depend only on the seed and its id: not on the other machines, their order, or how
time is split into calls (unless a fault is injected, which redraws the future).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from shopfloor.model import PointBatch, Quality, TagMeta
from shopfloor.simulator.compressor import Compressor, compressor_tags
from shopfloor.simulator.faults import Fault, FaultKind
from shopfloor.simulator.layout import MachineSpec, PlantLayout, default_layout
from shopfloor.simulator.machines import (
    METER_TAGS,
    EnergyMeter,
    Float64Array,
    Int64Array,
    StateMachine,
    TagSpec,
    state_machine_tags,
)
from shopfloor.simulator.profiles import (
    PROFILES,
    CompressorProfile,
    MachineProfile,
    MeterProfile,
    Profile,
)
from shopfloor.simulator.timeline import NS_PER_S, Op

logger = logging.getLogger(__name__)

GAP_GRID_NS = 60 * NS_PER_S
"""Across a gap between calls, energy is integrated on a grid this coarse (or the period)."""


def machine_profile(spec: MachineSpec) -> Profile:
    """Return the profile of ``spec``'s kind with the machine's own overrides applied."""
    profile = PROFILES[spec.kind]
    if spec.rated_kw is not None and not isinstance(profile, MeterProfile):
        profile = dataclasses.replace(profile, rated_kw=spec.rated_kw)
    if (
        spec.ideal_cycle_s is not None
        and isinstance(profile, MachineProfile)
        and profile.output is not None
    ):
        output = dataclasses.replace(profile.output, ideal_cycle_s=spec.ideal_cycle_s)
        profile = dataclasses.replace(profile, output=output)
    return profile


def _tag_specs(profile: Profile) -> tuple[TagSpec, ...]:
    if isinstance(profile, MachineProfile):
        return state_machine_tags(profile)
    if isinstance(profile, CompressorProfile):
        return compressor_tags(profile)
    return METER_TAGS


class Plant:
    """A deterministic simulated factory.

    Args:
        layout: the machines and where they sit.
        seed: any non-negative integer; the same seed gives the same plant.
        start_ns: when the simulated history starts (UTC ns); by default the
            ``start_ns`` of the first :meth:`advance`.
    """

    def __init__(self, layout: PlantLayout, *, seed: int = 0, start_ns: int | None = None) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        self.layout = layout
        self.seed = seed
        self._start_ns = start_ns
        self._now: int | None = None
        self._profiles = {m.id: machine_profile(m) for m in layout.machines}
        self._specs = {m.id: _tag_specs(self._profiles[m.id]) for m in layout.machines}
        self._metas: list[TagMeta] = []
        self._position: dict[tuple[str, str], int] = {}
        for m in layout.machines:
            prefix = layout.equipment_path(m)
            for spec in self._specs[m.id]:
                self._position[(m.id, spec.name)] = len(self._metas)
                self._metas.append(spec.meta(prefix))
        self._paths = tuple(meta.path for meta in self._metas)
        self._machines: dict[str, StateMachine | Compressor] = {}
        self._meters: dict[str, EnergyMeter] = {}
        self._pending: list[tuple[str, Fault]] = []
        self._dropouts: list[tuple[int, int, int]] = []  # (tag position, start, end)

    @classmethod
    def default(cls, *, seed: int = 0, start_ns: int | None = None) -> Plant:
        """Return the demo plant (``shopfloor/demo_plant/plant.toml``)."""
        return cls(default_layout(), seed=seed, start_ns=start_ns)

    @property
    def now_ns(self) -> int | None:
        """Time of the next sample :meth:`advance` gives without ``start_ns``; None before."""
        return self._now

    def tags(self) -> list[TagMeta]:
        """Every tag of the plant, in the order of the batch's tag dictionary."""
        return list(self._metas)

    def advance(
        self, *, start_ns: int | None = None, steps: int, period_ns: int = NS_PER_S
    ) -> PointBatch:
        """Sample every tag ``steps`` times, at ``start_ns + k * period_ns``.

        Points are grouped by tag (in :meth:`tags` order), each tag's points in time order.
        A ``start_ns`` later than :attr:`now_ns` skips ahead: the plant runs on through the
        gap unseen. Memory grows with ``steps`` times the number of tags, so back-fill
        long spans in chunks (an hour at 1 s is about 300 000 points).

        Args:
            start_ns: time of the first sample; default :attr:`now_ns`.
            steps: samples per tag.
            period_ns: spacing of the samples.

        Raises:
            ValueError: ``start_ns`` is before :attr:`now_ns`, missing on the first call,
                ``steps`` is negative or ``period_ns`` is not positive.
        """
        if steps < 0 or period_ns <= 0:
            raise ValueError(f"need steps >= 0 and period_ns > 0, not {steps}, {period_ns}")
        if start_ns is None:
            if self._now is None:
                raise ValueError("the first advance needs start_ns (or give Plant a start_ns)")
            start_ns = self._now
        if self._now is None:
            self._start(self._start_ns if self._start_ns is not None else start_ns)
        assert self._now is not None
        if start_ns < self._now:
            raise ValueError(
                f"simulated time only moves forward: start_ns {start_ns} < now {self._now}"
            )
        if start_ns > self._now:
            self._skip(start_ns, period_ns)
        if steps == 0:
            return PointBatch.from_columns(self._paths, [], [], [], [])
        t = start_ns + np.arange(steps, dtype=np.int64) * period_ns
        columns = self._sample(t)
        batch = self._batch(t, columns)
        self._now = int(t[-1]) + period_ns
        self._prune()
        return batch

    def inject(self, machine_id: str, fault: Fault) -> None:
        """Inject ``fault`` into machine ``machine_id``; it changes only the future.

        Raises:
            KeyError: no machine has that id.
            ValueError: the fault is in the past or does not fit the machine (bearing wear
                on a machine without vibration, a sensor failure of an unknown tag, a
                breakdown of a meter).
        """
        spec = self.layout.machine(machine_id)
        profile = self._profiles[machine_id]
        self._check_fault(spec, profile, fault)
        if self._now is None:
            self._pending.append((machine_id, fault))
            return
        at = self._now if fault.at_ns is None else fault.at_ns
        if at < self._now:
            raise ValueError(f"fault at {at} is before the plant's time {self._now}")
        self._apply(machine_id, fault, at)

    def setpoints(self) -> dict[str, tuple[str, str]]:
        """The writable set point tags: path → (machine id, tag name)."""
        found: dict[str, tuple[str, str]] = {}
        for m in self.layout.machines:
            profile = self._profiles[m.id]
            if isinstance(profile, MachineProfile) and profile.speed is not None:
                name = profile.speed.setpoint
                if name is not None:
                    found[f"{self.layout.equipment_path(m)}/{name}"] = (m.id, name)
        return found

    def write_setpoint(self, path: str, value: float) -> float:
        """Set the set point tag at ``path`` from the plant's next sample on, as an operator
        at the machine would; returns the value it holds (clamped to the tag's range).

        Raises:
            KeyError: ``path`` is not a set point of this plant.
            ValueError: the plant has not started (nothing to change yet), or ``value``
                is not a finite number.
        """
        machine_id, _ = self.setpoints()[path]
        if self._now is None:
            raise ValueError("the plant has not started: advance it first")
        if not np.isfinite(value):
            raise ValueError(f"a set point is a finite number, not {value!r}")
        machine = self._machines[machine_id]
        assert isinstance(machine, StateMachine)
        held = machine.set_setpoint(self._now, value)
        logger.info("set point %s = %s from %s", path, held, self._now)
        return held

    # ---------------------------------------------------------------- internals
    def _check_fault(self, spec: MachineSpec, profile: Profile, fault: Fault) -> None:
        kind = fault.kind
        if kind is FaultKind.SENSOR_FAILURE:
            if (spec.id, fault.tag) not in self._position:
                raise ValueError(f"machine {spec.id} has no tag {fault.tag!r}")
        elif isinstance(profile, MeterProfile):
            raise ValueError(f"{kind} does not apply to energy meter {spec.id}")
        elif kind is FaultKind.BEARING_WEAR and (
            not isinstance(profile, MachineProfile) or profile.wear is None
        ):
            raise ValueError(f"machine {spec.id} ({spec.kind}) has no vibration to degrade")
        elif (
            kind is FaultKind.OVERHEAT
            and isinstance(profile, MachineProfile)
            and not profile.thermals
        ):
            raise ValueError(f"machine {spec.id} ({spec.kind}) has no temperature")

    def _apply(self, machine_id: str, fault: Fault, at: int) -> None:
        logger.info("injecting %s into %s at %s", fault.kind, machine_id, at)
        if fault.kind is FaultKind.SENSOR_FAILURE:
            pos = self._position[(machine_id, fault.tag)]
            self._dropouts.append((pos, at, at + fault.duration_ns))
            return
        timeline = self._machines[machine_id].timeline
        if fault.kind is FaultKind.BREAKDOWN:
            timeline.schedule(at, Op.DOWN, reason=fault.reason, duration=fault.duration_ns)
        elif fault.kind is FaultKind.BEARING_WEAR:
            timeline.schedule(at, Op.WEAR, value=fault.severity)
        else:
            timeline.schedule(at, Op.HEAT, value=fault.severity)
            timeline.schedule(at + fault.duration_ns, Op.HEAT, value=-fault.severity)

    def _start(self, start_ns: int) -> None:
        for m in self.layout.machines:
            profile = self._profiles[m.id]
            if isinstance(profile, MachineProfile):
                self._machines[m.id] = StateMachine(
                    m.id, profile, seed=self.seed, start_ns=start_ns
                )
            elif isinstance(profile, CompressorProfile):
                self._machines[m.id] = Compressor(m.id, profile, seed=self.seed, start_ns=start_ns)
            else:
                self._meters[m.id] = EnergyMeter(m.id, profile, seed=self.seed)
        self._now = start_ns
        pending, self._pending = self._pending, []
        for machine_id, fault in pending:
            at = start_ns if fault.at_ns is None else max(fault.at_ns, start_ns)
            self._apply(machine_id, fault, at)

    def _skip(self, until_ns: int, period_ns: int) -> None:
        """Run the plant unseen from now to ``until_ns`` so counters stay consistent."""
        assert self._now is not None
        grid = max(period_ns, GAP_GRID_NS)
        chunk = 100_000 * grid
        t0 = self._now
        while t0 < until_ns:
            t = np.arange(t0, min(until_ns, t0 + chunk), grid, dtype=np.int64)
            self._sample(t)
            t0 = int(t[-1]) + grid
            self._now = t0
            self._prune()
        self._now = until_ns

    def _sample(self, t: Int64Array) -> dict[str, dict[str, Float64Array]]:
        columns = {mid: machine.sample(t) for mid, machine in self._machines.items()}
        for mid, meter in self._meters.items():
            feeds = self.layout.meter_feeds(self.layout.machine(mid))
            total = np.zeros(len(t))
            for fed in sorted(feeds):  # a fixed order: the sum must not depend on the layout's
                total += columns[fed]["power_kw"]
            columns[mid] = meter.sample(t, total)
        return columns

    def _batch(self, t: Int64Array, columns: dict[str, dict[str, Float64Array]]) -> PointBatch:
        n, k = len(t), len(self._metas)
        value = np.empty(n * k, dtype=np.float64)
        for (mid, name), pos in self._position.items():
            value[pos * n : (pos + 1) * n] = columns[mid][name]
        quality = np.zeros(n * k, dtype=np.uint32)
        for pos, start, end in self._dropouts:
            lo, hi = np.searchsorted(t, [start, end], side="left")
            if hi > lo:
                value[pos * n + lo : pos * n + hi] = np.nan
                quality[pos * n + lo : pos * n + hi] = Quality.BAD_SENSOR_FAILURE
        return PointBatch(
            tags=self._paths,
            tag_index=np.repeat(np.arange(k, dtype=np.int32), n),
            ts=np.tile(t, k),
            value=value,
            quality=quality,
        )

    def _prune(self) -> None:
        assert self._now is not None
        now = self._now
        for machine in self._machines.values():
            machine.timeline.prune(now)
        self._dropouts = [d for d in self._dropouts if d[2] > now]
