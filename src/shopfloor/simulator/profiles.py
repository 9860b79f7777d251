"""What each kind of simulated machine is like: its stops, heat, wear, output and power.

The numbers describe a plausible small job shop (a few CNC mills, injection moulding
presses, conveyors, screw compressors and an incoming energy meter); they are not a
calibrated model of any product. Every duration is in the unit its name says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class MachineKind(StrEnum):
    """The kinds of equipment the simulator knows."""

    CNC_MILL = "cnc-mill"
    INJECTION_PRESS = "injection-press"
    CONVEYOR = "conveyor"
    AIR_COMPRESSOR = "air-compressor"
    ENERGY_METER = "energy-meter"


class State(IntEnum):
    """Machine state, the value of every ``state`` tag."""

    RUNNING = 1
    IDLE = 2
    SETUP = 3
    DOWN = 4


class DownReason(IntEnum):
    """Why a machine is not running, the value of every ``down_reason`` tag (0 while running)."""

    NONE = 0
    TOOL_CHANGE = 1
    MATERIAL_SHORTAGE = 2
    JAM = 3
    ELECTRICAL_FAULT = 4
    QUALITY_CHECK = 5
    MECHANICAL_FAILURE = 6
    CHANGEOVER = 7


STATE_LABELS: tuple[tuple[int, str], ...] = tuple((int(s), s.name.lower()) for s in State)
REASON_LABELS: tuple[tuple[int, str], ...] = tuple(
    (int(r), r.name.lower().replace("_", " ")) for r in DownReason
)

NEVER_H = math.inf


@dataclass(frozen=True, slots=True)
class Stop:
    """One way a machine stops running.

    Attributes:
        reason: the ``down_reason`` while stopped.
        state: the state while stopped (DOWN, IDLE or SETUP).
        every_h: mean running hours between two such stops (inf: never by chance).
        median_min: median length of the stop; lengths are log-normal.
        spread: sigma of the log-normal length.
    """

    reason: DownReason
    state: State
    every_h: float
    median_min: float
    spread: float = 0.5


@dataclass(frozen=True, slots=True)
class Thermal:
    """A temperature that follows a first-order lag towards a state-dependent target.

    Attributes:
        tag: tag name.
        description: for people.
        tau_s: time constant of the lag.
        rise: target rise above ambient in K while RUNNING, IDLE, SETUP, DOWN.
        noise: standard deviation of the measurement noise in K.
        eng_high: top of the engineering range in degC.
    """

    tag: str
    description: str
    tau_s: float
    rise: tuple[float, float, float, float]
    noise: float
    eng_high: float


@dataclass(frozen=True, slots=True)
class Wear:
    """Slow degradation seen in ``vibration_rms``.

    Wear ``w`` (mm/s above the healthy level) grows while running as
    ``dw/dh = rate * (w + knee)``, an exponential typical of rolling bearings. When the
    vibration reaches ``trip`` the machine goes DOWN (mechanical failure); the repair
    renews the part and wear starts from zero with a new random life.

    Attributes:
        healthy: vibration of a healthy machine while running, mm/s.
        trip: vibration at which the machine trips, mm/s (ISO 10816 zone C/D for class II).
        knee: sets how early the growth becomes visible, mm/s.
        life_median_h: median running hours from new to trip.
        repair: the stop that follows a trip.
    """

    healthy: float
    trip: float
    knee: float
    life_median_h: float
    repair: Stop

    def rate_for_life(self, life_h: float) -> float:
        """Return the growth rate (per running hour) that trips after ``life_h`` from new."""
        return math.log((self.trip - self.healthy + self.knee) / self.knee) / life_h


@dataclass(frozen=True, slots=True)
class Output:
    """Parts production while running.

    Attributes:
        ideal_cycle_s: the ideal cycle time; no cycle is faster.
        slow_prob: share of cycles that are slow.
        slow_max: a slow cycle takes up to this fraction longer.
        micro_prob: share of cycles followed by a micro-stop (too short to change state).
        micro_mean_s: mean micro-stop length.
        scrap_base: scrap rate of a warm, healthy machine.
        quality_channel: index of the thermal whose deviation causes scrap.
        tolerance_k: deviation from the running temperature that causes no extra scrap.
        gain_per_k: extra scrap probability per K beyond the tolerance.
        wear_gain: extra scrap probability just before a wear trip.
    """

    ideal_cycle_s: float
    slow_prob: float
    slow_max: float
    micro_prob: float
    micro_mean_s: float
    scrap_base: float
    quality_channel: int
    tolerance_k: float
    gain_per_k: float
    wear_gain: float


@dataclass(frozen=True, slots=True)
class Speed:
    """A speed set per job (spindle speed, belt speed); zero unless running.

    Attributes:
        tag: tag name.
        unit: engineering unit.
        description: for people.
        low: lowest set point a job uses.
        high: highest set point a job uses.
        noise: relative standard deviation around the set point.
        eng_high: top of the engineering range.
        setpoint: name of a writable set point tag, if the machine has one: it reads the
            job's set point until someone writes it, then the written value (the speed
            follows it while running).
    """

    tag: str
    unit: str
    description: str
    low: float
    high: float
    noise: float
    eng_high: float
    setpoint: str | None = None


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """A machine driven by the RUNNING/IDLE/SETUP/DOWN state machine.

    Attributes:
        kind: the kind this profile describes.
        rated_kw: electrical rating.
        power_share: share of ``rated_kw`` drawn while RUNNING, IDLE, SETUP, DOWN.
        power_wave: relative swing of running power over one cycle.
        power_noise: standard deviation of power noise as a share of ``rated_kw``.
        stops: random stops while running.
        job_median_h: median running hours of a job; None: no jobs (no changeovers).
        changeover: the SETUP stop between jobs.
        output: parts production; None for machines that make no parts.
        wear: vibration degradation; None for machines without a vibration tag.
        thermals: temperatures.
        speed: a speed tag, if any.
    """

    kind: MachineKind
    rated_kw: float
    power_share: tuple[float, float, float, float]
    power_wave: float
    power_noise: float
    stops: tuple[Stop, ...]
    job_median_h: float | None
    changeover: Stop | None
    output: Output | None
    wear: Wear | None
    thermals: tuple[Thermal, ...]
    speed: Speed | None


@dataclass(frozen=True, slots=True)
class CompressorProfile:
    """A screw compressor with load/unload control on a receiver.

    Loaded, pressure rises at ``capacity - demand`` bar/s; unloaded it falls at ``demand``.
    The compressor loads at ``p_load`` and unloads at ``p_unload``. Demand is a share of
    capacity that changes every few minutes.

    Attributes:
        rated_kw: shaft power when fully loaded.
        p_load: pressure that starts loading, bar.
        p_unload: pressure that stops loading, bar.
        capacity_bar_s: pressure rise per second loaded with no demand.
        demand_mean: mean demand as a share of capacity.
        demand_sd: standard deviation of demand.
        demand_every_min: mean minutes between demand changes.
        unloaded_share: share of ``rated_kw`` drawn unloaded.
        power_noise: standard deviation of power noise as a share of ``rated_kw``.
        stops: random stops (DOWN) while running.
        outlet: outlet temperature, rise indexed loaded, unloaded, -, down.
        pressure_noise: standard deviation of the pressure reading, bar.
    """

    rated_kw: float
    p_load: float
    p_unload: float
    capacity_bar_s: float
    demand_mean: float
    demand_sd: float
    demand_every_min: float
    unloaded_share: float
    power_noise: float
    stops: tuple[Stop, ...]
    outlet: Thermal
    pressure_noise: float


@dataclass(frozen=True, slots=True)
class MeterProfile:
    """An energy meter: the sum of its feeds plus the building's own load.

    Attributes:
        base_kw: lighting, HVAC and offices at night.
        day_kw: extra base load at mid-day.
        noise_kw: standard deviation of the reading.
    """

    base_kw: float
    day_kw: float
    noise_kw: float


Profile = MachineProfile | CompressorProfile | MeterProfile

_DOWN, _IDLE, _SETUP = State.DOWN, State.IDLE, State.SETUP

CNC_MILL = MachineProfile(
    kind=MachineKind.CNC_MILL,
    rated_kw=15.0,
    power_share=(0.72, 0.16, 0.1, 0.02),
    power_wave=0.25,
    power_noise=0.02,
    stops=(
        Stop(DownReason.TOOL_CHANGE, _DOWN, every_h=4.0, median_min=6.0, spread=0.3),
        Stop(DownReason.JAM, _DOWN, every_h=10.0, median_min=6.0, spread=0.6),
        Stop(DownReason.ELECTRICAL_FAULT, _DOWN, every_h=40.0, median_min=45.0, spread=0.7),
        Stop(DownReason.MATERIAL_SHORTAGE, _IDLE, every_h=8.0, median_min=12.0, spread=0.7),
        Stop(DownReason.QUALITY_CHECK, _IDLE, every_h=5.0, median_min=5.0, spread=0.4),
    ),
    job_median_h=2.5,
    changeover=Stop(DownReason.CHANGEOVER, _SETUP, NEVER_H, median_min=25.0, spread=0.4),
    output=Output(
        ideal_cycle_s=75.0,
        slow_prob=0.12,
        slow_max=0.4,
        micro_prob=0.03,
        micro_mean_s=40.0,
        scrap_base=0.015,
        quality_channel=0,
        tolerance_k=6.0,
        gain_per_k=0.005,
        wear_gain=0.04,
    ),
    wear=Wear(
        healthy=1.1,
        trip=7.1,
        knee=0.5,
        life_median_h=120.0,
        repair=Stop(DownReason.MECHANICAL_FAILURE, _DOWN, NEVER_H, median_min=150.0, spread=0.4),
    ),
    thermals=(
        Thermal(
            "spindle_temp",
            "Spindle bearing temperature",
            tau_s=720.0,
            rise=(24.0, 8.0, 4.0, 0.0),
            noise=0.15,
            eng_high=120.0,
        ),
    ),
    speed=Speed(
        "spindle_speed",
        "rpm",
        "Spindle speed",
        low=6000.0,
        high=12000.0,
        noise=0.003,
        eng_high=15000.0,
        setpoint="spindle_speed_sp",
    ),
)

INJECTION_PRESS = MachineProfile(
    kind=MachineKind.INJECTION_PRESS,
    rated_kw=30.0,
    power_share=(0.7, 0.32, 0.22, 0.03),
    power_wave=0.3,
    power_noise=0.015,
    stops=(
        Stop(DownReason.JAM, _DOWN, every_h=5.0, median_min=4.0, spread=0.6),
        Stop(DownReason.ELECTRICAL_FAULT, _DOWN, every_h=60.0, median_min=40.0, spread=0.7),
        Stop(DownReason.MATERIAL_SHORTAGE, _IDLE, every_h=12.0, median_min=15.0, spread=0.7),
        Stop(DownReason.QUALITY_CHECK, _IDLE, every_h=6.0, median_min=6.0, spread=0.4),
    ),
    job_median_h=6.0,
    changeover=Stop(DownReason.CHANGEOVER, _SETUP, NEVER_H, median_min=45.0, spread=0.4),
    output=Output(
        ideal_cycle_s=28.0,
        slow_prob=0.08,
        slow_max=0.3,
        micro_prob=0.02,
        micro_mean_s=30.0,
        scrap_base=0.025,
        quality_channel=1,
        tolerance_k=4.0,
        gain_per_k=0.01,
        wear_gain=0.04,
    ),
    wear=Wear(
        healthy=1.6,
        trip=7.1,
        knee=0.6,
        life_median_h=150.0,
        repair=Stop(DownReason.MECHANICAL_FAILURE, _DOWN, NEVER_H, median_min=180.0, spread=0.4),
    ),
    thermals=(
        Thermal(
            "barrel_temp",
            "Barrel (melt) temperature",
            tau_s=1500.0,
            rise=(210.0, 205.0, 190.0, 100.0),
            noise=0.3,
            eng_high=350.0,
        ),
        Thermal(
            "mould_temp",
            "Mould temperature",
            tau_s=480.0,
            rise=(38.0, 33.0, 20.0, 5.0),
            noise=0.2,
            eng_high=150.0,
        ),
    ),
    speed=None,
)

CONVEYOR = MachineProfile(
    kind=MachineKind.CONVEYOR,
    rated_kw=1.5,
    power_share=(0.8, 0.1, 0.1, 0.01),
    power_wave=0.05,
    power_noise=0.02,
    stops=(
        Stop(DownReason.JAM, _DOWN, every_h=12.0, median_min=3.0, spread=0.5),
        Stop(DownReason.ELECTRICAL_FAULT, _DOWN, every_h=300.0, median_min=60.0, spread=0.6),
        Stop(DownReason.MATERIAL_SHORTAGE, _IDLE, every_h=3.0, median_min=8.0, spread=0.6),
    ),
    job_median_h=None,
    changeover=None,
    output=None,
    wear=None,
    thermals=(),
    speed=Speed("speed", "m/s", "Belt speed", low=0.4, high=0.5, noise=0.005, eng_high=1.0),
)

AIR_COMPRESSOR = CompressorProfile(
    rated_kw=45.0,
    p_load=6.5,
    p_unload=7.5,
    capacity_bar_s=0.012,
    demand_mean=0.5,
    demand_sd=0.15,
    demand_every_min=20.0,
    unloaded_share=0.28,
    power_noise=0.01,
    stops=(
        Stop(DownReason.ELECTRICAL_FAULT, _DOWN, every_h=500.0, median_min=90.0, spread=0.6),
        Stop(DownReason.MECHANICAL_FAILURE, _DOWN, every_h=800.0, median_min=180.0, spread=0.5),
    ),
    outlet=Thermal(
        "outlet_temp",
        "Compressed air outlet temperature",
        tau_s=240.0,
        rise=(62.0, 42.0, 0.0, 0.0),
        noise=0.3,
        eng_high=120.0,
    ),
    pressure_noise=0.01,
)

ENERGY_METER = MeterProfile(base_kw=15.0, day_kw=6.0, noise_kw=0.2)

PROFILES: dict[MachineKind, Profile] = {
    MachineKind.CNC_MILL: CNC_MILL,
    MachineKind.INJECTION_PRESS: INJECTION_PRESS,
    MachineKind.CONVEYOR: CONVEYOR,
    MachineKind.AIR_COMPRESSOR: AIR_COMPRESSOR,
    MachineKind.ENERGY_METER: ENERGY_METER,
}
"""The built-in profile of every kind; a machine may override ``rated_kw`` and cycle time."""
