"""Run rules: the vectorised rules against a plain loop written from the definitions
(random series, hypothesis), and hand-made series that break exactly one rule each.

Definitions: Western Electric, *Statistical Quality Control Handbook* (1956), section
1-B; Nelson, L. S. (1984), *Journal of Quality Technology* 16(4), 237-239. The sets
below are chosen so each series trips one rule of its family and no other.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.server.analytics.spc_rules import (
    ALL_RULES,
    NELSON,
    WESTERN_ELECTRIC,
    Violation,
    evaluate_rules,
    rule_hits,
)


def _reference(values: list[float], center: float, sigma: float) -> list[Violation]:
    """Every rule with for-loops, straight from the definitions."""
    z = [(v - center) / sigma for v in values]
    out: list[Violation] = []

    def k_of_m(rule: str, k: int, m: int, zone: float) -> None:
        for i in range(m - 1, len(z)):
            window = range(i - m + 1, i + 1)
            for sign in (1, -1):
                if sign * z[i] > zone:
                    beyond = [j for j in window if sign * z[j] > zone]
                    if len(beyond) >= k:
                        out.append(Violation(rule, i, tuple(beyond)))

    def run(rule: str, m: int, test: object) -> None:
        assert callable(test)
        for i in range(m - 1, len(z)):
            window = list(range(i - m + 1, i + 1))
            if test(window):
                out.append(Violation(rule, i, tuple(window)))

    for rule in ("WE1", "N1"):
        k_of_m(rule, 1, 1, 3.0)
    for rule in ("WE2", "N5"):
        k_of_m(rule, 2, 3, 2.0)
    for rule in ("WE3", "N6"):
        k_of_m(rule, 4, 5, 1.0)
    for rule, m in (("WE4", 8), ("N2", 9)):
        run(rule, m, lambda w: all(z[j] > 0 for j in w) or all(z[j] < 0 for j in w))
    run(
        "N3",
        6,
        lambda w: (
            all(values[j] > values[j - 1] for j in w[1:])
            or all(values[j] < values[j - 1] for j in w[1:])
        ),
    )

    def alternating(w: list[int]) -> bool:
        d = [values[j] - values[j - 1] for j in w[1:]]
        return all(a * b < 0 for a, b in itertools.pairwise(d))

    run("N4", 14, alternating)
    run("N7", 15, lambda w: all(abs(z[j]) < 1 for j in w))
    run("N8", 8, lambda w: all(abs(z[j]) > 1 for j in w))
    out.sort(key=lambda v: (v.index, ALL_RULES.index(v.rule)))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.integers(min_value=-8, max_value=8).map(lambda q: q / 2.5), min_size=0, max_size=80
    ),
    st.sampled_from([0.0, 0.4, -1.2]),
    st.sampled_from([1.0, 0.5, 2.0]),
)
def test_vectorised_rules_equal_the_loop(values: list[float], center: float, sigma: float) -> None:
    """Values on a coarse grid so ties, zone boundaries and the centre line all occur."""
    assert evaluate_rules(values, center, sigma, ALL_RULES) == _reference(values, center, sigma)


def test_random_normal_series_equal_the_loop() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        values = (rng.normal(0.3, 1.2, 300)).tolist()
        assert evaluate_rules(values, 0.0, 1.0, ALL_RULES) == _reference(values, 0.0, 1.0)


# Each series, with centre 0 and sigma 1, breaks exactly the one rule named within its
# family (Western Electric rules, or Nelson's).
_SINGLE = {
    # WE1/N1: one point beyond 3 sigma, alone
    "1": [0.5, -0.5, 3.5, -0.5, 0.5],
    # WE2/N5: 2 of 3 beyond 2 sigma (below), with a point inside between them
    "2/5": [0.5, -2.5, 0.5, -2.5, 0.5],
    # WE3/N6: 4 of 5 beyond 1 sigma above, one inside, never 2 beyond 2
    "3/6": [-0.5, 1.5, 1.5, 0.5, 1.5, 1.5, -0.5],
}


@pytest.mark.parametrize(
    ("series", "we", "nelson", "index"),
    [
        (_SINGLE["1"], "WE1", "N1", 2),
        (_SINGLE["2/5"], "WE2", "N5", 3),
        (_SINGLE["3/6"], "WE3", "N6", 5),
    ],
)
def test_shared_rules_fire_alone(series: list[float], we: str, nelson: str, index: int) -> None:
    assert [(v.rule, v.index) for v in evaluate_rules(series, 0.0, 1.0, WESTERN_ELECTRIC)] == [
        (we, index)
    ]
    assert [(v.rule, v.index) for v in evaluate_rules(series, 0.0, 1.0, NELSON)] == [
        (nelson, index)
    ]


def test_we4_eight_on_one_side() -> None:
    series = [-0.5, 0.2, 0.4, 0.3, 0.2, 0.5, 0.1, 0.6, 0.3, -0.2]
    found = evaluate_rules(series, 0.0, 1.0, WESTERN_ELECTRIC)
    assert found == [Violation("WE4", 8, (1, 2, 3, 4, 5, 6, 7, 8))]


@pytest.mark.parametrize(
    ("rule", "series", "index"),
    [
        # nine on one side (small, zig-zag so no trend, no 4 of 5 beyond 1 sigma)
        ("N2", [-0.5, 0.2, 0.6, 0.3, 0.7, 0.2, 0.5, 0.1, 0.6, 0.3, -0.4], 9),
        # six rising, crossing the centre line so no run on one side
        ("N3", [0.5, -0.9, -0.6, -0.3, 0.1, 0.4, 0.8, 0.2], 6),
        # fourteen alternating, crossing the centre, alternate sides (no run)
        ("N4", [0.1, -0.8, 0.7, -0.6, 0.8, -0.7, 0.6, -0.8, 0.7, -0.6, 0.8, -0.7, 0.6, -0.8], 13),
        # fifteen hugging the centre line on both sides, no trend or alternation of 14
        (
            "N7",
            [0.1, 0.2, -0.1, -0.2, 0.3, 0.2, 0.4, -0.3, -0.2, -0.1, 0.1, 0.2, -0.1, 0.1, 0.2],
            14,
        ),
        # eight beyond 1 sigma on alternating pairs of sides, none beyond 3 or 2-of-3 at 2
        ("N8", [1.5, 1.5, -1.5, -1.5, 1.5, 1.5, -1.5, -1.5], 7),
    ],
)
def test_each_nelson_rule_fires_alone(rule: str, series: list[float], index: int) -> None:
    found = evaluate_rules(series, 0.0, 1.0, NELSON)
    assert [(v.rule, v.index) for v in found] == [(rule, index)]
    assert found[0].points[-1] == index


def test_points_of_a_k_of_m_violation_are_the_ones_beyond() -> None:
    (v,) = evaluate_rules(_SINGLE["3/6"], 0.0, 1.0, ["WE3"])
    assert v.points == (1, 2, 4, 5)


def test_per_point_centre_and_sigma_and_gaps() -> None:
    values = np.array([10.0, 10.0, 31.0, np.nan, 31.0])
    sigma = np.array([1.0, 1.0, 10.0, 1.0, 5.0])
    found = evaluate_rules(values, 0.0, sigma, ["WE1"])
    assert [v.index for v in found] == [0, 1, 2, 4]
    assert evaluate_rules([1.0, 2.0, 3.0], 0.0, 0.0, ["WE1", "WE4"]) == []


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rule 'N9'"):
        evaluate_rules([1.0], 0.0, 1.0, ["N9"])


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_short_series_give_one_flag_per_point(n: int) -> None:
    x = np.arange(float(n))
    for rule in ALL_RULES:
        hits, _ = rule_hits(rule, x, x)
        assert hits.shape == x.shape
        assert not hits.any() or rule in {"WE1", "N1"}
