"""How fast the simulated plant back-fills history.

Advances the default plant through one simulated day at 1 s (in one-hour calls, as a
back-fill would, and in a single call) and compares the points produced per wall
second with a baseline measured in the same run: numpy's ``default_rng().normal``
filling the same number of float64 values, the cheapest possible "signal".

Run: ``.venv/bin/python bench/simulator.py [--days N] [--seed S]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from shopfloor.simulator import Plant

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
SECOND = 10**9


def _advance_in_chunks(seed: int, days: float, chunk_steps: int) -> tuple[int, float]:
    plant = Plant.default(seed=seed)
    steps_left = round(days * 86_400)
    points = 0
    start = time.perf_counter()
    first = True
    while steps_left:
        steps = min(chunk_steps, steps_left)
        batch = plant.advance(start_ns=T0 if first else None, steps=steps, period_ns=SECOND)
        first = False
        points += len(batch)
        steps_left -= steps
    return points, time.perf_counter() - start


def _baseline(points: int) -> float:
    rng = np.random.default_rng()
    start = time.perf_counter()
    values = rng.normal(size=points)
    elapsed = time.perf_counter() - start
    assert len(values) == points
    return elapsed


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    tags = len(Plant.default(seed=args.seed).tags())
    rows: list[tuple[str, int, float]] = []
    points, hourly = _advance_in_chunks(args.seed, args.days, 3600)
    rows.append((f"plant.advance, {args.days:g} d at 1 s in 1 h calls", points, hourly))
    if args.days <= 1:
        points_one, single = _advance_in_chunks(args.seed, args.days, round(args.days * 86_400))
        rows.append((f"plant.advance, {args.days:g} d at 1 s in one call", points_one, single))
    rows.append(("baseline: rng.normal, same count", points, _baseline(points)))

    print(f"default plant: {tags} tags, {args.days:g} simulated day(s) at 1 s")
    print(f"{'what':<44} {'points':>12} {'wall s':>8} {'points/s':>14} {'x realtime':>11}")
    for name, n, seconds in rows:
        realtime = f"{args.days * 86_400 / seconds:,.0f}" if name.startswith("plant") else "-"
        print(f"{name:<44} {n:>12,} {seconds:>8.3f} {n / seconds:>14,.0f} {realtime:>11}")
    ratio = hourly / rows[-1][2]
    print(f"the plant costs {ratio:.1f}x the baseline per point (hourly calls)")


if __name__ == "__main__":
    main()
