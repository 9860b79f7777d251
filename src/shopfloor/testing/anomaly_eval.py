"""Anomaly detection and RUL measured against the simulator's injected faults.

Shared by the acceptance tests (``tests/unit/server/analytics/test_anomaly_simulator.py``)
and ``bench/anomaly.py``. The real simulated plant runs faster than real time at 1 s;
faults with known parameters are injected at known times; each watched machine's
temperatures and vibration, gated on the machine running (``state`` = 1: vibration and
temperatures of an idle machine are a different regime, not an anomaly), feed a
:class:`~shopfloor.server.analytics.anomaly.MachineDetector` hour by hour, as the live
job would.

Measured per fault: the **detection delay**, from injection to the first flagged row
inside the fault's window (bearing wear: until the trip; overheat: its duration plus an
hour to cool; sensor failure: its duration). Measured on everything else: **false
alarms**, flag episodes (flagged rows less than ``merge_s`` apart are one episode) outside
every fault window and after the warm-up, per machine-hour watched. Natural bearing
trips of the simulator (no fault injected: wear that reached its end of life) are real
degradations, but they are counted as false alarms here all the same, which is
conservative.

RUL: bearing wear is injected and the plant runs to the trip; the true failure time is
the first sample with ``down_reason`` = mechanical failure after the injection. At given
fractions of life left, the vibration while running over the last ``history_h`` is
reduced to minute medians and :func:`~shopfloor.server.analytics.rul.estimate_rul`
extrapolates it to the trip level (the demo plant's HH limit, 7.1 mm/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shopfloor.model import PointBatch
from shopfloor.model.points import is_good
from shopfloor.server.analytics.anomaly import DetectorSettings, MachineDetector, settled
from shopfloor.server.analytics.rul import NoEstimate, RulEstimate, estimate_rul_running
from shopfloor.simulator import DownReason, Fault, FaultKind, Plant, State

__all__ = [
    "FaultResult",
    "RulPoint",
    "ScenarioResult",
    "rul_scenario",
    "run_scenario",
    "standard_faults",
]

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
S = 10**9
H = 3600 * S
WATCHED = ("cnc-01", "cnc-02", "cnc-03", "imm-01", "imm-02")
"""Machines with temperatures and vibration in the demo plant."""
TRIP = 7.1
"""The simulator's vibration trip level: the demo plant's HH vibration limit."""
DEFAULT = DetectorSettings()
"""The detectors as shipped (``[analytics.anomaly]``'s defaults)."""
EWMA_LIMITS = {"vibration_rms": 8.0}
"""Per-tag EWMA limits evaluated (the demo plant's configuration): vibration's slow rise
is the bearing fault to catch, while the temperatures keep the wider default."""
COOL_S = 3600
"""An overheat's window stays open this long after its end (the temperature falls back)."""


@dataclass(frozen=True, slots=True)
class FaultResult:
    """One injected fault and when it was found.

    Attributes:
        machine: machine id.
        kind: the fault's kind.
        at_ns: injection time.
        end_ns: end of its window.
        detected_ns: first flagged row in the window (None: missed).
    """

    machine: str
    kind: FaultKind
    at_ns: int
    end_ns: int
    detected_ns: int | None

    @property
    def delay_s(self) -> float | None:
        """Seconds from injection to detection (None: missed)."""
        return None if self.detected_ns is None else (self.detected_ns - self.at_ns) / S


@dataclass
class ScenarioResult:
    """Everything one scenario measured."""

    seed: int
    faults: list[FaultResult] = field(default_factory=list)
    false_alarms: int = 0
    watched_h: float = 0.0
    """Machine-hours outside fault windows after the warm-up, running or not."""
    false_alarm_times: list[tuple[str, int, str]] = field(default_factory=list)
    """Machine, start and cause (detector and tag) of each false-alarm episode."""

    @property
    def false_alarm_rate(self) -> float:
        """False-alarm episodes per machine-hour."""
        return self.false_alarms / self.watched_h if self.watched_h else 0.0


def standard_faults(seed: int, *, start_ns: int = T0) -> list[tuple[str, Fault]]:
    """The faults of scenario ``seed``: one of each kind, on machines rotated by seed.

    Injected 3 h in (after the detectors' warm-up), 2 h apart, one machine left without
    faults; 9 h of simulation hold them all.
    """
    order = [WATCHED[(seed + i) % len(WATCHED)] for i in range(len(WATCHED))]
    temp = {"cnc": "spindle_temp", "imm": "barrel_temp"}
    return [
        (order[0], Fault.bearing_wear(20.0, at_ns=start_ns + 3 * H)),
        (order[1], Fault.overheat(15.0, duration_ns=H, at_ns=start_ns + 4 * H)),
        (
            order[2],
            Fault.sensor_failure(
                temp[order[2][:3]], duration_ns=10 * 60 * S, at_ns=start_ns + 5 * H
            ),
        ),
        (
            order[3],
            Fault.sensor_failure("vibration_rms", duration_ns=10 * 60 * S, at_ns=start_ns + 6 * H),
        ),
    ]


def _machine_tags(plant: Plant, machine: str) -> tuple[int, list[int]]:
    """Positions (in the batch's tag order) of the machine's state and watched tags."""
    spec = plant.layout.machine(machine)
    prefix = plant.layout.equipment_path(spec) + "/"
    paths = [t.path for t in plant.tags()]
    state = paths.index(prefix + "state")
    watched = [
        i
        for i, p in enumerate(paths)
        if p.startswith(prefix) and (p.endswith("_temp") or p.endswith("/vibration_rms"))
    ]
    return state, watched


def _matrix(batch: PointBatch, steps: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    k = len(batch.tags)
    values = np.asarray(batch.value, dtype=np.float64).reshape(k, steps)
    good = is_good(batch.quality).reshape(k, steps)
    return values, good


def _episodes(times: npt.NDArray[np.int64], merge_ns: int) -> list[int]:
    """Start times of flag episodes: flagged rows less than ``merge_ns`` apart are one."""
    if not len(times):
        return []
    starts = np.r_[True, np.diff(times) >= merge_ns]
    return [int(t) for t in times[starts]]


@dataclass
class _Run:
    """What the simulation produced for the measurement."""

    plant: Plant
    detectors: dict[str, MachineDetector]
    layout: dict[str, tuple[int, list[int]]]
    flagged: dict[str, npt.NDArray[np.int64]]
    causes: dict[str, npt.NDArray[np.int64]]
    trips: dict[str, list[int]]


def _simulate(
    seed: int,
    hours: float,
    *,
    faults: list[tuple[str, Fault]],
    settings: DetectorSettings,
    settle_s: float,
    ewma_limits: dict[str, float],
) -> _Run:
    plant = Plant.default(seed=seed, start_ns=T0)
    for machine, fault in faults:
        plant.inject(machine, fault)
    layout = {m: _machine_tags(plant, m) for m in WATCHED}
    names = [t.path.rsplit("/", 1)[1] for t in plant.tags()]
    detectors = {
        m: MachineDetector(
            len(w),
            settings,
            ewma_limits=[ewma_limits.get(names[i], settings.ewma_limit) for i in w],
        )
        for m, (_, w) in layout.items()
    }
    flagged: dict[str, list[npt.NDArray[np.int64]]] = {m: [] for m in WATCHED}
    causes: dict[str, list[npt.NDArray[np.int64]]] = {m: [] for m in WATCHED}
    trips: dict[str, list[int]] = {m: [] for m in WATCHED}
    since: dict[str, int | None] = dict.fromkeys(WATCHED)
    steps = 3600
    for hour in range(int(np.ceil(hours))):
        t = T0 + hour * H + np.arange(steps, dtype=np.int64) * S
        batch = plant.advance(start_ns=int(t[0]), steps=steps, period_ns=S)
        values, good = _matrix(batch, steps)
        for machine, (state_pos, watched) in layout.items():
            running = values[state_pos] == State.RUNNING
            watch, since[machine] = settled(running, t, since[machine], int(settle_s * S))
            x = np.where(good[watched] & watch, values[watched], np.nan).T
            scores = detectors[machine].learn_score(x, (~good[watched]).T)
            flagged[machine].append(t[scores.flagged])
            causes[machine].append(scores.cause[scores.flagged])
            trip = (values[state_pos + 1] == DownReason.MECHANICAL_FAILURE) & ~running
            trips[machine].extend(t[trip].tolist())
    return _Run(
        plant,
        detectors,
        layout,
        {m: np.concatenate(f) for m, f in flagged.items()},
        {m: np.concatenate(c) for m, c in causes.items()},
        trips,
    )


def _window(fault: Fault, trips: list[int], end: int) -> tuple[int, int]:
    at = fault.at_ns if fault.at_ns is not None else T0
    if fault.kind is FaultKind.BEARING_WEAR:
        later = [x for x in trips if x >= at]
        return at, later[0] if later else end
    if fault.kind is FaultKind.OVERHEAT:
        return at, at + fault.duration_ns + COOL_S * S
    return at, at + fault.duration_ns


def run_scenario(
    seed: int,
    *,
    hours: float = 9.0,
    warmup_h: float = 2.0,
    faults: list[tuple[str, Fault]] | None = None,
    settings: DetectorSettings | None = None,
    merge_s: float = 600.0,
    settle_s: float = 900.0,
    ewma_limits: dict[str, float] | None = None,
) -> ScenarioResult:
    """Run the default plant for ``hours`` with ``faults`` (default :func:`standard_faults`)
    and measure detection delays and false alarms (module docstring)."""
    faults = standard_faults(seed) if faults is None else faults
    run = _simulate(
        seed,
        hours,
        faults=faults,
        settings=settings or DEFAULT,
        settle_s=settle_s,
        ewma_limits=EWMA_LIMITS if ewma_limits is None else ewma_limits,
    )
    end = T0 + int(hours * H)
    warm = T0 + int(warmup_h * H)
    result = ScenarioResult(seed)
    windows: dict[str, list[tuple[int, int]]] = {m: [] for m in WATCHED}
    for machine, fault in faults:
        at, stop = _window(fault, run.trips[machine], end)
        windows[machine].append((at, stop))
        times = run.flagged[machine]
        inside = times[(times >= at) & (times < stop)]
        result.faults.append(
            FaultResult(machine, fault.kind, at, stop, int(inside[0]) if len(inside) else None)
        )
    names = [t.path.rsplit("/", 1)[1] for t in run.plant.tags()]
    for machine in WATCHED:
        times = run.flagged[machine]
        outside = times >= warm
        for lo, hi in windows[machine]:
            outside &= (times < lo) | (times >= hi)
        starts = _episodes(times[outside], int(merge_s * S))
        result.false_alarms += len(starts)
        by_time = dict(
            zip(times[outside].tolist(), run.causes[machine][outside].tolist(), strict=True)
        )
        for start in starts:
            detector, column = run.detectors[machine].describe(by_time[start])
            tag = "" if column is None else names[run.layout[machine][1][column]]
            result.false_alarm_times.append((machine, start, f"{detector} {tag}".strip()))
        hidden = sum(min(hi, end) - max(lo, warm) for lo, hi in windows[machine] if hi > warm)
        result.watched_h += (end - warm - hidden) / H
    return result


@dataclass(frozen=True, slots=True)
class RulPoint:
    """One RUL estimate against the truth.

    Attributes:
        life_left: share of the time from injection to the trip still ahead.
        as_of_ns: when the estimate was made.
        true_failure_ns: the trip.
        estimate: the estimate, or why there is none.
    """

    life_left: float
    as_of_ns: int
    true_failure_ns: int
    estimate: RulEstimate | NoEstimate

    @property
    def error_s(self) -> float | None:
        """|estimated - true failure time| in seconds (None without an estimate)."""
        if isinstance(self.estimate, NoEstimate):
            return None
        return abs(self.estimate.failure_ns - self.true_failure_ns) / S

    @property
    def covered(self) -> bool:
        """Whether the true failure time lies within the estimate's interval."""
        e = self.estimate
        if isinstance(e, NoEstimate):
            return False
        return e.low_ns <= self.true_failure_ns and (
            e.high_ns is None or self.true_failure_ns <= e.high_ns
        )


def rul_scenario(
    seed: int,
    *,
    machine: str = "cnc-01",
    factor: float = 4.0,
    inject_h: float = 2.0,
    max_hours: float = 72.0,
    history_h: float = 6.0,
    life_left: tuple[float, ...] = (0.75, 0.5, 0.25, 0.1),
    confidence: float = 0.9,
) -> list[RulPoint] | None:
    """Inject bearing wear into ``machine`` and estimate RUL at fractions of life left.

    Returns None when the machine did not trip within ``max_hours`` (or tripped before
    the injection had any effect: the trip must come after it).
    """
    plant = Plant.default(seed=seed, start_ns=T0)
    at = T0 + int(inject_h * H)
    plant.inject(machine, Fault.bearing_wear(factor, at_ns=at))
    state_pos, watched = _machine_tags(plant, machine)
    paths = [t.path for t in plant.tags()]
    vib = next(i for i in watched if paths[i].endswith("/vibration_rms"))
    ts: list[npt.NDArray[np.int64]] = []
    vs: list[npt.NDArray[np.float64]] = []
    trip_ns: int | None = None
    steps = 3600
    for hour in range(int(max_hours)):
        t = T0 + hour * H + np.arange(steps, dtype=np.int64) * S
        batch = plant.advance(start_ns=int(t[0]), steps=steps, period_ns=S)
        values, good = _matrix(batch, steps)
        running = values[state_pos] == State.RUNNING
        keep = running & good[vib]
        ts.append(t[keep])
        vs.append(values[vib][keep])
        trip = (values[state_pos + 1] == DownReason.MECHANICAL_FAILURE) & (t >= at)
        if trip.any():
            trip_ns = int(t[trip][0])
            break
    if trip_ns is None:
        return None
    t_all, v_all = np.concatenate(ts), np.concatenate(vs)
    out: list[RulPoint] = []
    for left in life_left:
        now = trip_ns - int(left * (trip_ns - at))
        since = now - int(history_h * H)
        mine = (t_all <= now) & (t_all > since)
        estimate = estimate_rul_running(
            t_all[mine],
            v_all[mine],
            now_ns=now,
            since_ns=since,
            period_ns=S,
            threshold=TRIP,
            confidence=confidence,
        )
        out.append(RulPoint(left, now, trip_ns, estimate))
    return out
