"""Anomaly detection and RUL against the simulator's injected faults, and what it costs.

For each seed, the demo plant runs 9 simulated hours at 1 s with one bearing wear (×20),
one overheat (+15 K for 1 h) and two sensor failures (10 min) injected 3 to 6 h in
(:mod:`shopfloor.testing.anomaly_eval`); the detectors as shipped score the watched
machines hour by hour. Printed: the detection delay of every fault, the false-alarm
episodes per machine-hour outside the faults, and the RUL error at 75/50/25/10 % of life
left for bearing wear ×4 run to the trip. The cost line compares the detectors' time with
the baseline measured in the same run: the simulator producing the same hours.

Run: ``.venv/bin/python bench/anomaly.py [--seeds 1 2 3] [--rul-seeds 1 2 3 4 5 6]``
(docs/anomaly.md's RUL table: ``--rul-seeds 1 2 3 4 5 6 7 8 9 10 11 12``; the coverage of the
90 % interval is the last line.)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from shopfloor.server.analytics.rul import NoEstimate
from shopfloor.simulator import Plant
from shopfloor.testing.anomaly_eval import (
    DEFAULT,
    EWMA_LIMITS,
    T0,
    H,
    S,
    rul_scenario,
    run_scenario,
)


def _plant_only(seed: int, hours: int) -> float:
    plant = Plant.default(seed=seed, start_ns=T0)
    start = time.perf_counter()
    for hour in range(hours):
        plant.advance(start_ns=T0 + hour * H, steps=3600, period_ns=S)
    return time.perf_counter() - start


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rul-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument(
        "--mahalanobis-alpha",
        type=float,
        default=DEFAULT.mahalanobis_alpha,
        help="turn the multivariate detector on at this per-row false-alarm probability",
    )
    args = parser.parse_args()

    settings = dataclasses.replace(DEFAULT, mahalanobis_alpha=args.mahalanobis_alpha)
    print(f"detectors: {settings}; EWMA limit per tag {EWMA_LIMITS}")
    print(f"{'seed':>4} {'machine':<8} {'fault':<15} {'delay s':>8} {'window h':>9}")
    delays: dict[str, list[float]] = {}
    alarms, hours, spent, baseline = 0, 0.0, 0.0, 0.0
    for seed in args.seeds:
        start = time.perf_counter()
        result = run_scenario(seed, settings=settings)
        spent += time.perf_counter() - start
        baseline += _plant_only(seed, 9)
        for f in result.faults:
            shown = "MISSED" if f.delay_s is None else f"{f.delay_s:.0f}"
            window = (f.end_ns - f.at_ns) / H
            print(f"{seed:>4} {f.machine:<8} {f.kind:<15} {shown:>8} {window:>9.2f}")
            delays.setdefault(str(f.kind), []).append(
                float("inf") if f.delay_s is None else f.delay_s
            )
        alarms += result.false_alarms
        hours += result.watched_h
        for machine, at, cause in result.false_alarm_times:
            print(f"     false alarm: {machine} at +{(at - T0) / H:.2f} h ({cause})")
    print()
    print(f"{'fault':<15} {'n':>3} {'median delay s':>15} {'max delay s':>12}")
    for kind, values in delays.items():
        print(
            f"{kind:<15} {len(values):>3} {statistics.median(values):>15.0f} {max(values):>12.0f}"
        )
    rate = alarms / hours if hours else 0.0
    print(f"false alarms: {alarms} episodes in {hours:.1f} machine-hours = {rate:.3f} per hour")
    print(
        f"cost: scenario {spent:.1f} s wall, of which the simulator alone (baseline, same "
        f"run) {baseline:.1f} s; detectors and bookkeeping {spent - baseline:.1f} s for "
        f"{9 * len(args.seeds) * 5} machine-hours at 1 s"
    )
    _rul_table(args.rul_seeds)


def _rul_table(seeds: list[int]) -> None:
    print()
    print(
        f"{'seed':>4} {'life left':>9} {'true RUL h':>10} {'est RUL h':>9} {'error h':>8} "
        f"{'error %':>8} {'interval h':>16} {'in':>3} {'model':<12}"
    )
    errors: dict[float, list[float]] = {}
    hours: dict[float, list[float]] = {}
    covered = total = 0
    for seed in seeds:
        points = rul_scenario(seed)
        if points is None:
            print(f"{seed:>4} no trip within the simulated time")
            continue
        for p in points:
            true_h = (p.true_failure_ns - p.as_of_ns) / H
            e = p.estimate
            if isinstance(e, NoEstimate):
                print(f"{seed:>4} {p.life_left:>9.0%} {true_h:>10.2f} no estimate: {e.reason}")
                continue
            err = (p.error_s or 0.0) / 3600
            high = "inf" if e.high_ns is None else f"{(e.high_ns - p.as_of_ns) / H:.2f}"
            interval = f"{(e.low_ns - p.as_of_ns) / H:.2f}..{high}"
            print(
                f"{seed:>4} {p.life_left:>9.0%} {true_h:>10.2f} {e.rul_s / 3600:>9.2f} "
                f"{err:>8.2f} {100 * err / true_h:>7.0f}% {interval:>16} "
                f"{'yes' if p.covered else 'no':>3} {e.model:<12}"
            )
            errors.setdefault(p.life_left, []).append(100 * err / true_h)
            hours.setdefault(p.life_left, []).append(err)
            covered += p.covered
            total += 1
    print()
    print(
        f"{'life left':>9} {'median |error| h':>17} {'max h':>7} "
        f"{'median |error| % of true RUL':>29} {'max %':>7}"
    )
    for left, values in errors.items():
        h = hours[left]
        print(
            f"{left:>9.0%} {statistics.median(h):>17.2f} {max(h):>7.2f} "
            f"{statistics.median(values):>29.0f} {max(values):>7.0f}"
        )
    if total:
        print(f"true failure time within the 90 % interval: {covered}/{total}")


if __name__ == "__main__":
    main()
