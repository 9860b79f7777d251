"""Alarm KPIs against plain loops written from the definitions, and a worked example."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.server.rules.kpis import alarm_kpis

S = 10**9
MIN = 60 * S
T0 = 1_700_000_400 * S  # a multiple of 10 minutes


def test_a_worked_shift() -> None:
    names, ts = [], []

    def add(alarm: str, *seconds: int) -> None:
        names.extend([alarm] * len(seconds))
        ts.extend(T0 + s * S for s in seconds)

    add("press.H", 5, 20, 50, 61)  # 4 in the first minute and a bit: chattering
    add("oven.L", 700)  # second period
    add("flood", *range(1300, 1312))  # 12 in the third period: a flood
    add("flood", *range(1800, 1805))  # 5 more: fourth period, no flood
    k = alarm_kpis(names, np.array(ts), start_ns=T0, end_ns=T0 + 40 * MIN)
    assert (k.activations, k.periods, k.peak_per_10min) == (22, 4, 12)
    assert k.average_per_10min == 22 / 4
    assert k.share_over_manageable == 3 / 4  # 4, 12, 5 are above 2
    assert [(f.start_ns, f.end_ns, f.alarms) for f in k.floods] == [
        (T0 + 20 * MIN, T0 + 30 * MIN, 12)
    ]
    assert k.share_in_flood == 1 / 4
    assert [(b.alarm, b.count) for b in k.bad_actors] == [
        ("flood", 17),
        ("press.H", 4),
        ("oven.L", 1),
    ]
    assert k.bad_actors[0].share == 17 / 22
    chat = {c.alarm: (c.episodes, c.activations) for c in k.chattering}
    assert chat == {"press.H": (1, 4), "flood": (2, 17)}


def reference(names: list[str], ts: list[int], start: int, end: int) -> dict[str, object]:
    inside = [(n, t) for n, t in zip(names, ts, strict=True) if start <= t < end]
    first = start - start % (10 * MIN)
    periods = -(-(end - first) // (10 * MIN))
    counts = [0] * periods
    for _, t in inside:
        counts[(t - first) // (10 * MIN)] += 1
    floods, run = [], None
    for i, c in enumerate([*counts, 0]):
        if c > 10 and run is None:
            run = i
        elif c <= 10 and run is not None:
            floods.append((first + run * 10 * MIN, first + i * 10 * MIN, sum(counts[run:i])))
            run = None
    per: dict[str, list[int]] = {}
    for n, t in inside:
        per.setdefault(n, []).append(t)
    chatter = {}
    for n, times in per.items():
        times.sort()
        flags = [i >= 2 and times[i] - times[i - 2] < MIN for i in range(len(times))]
        episodes = sum(1 for i, f in enumerate(flags) if f and not (i and flags[i - 1]))
        if episodes:
            chatter[n] = (episodes, len(times))
    tops = sorted(per, key=lambda n: (-len(per[n]), n))[:10]
    return {
        "counts": (len(inside), max(counts), sum(c > 2 for c in counts) / periods),
        "floods": floods,
        "top": [(n, len(per[n])) for n in tops],
        "chatter": chatter,
    }


@pytest.mark.parametrize("seed", range(6))
def test_random_journals_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    names = [f"a{int(i)}" for i in rng.zipf(1.6, n) % 40]
    ts = (T0 + rng.integers(0, 4 * 3600, n) * S).tolist()
    for burst in range(3):  # bursts make floods and chattering
        at = T0 + int(rng.integers(0, 4 * 3600)) * S
        names += [f"b{burst}"] * 15
        ts += [at + k * 7 * S for k in range(15)]
    start, end = T0 + 17 * MIN + 3 * S, T0 + 3 * 3600 * S
    k = alarm_kpis(names, np.array(ts), start_ns=start, end_ns=end)
    want = reference(names, ts, start, end)
    assert (k.activations, k.peak_per_10min, k.share_over_manageable) == want["counts"]
    assert [(f.start_ns, f.end_ns, f.alarms) for f in k.floods] == want["floods"]
    assert [(b.alarm, b.count) for b in k.bad_actors] == want["top"]
    assert {c.alarm: (c.episodes, c.activations) for c in k.chattering} == want["chatter"]


def test_an_empty_period_and_a_backwards_one() -> None:
    k = alarm_kpis([], np.zeros(0, np.int64), start_ns=T0, end_ns=T0 + MIN)
    assert (k.activations, k.periods, k.floods, k.bad_actors, k.chattering) == (0, 1, [], [], [])
    with pytest.raises(ValueError, match="end must be after start"):
        alarm_kpis([], np.zeros(0, np.int64), start_ns=T0, end_ns=T0)
