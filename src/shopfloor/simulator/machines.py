"""Signals of simulated machines: histories evaluated at sample times, plus measurement noise.

Each machine owns two random generators seeded from ``(plant seed, machine id)``: one
draws its history (:mod:`~shopfloor.simulator.timeline`), the other its measurement
noise, a fixed number of values per sample. So a machine's signals depend neither on
the other machines nor on how simulated time is chopped into calls.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shopfloor.model import DataType, TagMeta
from shopfloor.simulator.profiles import (
    REASON_LABELS,
    STATE_LABELS,
    MachineProfile,
    MeterProfile,
    State,
)
from shopfloor.simulator.timeline import NS_PER_H, StateTimeline

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

_DAY_NS = 24 * NS_PER_H


@dataclass(frozen=True, slots=True)
class TagSpec:
    """A tag of a machine kind, before it has a path."""

    name: str
    unit: str
    description: str
    data_type: DataType = DataType.FLOAT
    eng_low: float | None = 0.0
    eng_high: float | None = None
    states: tuple[tuple[int, str], ...] = ()

    def meta(self, equipment_path: str) -> TagMeta:
        """Return the tag's metadata under ``equipment_path``."""
        return TagMeta(
            path=f"{equipment_path}/{self.name}",
            unit=self.unit,
            description=self.description,
            data_type=self.data_type,
            eng_low=self.eng_low,
            eng_high=self.eng_high,
            states=self.states,
        )


STATE_TAG = TagSpec(
    "state",
    "",
    "Machine state",
    DataType.INT,
    eng_low=1.0,
    eng_high=4.0,
    states=STATE_LABELS,
)
REASON_TAG = TagSpec(
    "down_reason",
    "",
    "Why the machine is not running (0 while running)",
    DataType.INT,
    eng_low=0.0,
    eng_high=float(max(v for v, _ in REASON_LABELS)),
    states=REASON_LABELS,
)


def power_tags(rated_kw: float) -> tuple[TagSpec, TagSpec]:
    """Return the ``power_kw`` and ``energy_kwh`` tags of a machine rated ``rated_kw``."""
    return (
        TagSpec("power_kw", "kW", "Active power", eng_high=round(1.5 * rated_kw, 1)),
        TagSpec("energy_kwh", "kWh", "Active energy imported (meter reading)", eng_high=None),
    )


def machine_rngs(seed: int, machine_id: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Return a machine's history and noise generators, from the seed and its id only."""
    key = int.from_bytes(hashlib.blake2b(machine_id.encode(), digest_size=8).digest(), "little")
    return (
        np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key, 0]))),
        np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key, 1]))),
    )


def ambient_c(t: Int64Array) -> Float64Array:
    """Hall temperature: 21 degC give or take 3, warmest at 15:00 UTC."""
    day = (t % _DAY_NS).astype(np.float64) / _DAY_NS
    out: Float64Array = 21.0 + 3.0 * np.sin(2.0 * math.pi * (day - 9.0 / 24.0))
    return out


class EnergyCounter:
    """A meter reading that integrates power with the trapezoid rule between samples.

    The sum runs sequentially from the carried reading, so two calls give bit for bit the
    readings of one call over the same samples.
    """

    def __init__(self, kwh: float) -> None:
        self.kwh = kwh
        self._t: int | None = None
        self._p = 0.0

    def integrate(self, t: Int64Array, power_kw: Float64Array) -> Float64Array:
        """Return the reading at each sample time, carrying the total to the next call."""
        inc = np.empty(len(t) + 1)
        inc[0] = self.kwh
        inc[1] = 0.0 if self._t is None else (self._p + power_kw[0]) * 0.5 * (t[0] - self._t)
        inc[2:] = (power_kw[1:] + power_kw[:-1]) * 0.5 * np.diff(t).astype(np.float64)
        inc[1:] /= NS_PER_H
        out: Float64Array = np.cumsum(inc)[1:]
        self.kwh = float(out[-1])
        self._t = int(t[-1])
        self._p = float(power_kw[-1])
        return out


def state_machine_tags(profile: MachineProfile) -> tuple[TagSpec, ...]:
    """Return the tags of a machine driven by the state machine, in output order."""
    tags = [STATE_TAG, REASON_TAG]
    out = profile.output
    if out is not None:
        tags += [
            TagSpec("part_count", "parts", "Parts made (counter)", DataType.INT),
            TagSpec("good_count", "parts", "Good parts made (counter)", DataType.INT),
            TagSpec("scrap_count", "parts", "Scrapped parts (counter)", DataType.INT),
            TagSpec(
                "cycle_time",
                "s",
                "Duration of the last completed cycle",
                eng_high=round(10 * out.ideal_cycle_s),
            ),
        ]
    if profile.speed is not None:
        sp = profile.speed
        tags.append(TagSpec(sp.tag, sp.unit, sp.description, eng_high=sp.eng_high))
    tags += [
        TagSpec(th.tag, "degC", th.description, eng_high=th.eng_high) for th in profile.thermals
    ]
    if profile.wear is not None:
        tags.append(
            TagSpec(
                "vibration_rms",
                "mm/s",
                f"Vibration velocity RMS (trips at {profile.wear.trip} mm/s)",
                eng_high=20.0,
            )
        )
    # the set point comes last, so adding it left the other tags' Modbus registers alone
    setpoint: tuple[TagSpec, ...] = ()
    speed = profile.speed
    if speed is not None and speed.setpoint is not None:
        setpoint = (
            TagSpec(
                speed.setpoint,
                speed.unit,
                f"{speed.description} set point (writable)",
                eng_high=speed.eng_high,
            ),
        )
    return (*tags, *power_tags(profile.rated_kw), *setpoint)


class StateMachine:
    """A CNC mill, press or conveyor: state machine, parts, heat, wear, power.

    Args:
        machine_id: seeds the machine's generators.
        profile: its profile, with per-machine overrides applied.
        seed: the plant's seed.
        start_ns: when its history starts.
    """

    def __init__(
        self, machine_id: str, profile: MachineProfile, *, seed: int, start_ns: int
    ) -> None:
        events, self._noise = machine_rngs(seed, machine_id)
        self.profile = profile
        self.tags = state_machine_tags(profile)
        self._energy = EnergyCounter(float(np.round(events.uniform(1e3, 5e4), 1)))
        self.timeline = StateTimeline(profile, events, start_ns=start_ns)
        self._override: tuple[int, float] | None = None

    def set_setpoint(self, at_ns: int, value: float) -> float:
        """From ``at_ns`` on, the speed set point is ``value`` (clamped to the tag's range,
        as a drive would), whatever job runs; returns the value it holds.

        Only the latest write counts: the plant's time only moves forward, so an earlier
        one is never sampled again. The random draws are untouched, so everything but
        the speed and its set point stays as the seed made it.

        Raises:
            ValueError: the machine has no set point.
        """
        sp = self.profile.speed
        if sp is None or sp.setpoint is None:
            raise ValueError("this machine has no speed set point")
        held = float(min(max(value, 0.0), sp.eng_high))
        self._override = (at_ns, held)
        return held

    def sample(self, t: Int64Array) -> dict[str, Float64Array]:
        """Return every tag's values at the sorted times ``t``."""
        p = self.profile
        view = self.timeline.evaluate(t)
        n_th = len(p.thermals)
        # noise columns: one per thermal, then power, vibration, speed (fixed per kind)
        z = self._noise.standard_normal((len(t), n_th + 3))
        running = view.state == State.RUNNING
        out: dict[str, Float64Array] = {
            "state": view.state.astype(np.float64),
            "down_reason": view.reason.astype(np.float64),
        }
        if p.output is not None:
            out["part_count"] = view.parts.astype(np.float64)
            out["good_count"] = (view.parts - view.scrap).astype(np.float64)
            out["scrap_count"] = view.scrap.astype(np.float64)
            out["cycle_time"] = view.cycle
        if p.speed is not None:
            jitter = 1.0 + p.speed.noise * z[:, n_th + 2]
            target = view.speed
            if self._override is not None:
                at, held = self._override
                target = np.where(t >= at, held, target)
            out[p.speed.tag] = np.where(running, target * jitter, 0.0)
            if p.speed.setpoint is not None:
                out[p.speed.setpoint] = np.asarray(target, dtype=np.float64)
        if n_th:
            amb = ambient_c(t)
            for c, th in enumerate(p.thermals):
                out[th.tag] = amb + view.rise[c] + th.noise * z[:, c]
        if p.wear is not None:
            level = np.where(running, p.wear.healthy + view.wear, 0.25)
            level = np.where(view.state == State.DOWN, 0.05, level)
            out["vibration_rms"] = np.maximum(level * (1.0 + 0.06 * z[:, n_th + 1]), 0.0)
        share = np.asarray(p.power_share)[view.state - 1]
        wave = np.where(running, p.power_wave * np.sin(2.0 * math.pi * view.phase), 0.0)
        noise = np.where(view.state == State.DOWN, 0.1, 1.0) * p.power_noise * z[:, n_th]
        power = np.maximum(p.rated_kw * (share * (1.0 + wave) + noise), 0.0)
        out["power_kw"] = power
        out["energy_kwh"] = self._energy.integrate(t, power)
        return out


METER_TAGS = (
    TagSpec("power_kw", "kW", "Total active power of the metered feeds", eng_high=None),
    TagSpec("energy_kwh", "kWh", "Total active energy imported (meter reading)", eng_high=None),
)


class EnergyMeter:
    """A meter over some machines: their power plus the building's own base load.

    Args:
        machine_id: seeds the meter's noise.
        profile: base load and noise.
        seed: the plant's seed.
    """

    tags = METER_TAGS

    def __init__(self, machine_id: str, profile: MeterProfile, *, seed: int) -> None:
        events, self._noise = machine_rngs(seed, machine_id)
        self.profile = profile
        self._energy = EnergyCounter(float(np.round(events.uniform(1e5, 1e6), 1)))

    def sample(self, t: Int64Array, feeds_kw: Float64Array) -> dict[str, Float64Array]:
        """Return the meter's values at ``t`` given the summed power of its feeds."""
        p = self.profile
        day = (t % _DAY_NS).astype(np.float64) / _DAY_NS
        base = p.base_kw + p.day_kw * 0.5 * (1.0 + np.sin(2.0 * math.pi * (day - 9.0 / 24.0)))
        power = feeds_kw + base + p.noise_kw * self._noise.standard_normal(len(t))
        power = np.maximum(power, 0.0)
        return {"power_kw": power, "energy_kwh": self._energy.integrate(t, power)}
