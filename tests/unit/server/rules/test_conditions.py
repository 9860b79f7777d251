"""Conditions over batches against a plain loop written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.model import Quality
from shopfloor.model.expressions import compile_expression
from shopfloor.server.rules.conditions import ConditionKind, Conditions, ExpressionConditions

HIGH, LOW, STATE, BAD, RATE, DEVIATION = (
    ConditionKind.HIGH,
    ConditionKind.LOW,
    ConditionKind.STATE,
    ConditionKind.BAD_QUALITY,
    ConditionKind.RATE,
    ConditionKind.DEVIATION,
)


def reference(
    rules: list[tuple[int, ConditionKind, float, float, int]],
    active: list[bool],
    points: list[tuple[int, int, float, int]],
    carried: dict[int, tuple[int, float]],
    setpoints: dict[int, list[tuple[int, float]]],
) -> list[tuple[int, int, bool, float]]:
    """Per rule, its tag's points in time order (ties in arrival order), one at a time.

    ``carried``: per RATE rule, its tag's last usable point; ``setpoints``: every usable
    point of each tag seen so far, for DEVIATION rules (the last at or before a time).
    """

    def usable(q: int, v: float) -> bool:
        return q & 0x80000000 == 0 and not math.isnan(v)

    for tag, ts, v, q in points:
        if usable(q, v):
            setpoints.setdefault(tag, []).append((ts, v))
    out = []
    for r, (tag, kind, limit, band, ref) in enumerate(rules):
        mine = sorted((p for p in points if p[0] == tag), key=lambda p: p[1])
        for _, ts, v, q in mine:
            bad = q & 0x80000000 != 0
            x = v
            if kind is RATE and usable(q, v):
                prev = carried.get(r)
                carried[r] = (ts, v)
                if prev is None or ts <= prev[0]:
                    continue
                x = abs(v - prev[1]) / ((ts - prev[0]) / 1e9)
            if kind is DEVIATION and usable(q, v):
                before = [s for s in setpoints.get(ref, []) if s[0] <= ts]
                if not before:
                    continue
                x = abs(v - max(before, key=lambda s: s[0])[1])  # the last of equal times
            if kind is BAD:
                new = bad
            elif bad or math.isnan(x):
                continue
            elif kind in (HIGH, RATE, DEVIATION):
                new = True if x > limit else False if x <= limit - band else active[r]
            elif kind is LOW:
                new = True if x < limit else False if x >= limit + band else active[r]
            else:
                new = x == limit
            if new != active[r]:
                active[r] = new
                out.append((r, ts, new, v))
    return sorted(out, key=lambda c: (c[0], c[1]))


def changes(conditions: Conditions, points: list[tuple[int, int, float, int]]) -> list[tuple]:
    tag, ts, value, quality = (np.array(c) for c in zip(*points, strict=True))
    got = conditions.evaluate(
        tag.astype(np.int64),
        ts.astype(np.int64),
        value.astype(np.float64),
        quality.astype(np.uint32),
    )
    return [
        (int(r), int(t), bool(a), float(v))
        for r, t, a, v in zip(got.rule, got.ts, got.active, got.value, strict=True)
    ]


def test_a_high_limit_with_deadband_comes_on_above_and_goes_off_below_the_band() -> None:
    c = Conditions([7], [HIGH], [80.0], [2.0])
    points = [(7, t, v, 0) for t, v in enumerate([79, 81, 79, 78.5, 78, 81, 77.9])]
    assert changes(c, points) == [
        (0, 1, True, 81.0),
        (0, 4, False, 78.0),
        (0, 5, True, 81.0),
        (0, 6, False, 77.9),
    ]
    assert c.active.tolist() == [False]


def test_state_carries_over_between_batches() -> None:
    c = Conditions([1, 1], [HIGH, LOW], [10.0, 0.0], [1.0, 1.0])
    assert changes(c, [(1, 0, 11.0, 0)]) == [(0, 0, True, 11.0)]
    assert changes(c, [(1, 1, 9.5, 0)]) == []  # inside the band: still on
    assert changes(c, [(1, 2, -1.0, 0), (1, 3, 9.0, 0)]) == [
        (0, 2, False, -1.0),
        (1, 2, True, -1.0),
        (1, 3, False, 9.0),
    ]


def test_bad_points_leave_limits_alone_and_drive_the_bad_quality_rule() -> None:
    c = Conditions([3, 3], [HIGH, BAD], [50.0, 0.0], [0.0, 0.0])
    bad = int(Quality.BAD_COMMUNICATION_ERROR)
    points = [(3, 0, 60.0, 0), (3, 1, 0.0, bad), (3, 2, 55.0, 0), (3, 3, math.nan, 0)]
    points.append((3, 4, 40.0, int(Quality.UNCERTAIN)))  # Uncertain still counts
    assert changes(c, points) == [
        (0, 0, True, 60.0),
        (0, 4, False, 40.0),  # the Bad point at 1 and the NaN at 3 did not clear it
        (1, 1, True, 0.0),
        (1, 2, False, 55.0),
    ]


@pytest.mark.parametrize("seed", range(8))
def test_random_batches_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kinds = [HIGH, LOW, STATE, BAD, RATE, DEVIATION]
    rules = []
    for _ in range(30):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        limit = (
            float(rng.integers(1, 4)) if kind in (RATE, DEVIATION) else float(rng.integers(-3, 4))
        )
        ref = int(rng.integers(0, 8)) if kind is DEVIATION else -1
        band = float(rng.choice([0.0, 0.5, 2.0]))
        rules.append((int(rng.integers(0, 6)), kind, limit, band, ref))
    c = Conditions(*zip(*rules, strict=True))
    active = [False] * len(rules)
    carried: dict[int, tuple[int, float]] = {}
    setpoints: dict[int, list[tuple[int, float]]] = {}
    qualities = [0, int(Quality.UNCERTAIN), int(Quality.BAD_SENSOR_FAILURE)]
    for batch in range(5):
        points = [
            (
                int(rng.integers(0, 8)),  # tags 6 and 7 have no rules (some are setpoints)
                int(batch * 10**10 + rng.integers(0, 10**10)),  # up to 10 s apart
                float(rng.choice([math.nan, *np.round(rng.normal(0, 3, 9))])),
                qualities[int(rng.choice(3, p=[0.85, 0.05, 0.1]))],
            )
            for _ in range(200)
        ]
        want = reference(rules, active, points, carried, setpoints)
        got = changes(c, points)
        assert [g[:3] for g in got] == [w[:3] for w in want]
        assert np.allclose([g[3] for g in got], [w[3] for w in want], equal_nan=True)
        assert c.active.tolist() == active


def test_a_resent_older_batch_never_moves_a_condition_back() -> None:
    c = Conditions([1], [HIGH], [10.0], [0.0])
    first = [(1, 0, 5.0, 0), (1, 1, 12.0, 0)]
    assert changes(c, first) == [(0, 1, True, 12.0)]
    assert changes(c, first) == []  # the same batch again: the 5.0 at 0 is old news
    assert changes(c, [(1, 2, 4.0, 0)]) == [(0, 2, False, 4.0)]


def test_bad_rule_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="deadband must be >= 0"):
        Conditions([1], [HIGH], [1.0], [-1.0])
    with pytest.raises(ValueError, match="differ in length"):
        Conditions([1, 2], [HIGH], [1.0], [0.0])
    with pytest.raises(ValueError, match="unknown condition kind"):
        Conditions([1], [9], [1.0], [0.0])


def test_expressions_over_several_tags_match_a_plain_loop() -> None:
    rng = np.random.default_rng(4)
    text = "temp > 2 and state == 1 or abs(flow - sp) > 3"
    names = {"temp": 0, "state": 1, "flow": 2, "sp": 3}
    c = ExpressionConditions([(compile_expression(text, set(names)), names)])
    last = dict.fromkeys(names, math.nan)
    active = False
    for batch in range(6):
        points = sorted(
            (
                (
                    int(rng.integers(0, 5)),
                    int(batch * 1000 + rng.integers(0, 1000)),
                    float(rng.choice([math.nan, *np.round(rng.normal(1, 3, 7))])),
                    int(rng.choice([0, int(Quality.BAD)], p=[0.9, 0.1])),
                )
                for _ in range(60)
            ),
            key=lambda p: p[1],
        )
        want = []
        for tag, ts, v, q in points:
            if tag == 4:  # no input
                continue
            name = next(n for n, i in names.items() if i == tag)
            last[name] = math.nan if q & 0x80000000 else v
            t, st, fl, sp = (last[n] for n in ("temp", "state", "flow", "sp"))
            if any(math.isnan(x) for x in (t, st, fl, sp)):
                continue  # an input without a usable value: the condition stays
            now = bool((t > 2 and st == 1) or abs(fl - sp) > 3)
            if now != active:
                want.append((ts, now))
                active = now
        tag, ts, value, quality = (np.array(col) for col in zip(*points, strict=True))
        got = c.evaluate(
            tag.astype(np.int64),
            ts.astype(np.int64),
            value.astype(float),
            quality.astype(np.uint32),
        )
        assert list(zip(got.ts.tolist(), got.active.tolist(), strict=True)) == want
