"""Control chart limits and capability against published worked examples and numpy.

Sources (the data below are typed in by hand):

- Piston rings: Montgomery, D. C., *Introduction to Statistical Quality Control*, 6th ed.
  (Wiley, 2009), Example 6.1, Table 6.3 (inside diameter of forged automobile engine
  piston rings, 25 preliminary subgroups of 5; page not checked against a copy): X̄̄ =
  74.001, R̄ = 0.023, X̄ chart 73.988 / 74.014, R chart 0 / 0.049. The digits below are
  those of the ``pistonrings`` data set of the R package qcc (Scrucca, L. (2004) "qcc: an
  R package for quality control charting and statistical process monitoring", *R News*
  4(1), 11-17), whose published output for the first 25 samples they reproduce to every
  digit: centre 74.00118, standard deviation 0.009785039, limits 73.98805 / 74.01431, and
  against 73.95 / 74.05: Cp 1.703, Cp_l 1.743, Cp_u 1.663, Cp_k 1.663. Against the book
  they reproduce X̄̄ and the X̄ limits to its three decimals but give R̄ = 0.02276 (the
  book's table sums to ΣR = 0.581, these to 0.569: a few digits of the printed table
  differ from qcc's copy), so D4·R̄ is 0.048 here; the book's 0.049 is 2.114 × 0.023 from
  its own R̄, asserted as that arithmetic. X̄-S is checked against a direct computation,
  not the book's Example 6.3 (its S̄ = 0.0094 comes from the book's digits; these give
  0.00924).
- Individuals: NIST/SEMATECH e-Handbook of Statistical Methods, section 6.3.2.2
  ("Individuals Control Charts"), the flow-rate example of 10 batches: x̄ = 50.81,
  MR̄ = 1.8778, I chart 45.8159 / 55.8041, MR chart UCL = 3.267 × MR̄ ≈ 6.13.
- Chart factors: Montgomery, 6th ed., Appendix VI; ASTM E2587 Table 1; NIST/SEMATECH
  section 6.3.2 (c4, A3, B3, B4 as printed, to their digits).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.errors import PayloadError
from shopfloor.server.analytics import spc
from shopfloor.server.analytics.spc import ChartKind

PISTON_RINGS = [
    (74.030, 74.002, 74.019, 73.992, 74.008),
    (73.995, 73.992, 74.001, 74.011, 74.004),
    (73.988, 74.024, 74.021, 74.005, 74.002),
    (74.002, 73.996, 73.993, 74.015, 74.009),
    (73.992, 74.007, 74.015, 73.989, 74.014),
    (74.009, 73.994, 73.997, 73.985, 73.993),
    (73.995, 74.006, 73.994, 74.000, 74.005),
    (73.985, 74.003, 73.993, 74.015, 73.988),
    (74.008, 73.995, 74.009, 74.005, 74.004),
    (73.998, 74.000, 73.990, 74.007, 73.995),
    (73.994, 73.998, 73.994, 73.995, 73.990),
    (74.004, 74.000, 74.007, 74.000, 73.996),
    (73.983, 74.002, 73.998, 73.997, 74.012),
    (74.006, 73.967, 73.994, 74.000, 73.984),
    (74.012, 74.014, 73.998, 73.999, 74.007),
    (74.000, 73.984, 74.005, 73.998, 73.996),
    (73.994, 74.012, 73.986, 74.005, 74.007),
    (74.006, 74.010, 74.018, 74.003, 74.000),
    (73.984, 74.002, 74.003, 74.005, 73.997),
    (74.000, 74.010, 74.013, 74.020, 74.003),
    (73.988, 74.001, 74.009, 74.005, 73.996),
    (74.004, 73.999, 73.990, 74.006, 74.009),
    (74.010, 73.989, 73.990, 74.009, 74.014),
    (74.015, 74.008, 73.993, 74.000, 74.010),
    (73.982, 73.984, 73.995, 74.017, 74.013),
]
FLOW_RATE = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]


def _rings() -> spc.Subgroups:
    values = np.array(PISTON_RINGS).ravel()
    return spc.subgroups_by_count(np.arange(values.size) * 1_000_000_000, values, 5)


def test_xbar_r_limits_of_the_piston_rings_match_montgomery_example_6_1_and_qcc() -> None:
    groups = _rings()
    limits = spc.estimate_limits(ChartKind.XBAR_R, groups)
    chart = spc.apply_limits(limits, groups)
    # Montgomery, to the book's three decimals
    assert round(limits.center, 3) == 74.001
    assert round(limits.dispersion_bar, 3) == 0.023
    assert round(chart.x_lcl[0], 3) == 73.988
    assert round(chart.x_ucl[0], 3) == 74.014
    assert chart.d_lcl[0] == 0.0
    assert spc.factors(5).d4 == 2.114
    assert round(2.114 * round(limits.dispersion_bar, 3), 3) == 0.049  # the book's rounding
    assert round(chart.d_ucl[0], 3) == 0.048
    # qcc: centre and sigma to every printed digit; limits within one unit of qcc's last
    # digit (qcc uses 3·σ/√n, i.e. A2 = 0.57683 unrounded; the book's A2 = 0.577 moves
    # them by 4e-6)
    assert round(limits.center, 5) == 74.00118
    assert f"{limits.sigma:.9f}" == "0.009785039"
    assert chart.x_lcl[0] == pytest.approx(73.98805, abs=1e-5)
    assert chart.x_ucl[0] == pytest.approx(74.01431, abs=1e-5)
    assert limits.subgroups == 25
    assert limits.size == 5


def test_capability_of_the_piston_rings_matches_qcc_process_capability() -> None:
    groups = _rings()
    limits = spc.estimate_limits(ChartKind.XBAR_R, groups)
    cap = spc.capability(groups.values, sigma_within=limits.sigma, lsl=73.95, usl=74.05)
    assert cap.cp is not None
    assert cap.cpl is not None
    assert cap.cpu is not None
    assert cap.cpk is not None
    assert (round(cap.cp, 3), round(cap.cpl, 3), round(cap.cpu, 3)) == (1.703, 1.743, 1.663)
    assert round(cap.cpk, 3) == 1.663
    assert cap.points == 125
    # Pp and Ppk: the same formulas with the overall sample sigma (n - 1)
    overall = float(np.std(np.array(PISTON_RINGS), ddof=1))
    assert cap.sigma_overall == pytest.approx(overall, rel=1e-12)
    assert cap.pp == pytest.approx(0.1 / (6 * overall), rel=1e-12)
    assert cap.ppk == pytest.approx((74.05 - cap.mean) / (3 * overall), rel=1e-12)


def test_cp_from_montgomerys_rounded_sigma() -> None:
    """Montgomery 6th ed. section 6.2.1: σ̂ = R̄/d2 = 0.023/2.326 = 0.0099 and
    Cp = (74.05 - 73.95)/(6 × 0.0099) = 1.68."""
    assert round(0.023 / (spc.factors(5).d2 or 0), 4) == 0.0099
    cap = spc.capability([74.0, 74.002], sigma_within=0.0099, lsl=73.95, usl=74.05)
    assert cap.cp is not None
    assert round(cap.cp, 2) == 1.68


def test_one_sided_specifications_have_only_their_side() -> None:
    cap = spc.capability([1.0, 2.0, 3.0], sigma_within=1.0, lsl=None, usl=5.0)
    assert cap.cp is None
    assert cap.pp is None
    assert cap.cpl is None
    assert cap.cpu == pytest.approx(1.0)
    assert cap.cpk == pytest.approx(1.0)
    assert cap.ppk == pytest.approx(1.0)  # overall s of 1, 2, 3 is 1
    low = spc.capability([1.0, 2.0, 3.0], sigma_within=0.5, lsl=0.5, usl=None)
    assert low.cpk == pytest.approx(1.0)
    assert low.cpu is None


@pytest.mark.parametrize(
    ("lsl", "usl"), [(None, None), (2.0, 1.0), (1.0, 1.0)], ids=["none", "crossed", "equal"]
)
def test_capability_refuses_impossible_specifications(lsl: float | None, usl: float | None) -> None:
    with pytest.raises(PayloadError) as err:
        spc.capability([1.0, 2.0], sigma_within=1.0, lsl=lsl, usl=usl)
    assert err.value.field == "usl"


def test_imr_limits_match_the_nist_flow_rate_example() -> None:
    groups = spc.individuals(np.arange(10), FLOW_RATE)
    limits = spc.estimate_limits(ChartKind.IMR, groups)
    chart = spc.apply_limits(limits, groups)
    assert round(limits.center, 2) == 50.81
    assert round(limits.dispersion_bar, 4) == 1.8778
    assert round(chart.x_ucl[0], 4) == 55.8041
    assert round(chart.x_lcl[0], 4) == 45.8159
    assert round(chart.d_ucl[0], 2) == 6.13
    assert chart.d_lcl[0] == 0.0
    assert math.isnan(chart.d[0])  # no moving range before the second point
    assert chart.d[1:] == pytest.approx([2.0, 2.3, 1.4, 3.5, 3.4, 1.4, 0.2, 1.2, 1.5])


@pytest.mark.parametrize(
    ("n", "c4", "a3", "b3", "b4"),
    [
        (2, 0.7979, 2.659, 0.0, 3.267),
        (5, 0.9400, 1.427, 0.0, 2.089),
        (6, 0.9515, 1.287, 0.030, 1.970),
        (10, 0.9727, 0.975, 0.284, 1.716),
        (20, 0.9869, 0.680, 0.510, 1.490),
        (25, 0.9896, 0.606, 0.565, 1.435),
    ],
)
def test_c4_based_factors_match_the_published_table(
    n: int, c4: float, a3: float, b3: float, b4: float
) -> None:
    f = spc.factors(n)
    assert round(f.c4, 4) == c4
    assert (round(f.a3, 3), round(f.b3, 3), round(f.b4, 3)) == (a3, b3, b4)


@pytest.mark.parametrize("n", range(2, 26))
def test_range_factors_agree_with_their_definitions(n: int) -> None:
    """The tabled A2, D3, D4 are 3/(d2√n), max(0, 1 - 3·d3/d2), 1 + 3·d3/d2 computed from
    unrounded d2 and d3: from the three-decimal d2, d3 they agree to 0.002."""
    f = spc.factors(n)
    assert f.d2 is not None
    assert f.d3 is not None
    assert f.a2 == pytest.approx(3 / (f.d2 * math.sqrt(n)), abs=0.0011)
    assert f.d4 == pytest.approx(1 + 3 * f.d3 / f.d2, abs=0.002)
    assert f.d3_limit == pytest.approx(max(0.0, 1 - 3 * f.d3 / f.d2), abs=0.002)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 25])
def test_d2_is_the_expected_range_of_a_standard_normal_sample(n: int) -> None:
    """d2(n) = ∫ 1 - Φ(x)^n - (1 - Φ(x))^n dx, integrated numerically."""
    x = np.linspace(-9.0, 9.0, 200_001)
    phi = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    integrand = 1 - phi**n - (1 - phi) ** n
    expected = float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(x)))
    assert spc.factors(n).d2 == pytest.approx(expected, abs=0.0006)


def test_c4_stays_finite_for_large_subgroups() -> None:
    assert spc.c4(400) == pytest.approx(1 - 1 / (4 * 400), abs=1e-5)
    assert spc.factors(100).d2 is None


def test_xbar_s_against_a_direct_computation() -> None:
    groups = _rings()
    grid = np.array(PISTON_RINGS)
    limits = spc.estimate_limits(ChartKind.XBAR_S, groups)
    chart = spc.apply_limits(limits, groups)
    s_bar = float(np.mean(grid.std(axis=1, ddof=1)))
    f = spc.factors(5)
    assert limits.dispersion_bar == pytest.approx(s_bar, rel=1e-12)
    assert limits.sigma == pytest.approx(s_bar / f.c4, rel=1e-12)
    assert chart.x_ucl == pytest.approx(grid.mean() + f.a3 * s_bar, rel=1e-12)
    assert chart.x_lcl == pytest.approx(grid.mean() - f.a3 * s_bar, rel=1e-12)
    assert chart.d_ucl == pytest.approx(f.b4 * s_bar, rel=1e-12)
    assert chart.d_lcl == pytest.approx(0.0)
    assert chart.d == pytest.approx(grid.std(axis=1, ddof=1))
    assert chart.x_sigma == pytest.approx(f.a3 * s_bar / 3, rel=1e-12)


def test_phase_two_applies_the_baseline_limits_unchanged() -> None:
    rng = np.random.default_rng(7)
    baseline_values = rng.normal(10.0, 1.0, 100)
    later = rng.normal(13.0, 1.0, 100)  # a shift of 3 sigma
    ts = np.arange(200)
    base = spc.subgroups_by_count(ts[:100], baseline_values, 4)
    limits = spc.estimate_limits(ChartKind.XBAR_R, base)
    chart = spc.apply_limits(limits, spc.subgroups_by_count(ts[100:], later, 4))
    grid = baseline_values.reshape(25, 4)
    r_bar = float(np.ptp(grid, axis=1).mean())
    assert chart.x_center == pytest.approx(grid.mean())
    assert chart.x_ucl == pytest.approx(grid.mean() + 0.729 * r_bar)
    assert chart.d_ucl == pytest.approx(2.282 * r_bar)
    assert np.mean(chart.x > chart.x_ucl) > 0.9


def test_count_subgroups_drop_the_incomplete_tail_and_bad_values() -> None:
    groups = spc.subgroups_by_count(np.arange(8), [1.0, 2.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0], 3)
    assert groups.mean.tolist() == [2.0, 5.0]
    assert groups.start_ns.tolist() == [0, 4]
    assert groups.end_ns.tolist() == [3, 6]
    with pytest.raises(PayloadError) as err:
        spc.subgroups_by_count(np.arange(3), [1.0, 2.0, 3.0], 1)
    assert err.value.field == "subgroup_size"


def test_bucket_subgroups_against_a_loop() -> None:
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(0, 60_000, 500))
    values = rng.normal(5.0, 2.0, 500)
    groups = spc.subgroups_by_bucket(ts, values, 1000, min_size=3)
    expected = []
    for start in range(0, 60_000, 1000):
        inside = values[(ts >= start) & (ts < start + 1000)]
        if inside.size >= 3:
            expected.append((start, inside.size, inside.mean(), np.ptp(inside), inside.std(ddof=1)))
    assert groups.start_ns.tolist() == [e[0] for e in expected]
    assert groups.size.tolist() == [e[1] for e in expected]
    assert groups.mean == pytest.approx([e[2] for e in expected])
    assert groups.range == pytest.approx([e[3] for e in expected])
    assert groups.stdev == pytest.approx([e[4] for e in expected])
    assert groups.values.size == groups.size.sum()


def test_varying_sizes_get_limits_for_their_own_size() -> None:
    rng = np.random.default_rng(5)
    sizes = np.array([3, 5, 4, 5, 3, 6] * 5)
    values = rng.normal(0.0, 1.0, int(sizes.sum()))
    ts = np.repeat(np.arange(sizes.size) * 10, sizes) + np.concatenate(
        [np.arange(s) for s in sizes]
    )
    groups = spc.subgroups_by_bucket(ts, values, 10)
    assert groups.size.tolist() == sizes.tolist()
    for kind, dispersion, unbias in (
        (ChartKind.XBAR_R, groups.range, [spc.factors(int(n)).d2 or 0 for n in sizes]),
        (ChartKind.XBAR_S, groups.stdev, [spc.factors(int(n)).c4 for n in sizes]),
    ):
        limits = spc.estimate_limits(kind, groups)
        sigma = float(np.mean(dispersion / np.array(unbias)))
        assert limits.sigma == pytest.approx(sigma)
        assert limits.size is None
        assert limits.center == pytest.approx(values.mean())
        chart = spc.apply_limits(limits, groups)
        assert chart.x_ucl - chart.x_center == pytest.approx(
            [
                (spc.factors(int(n)).a2 or 0) * (spc.factors(int(n)).d2 or 0) * sigma
                if kind is ChartKind.XBAR_R
                else 3 * sigma / math.sqrt(n)
                for n in sizes
            ]
        )


def test_baseline_and_chart_errors_name_the_field() -> None:
    one = spc.subgroups_by_count(np.arange(5), [1.0, 2.0, 3.0, 4.0, 5.0], 5)
    with pytest.raises(PayloadError) as err:
        spc.estimate_limits(ChartKind.XBAR_R, one)
    assert err.value.field == "baseline"
    big = spc.subgroups_by_count(np.arange(60), np.arange(60.0), 30)
    with pytest.raises(PayloadError) as err:
        spc.estimate_limits(ChartKind.XBAR_R, big)
    assert err.value.field == "baseline"
    assert spc.estimate_limits(ChartKind.XBAR_S, big).size == 30
