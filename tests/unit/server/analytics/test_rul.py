"""RUL fits against independent computations (numpy.polyfit) and known trends."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.server.analytics.rul import (
    NoEstimate,
    RulEstimate,
    _crossings,
    _fit_exponential,
    bucket_medians,
    estimate_rul,
    regime_start,
    t_quantile,
)

H = 3600 * 10**9
T0 = 1_700_000_000 * 10**9


def test_linear_trend_crosses_where_polyfit_says() -> None:
    rng = np.random.default_rng(1)
    hours = np.arange(0, 10, 0.1)
    y = 1.0 + 0.5 * hours + rng.normal(0, 0.05, len(hours))
    ts = T0 + (hours * H).astype(np.int64)
    est = estimate_rul(ts, y, threshold=8.0, model="linear")
    assert isinstance(est, RulEstimate)
    b, a = np.polyfit(hours, y, 1)
    want_h = (8.0 - a) / b
    assert (est.failure_ns - T0) / H == pytest.approx(want_h, abs=1e-3)
    assert est.low_ns < est.failure_ns < (est.high_ns or 0)
    assert est.slope == pytest.approx(b, rel=1e-9)
    assert est.model == "linear"


def test_exponential_trend_is_found_and_chosen() -> None:
    rng = np.random.default_rng(2)
    hours = np.arange(0, 12, 1 / 60)
    y = 0.8 * np.exp(0.15 * hours) * (1 + rng.normal(0, 0.02, len(hours)))
    ts = T0 + (hours * H).astype(np.int64)
    est = estimate_rul(ts, y, threshold=7.1)
    assert isinstance(est, RulEstimate)
    assert est.model == "exponential"
    true_h = math.log(7.1 / 0.8) / 0.15
    assert (est.failure_ns - T0) / H == pytest.approx(true_h, rel=0.02)
    assert est.low_ns <= T0 + true_h * H <= (est.high_ns or 0)
    assert est.slope == pytest.approx(0.15, rel=0.05)


def test_interval_covers_the_truth_at_about_its_confidence() -> None:
    covered = 0
    runs = 200
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        hours = np.arange(0, 5, 0.05)
        y = 2.0 + 0.3 * hours + rng.normal(0, 0.2, len(hours))
        est = estimate_rul(
            T0 + (hours * H).astype(np.int64), y, threshold=6.0, model="linear", confidence=0.9
        )
        assert isinstance(est, RulEstimate)
        truth = T0 + (4.0 / 0.3) * H
        covered += est.low_ns <= truth <= (est.high_ns or 2**62)
    assert 0.83 < covered / runs < 0.97


def _wear(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Five hours of exponential wear over a healthy level, minute buckets, AR(1) noise
    (correlated, as bucket medians around a trend are); and the true crossing of 7.1."""
    rng = np.random.default_rng(seed)
    hours = np.arange(0, 5, 1 / 60)
    noise = np.zeros(len(hours))
    shocks = rng.normal(0, 0.03, len(hours))
    for i in range(1, len(hours)):
        noise[i] = 0.5 * noise[i - 1] + shocks[i]
    y = 1.0 + np.exp(-1.0 + 0.3 * hours) + noise
    return T0 + (hours * H).astype(np.int64), y, (math.log(7.1 - 1.0) + 1.0) / 0.3


def test_exponential_interval_covers_the_truth_near_its_confidence() -> None:
    # The fitted offset is uncertain and the band of the fit with the offset held fixed
    # ignored it: it held the truth in 35 of these 60 runs (58 %). The bootstrap refits the
    # offset in every replica.
    runs = 60
    covered = 0
    for seed in range(runs):
        ts, y, true_h = _wear(seed)
        est = estimate_rul(ts, y, threshold=7.1, confidence=0.9)
        assert isinstance(est, RulEstimate)
        assert est.model == "exponential"
        truth = T0 + true_h * H
        covered += est.low_ns <= truth <= (est.high_ns or 2**62)
    assert 0.8 <= covered / runs <= 0.98, f"{covered} of {runs}"


def test_interval_is_the_same_on_every_refresh() -> None:
    ts, y, _ = _wear(3)
    first = estimate_rul(ts, y, threshold=7.1)
    again = estimate_rul(ts, y, threshold=7.1)
    assert first == again


def test_models_that_fit_about_equally_join_their_intervals() -> None:
    # Three hours of a gentle exponential: the line fits nearly as well (its Akaike weight
    # stays above 5 %), extrapolates much later, and the interval must say so.
    rng = np.random.default_rng(7)
    hours = np.arange(0, 3, 1 / 60)
    y = 1.0 + np.exp(0.5 + 0.1 * hours) + rng.normal(0, 0.05, len(hours))
    ts = T0 + (hours * H).astype(np.int64)
    both = estimate_rul(ts, y, threshold=7.1)
    line = estimate_rul(ts, y, threshold=7.1, model="linear")
    curve = estimate_rul(ts, y, threshold=7.1, model="exponential")
    assert isinstance(both, RulEstimate)
    assert isinstance(line, RulEstimate)
    assert isinstance(curve, RulEstimate)
    assert both.model == "exponential"
    assert both.failure_ns == curve.failure_ns
    assert line.failure_ns > curve.failure_ns
    assert both.low_ns == min(line.low_ns, curve.low_ns)
    assert line.high_ns is not None
    assert both.high_ns == max(line.high_ns, curve.high_ns or 0)
    assert both.low_ns < curve.failure_ns < line.failure_ns < both.high_ns


def test_a_clearly_curved_wear_keeps_the_exponential_interval_alone() -> None:
    ts, y, _ = _wear(5)
    auto = estimate_rul(ts, y, threshold=7.1)
    curve = estimate_rul(ts, y, threshold=7.1, model="exponential")
    assert auto == curve


def test_bootstrap_crossings_match_one_fit_per_replica() -> None:
    rng = np.random.default_rng(11)
    x = np.arange(-4, 0, 1 / 30)
    ys = 1.0 + np.exp(0.3 * x + 1.0) + rng.normal(0, 0.05, (6, len(x)))
    got = _crossings(x, ys, threshold=7.1, kind="exponential")
    for row, hours in zip(ys, got, strict=True):
        c, fit = _fit_exponential(x, row)
        assert hours == pytest.approx((math.log(7.1 - c) - fit.a) / fit.b, rel=1e-9)
    got = _crossings(x, ys, threshold=7.1, kind="linear")
    for row, hours in zip(ys, got, strict=True):
        b, a = np.polyfit(x, row, 1)
        assert hours == pytest.approx((7.1 - a) / b, rel=1e-9)
    assert _crossings(x, -ys, threshold=7.1, kind="linear").tolist() == [math.inf] * 6


def test_the_break_between_slow_and_fast_wear_is_found() -> None:
    # Three hours of slow healthy wear, then a fault: exponential growth from the same
    # level. Minute buckets; the break is bucket 180.
    rng = np.random.default_rng(12)
    hours = np.arange(0, 6, 1 / 60)
    fast = np.clip(hours - 3, 0, None)
    y = 1.5 + 0.03 * np.minimum(hours, 3) + 0.4 * np.expm1(0.8 * fast)
    y += rng.normal(0, 0.03, len(hours))
    ts = T0 + (hours * H).astype(np.int64)
    start = regime_start(ts, y)
    assert 170 <= start <= 190, start
    truth_h = 3 + math.log1p((7.1 - 1.5 - 0.09) / 0.4) / 0.8
    mixed = estimate_rul(ts, y, threshold=7.1)
    current = estimate_rul(ts[start:], y[start:], threshold=7.1)
    assert isinstance(mixed, RulEstimate)
    assert isinstance(current, RulEstimate)
    assert abs((current.failure_ns - T0) / H - truth_h) < abs((mixed.failure_ns - T0) / H - truth_h)
    assert current.low_ns <= T0 + truth_h * H <= (current.high_ns or 2**62)


def test_one_regime_has_no_break() -> None:
    for seed in range(5):
        ts, y, _ = _wear(seed)
        assert regime_start(ts, y) == 0
    assert regime_start(np.arange(20), np.linspace(1, 2, 20)) == 0  # too short to split


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (np.linspace(5, 4, 40), "no upward trend"),
        (np.full(40, 3.0), "no upward trend"),
        (np.linspace(1, 2, 5), "too few points"),
    ],
)
def test_refuses_with_the_reason(values: np.ndarray, reason: str) -> None:
    ts = T0 + np.arange(len(values)) * 60 * 10**9
    est = estimate_rul(ts, values, threshold=7.0)
    assert isinstance(est, NoEstimate)
    assert reason in est.reason


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="confidence"):
        estimate_rul([1, 2, 3], [1, 2, 3], threshold=5, confidence=1.5)
    with pytest.raises(ValueError, match="min_points"):
        estimate_rul([1, 2, 3], [1, 2, 3], threshold=5, min_points=2)


def test_bucket_medians_match_a_loop() -> None:
    rng = np.random.default_rng(4)
    ts = rng.integers(0, 100_000, 5000)
    v = rng.normal(size=5000)
    v[::17] = np.nan
    got_t, got_v = bucket_medians(ts, v, 1000, min_count=3)
    want: dict[int, list[float]] = {}
    for t, x in zip(ts.tolist(), v.tolist(), strict=True):
        if math.isfinite(x):
            want.setdefault(t // 1000, []).append(x)
    keys = sorted(k for k, xs in want.items() if len(xs) >= 3)
    assert got_t.tolist() == [k * 1000 + 500 for k in keys]
    np.testing.assert_allclose(got_v, [np.median(want[k]) for k in keys])


def test_t_quantile_matches_tables() -> None:
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=2e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=1e-2)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.960, abs=1e-3)
