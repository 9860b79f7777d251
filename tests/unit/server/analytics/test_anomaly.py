"""The streaming detectors against plain-loop references on random data.

Each reference is written the slow, obvious way (a Python list per tag, ``statistics``
median, one row at a time), independently of the vectorised implementation; both must
agree to rounding however the rows are split into batches.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.server.analytics.anomaly import (
    MAD_SCALE,
    DetectorSettings,
    Ewma,
    MachineDetector,
    Mahalanobis,
    RobustZ,
    chi2_quantile,
    exceeds,
)


def _reference_baselines(
    x: np.ndarray, *, window: int, refresh: int, min_points: int, min_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Median and scale in force at each row, the slow way."""
    steps, tags = x.shape
    held: list[list[float]] = [[] for _ in range(tags)]
    med = np.full(x.shape, np.nan)
    scale = np.full(x.shape, np.nan)
    current = [(math.nan, math.nan)] * tags
    for i in range(steps):
        if i % refresh == 0:
            current = []
            for k in range(tags):
                values = held[k][-window:]
                if len(values) >= min_points:
                    m = statistics.median(values)
                    mad = statistics.median(abs(v - m) for v in values)
                    current.append((m, max(MAD_SCALE * mad, min_scale)))
                else:
                    current.append((math.nan, math.nan))
        for k in range(tags):
            med[i, k], scale[i, k] = current[k]
            if math.isfinite(x[i, k]):
                held[k].append(float(x[i, k]))
    return med, scale


def _random(seed: int, steps: int, tags: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=(steps, tags)) * rng.uniform(0.1, 5, tags) + rng.normal(0, 9, tags)
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _in_pieces(detector: RobustZ | Ewma | Mahalanobis, x: np.ndarray, cuts: list[int]):
    edges = sorted({0, len(x), *(c % (len(x) + 1) for c in cuts)})
    parts = [detector.learn_score(x[a:b]) for a, b in itertools.pairwise(edges)]
    return np.concatenate(parts)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 120),
    tags=st.integers(1, 4),
    window=st.integers(3, 30),
    refresh=st.integers(1, 9),
    missing=st.sampled_from([0.0, 0.2, 0.7]),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_robust_z_matches_a_loop(  # noqa: PLR0917 - hypothesis draws each argument
    seed: int, steps: int, tags: int, window: int, refresh: int, missing: float, cuts: list[int]
) -> None:
    min_points = min(window, 3 + seed % 5)
    x = _random(seed, steps, tags, missing)
    got = _in_pieces(
        RobustZ(tags, window=window, refresh=refresh, min_points=min_points, min_scale=1e-3),
        x,
        cuts,
    )
    med, scale = _reference_baselines(
        x, window=window, refresh=refresh, min_points=min_points, min_scale=1e-3
    )
    np.testing.assert_allclose(got, (x - med) / scale, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 700),
    tags=st.integers(1, 3),
    lam=st.sampled_from([0.01, 0.05, 0.2, 1.0]),
    refresh=st.integers(1, 9),
    missing=st.sampled_from([0.0, 0.3]),
    cuts=st.lists(st.integers(0, 800), max_size=3),
)
def test_ewma_matches_a_loop(  # noqa: PLR0917 - hypothesis draws each argument
    seed: int, steps: int, tags: int, lam: float, refresh: int, missing: float, cuts: list[int]
) -> None:
    x = _random(seed, steps, tags, missing)
    got = _in_pieces(
        Ewma(tags, lam=lam, window=20, refresh=refresh, min_points=5, min_scale=1e-3), x, cuts
    )
    med, scale = _reference_baselines(x, window=20, refresh=refresh, min_points=5, min_scale=1e-3)
    want = np.full(x.shape, np.nan)
    for k in range(tags):
        s = math.nan
        for i in range(steps):
            v = x[i, k]
            if math.isfinite(v):
                s = v if math.isnan(s) else lam * v + (1 - lam) * s
                want[i, k] = (s - med[i, k]) / (scale[i, k] * math.sqrt(lam / (2 - lam)))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8, equal_nan=True)


def _reference_mahalanobis(
    x: np.ndarray, *, window: int, refresh: int, min_points: int, trim: float, ridge: float
) -> np.ndarray:
    p = x.shape[1]
    rows: list[np.ndarray] = []
    out = np.full(len(x), np.nan)
    fit: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    seen = 0
    for i, row in enumerate(x):
        if not np.isfinite(row).all():
            continue
        if seen % refresh == 0 and len(rows) >= min_points:
            base = np.array(rows[-window:])
            center = np.median(base, axis=0)
            scale = np.maximum(MAD_SCALE * np.median(np.abs(base - center), axis=0), 1e-12)
            z = (base - center) / scale
            inv = np.linalg.inv(np.atleast_2d(np.cov(z.T)) + ridge * np.eye(p))
            d2 = np.array([r @ inv @ r for r in z])
            kept = z[np.argsort(d2, kind="stable")[: max(p + 2, int(trim * len(z)))]]
            prec = np.linalg.inv(np.atleast_2d(np.cov(kept.T)) + ridge * np.eye(p))
            d2 = np.array([r @ prec @ r for r in z])
            prec = prec / (float(np.median(d2)) / chi2_quantile(0.5, p))
            fit = (center, scale, prec)
        if fit is not None:
            zr = (row - fit[0]) / fit[1]
            out[i] = zr @ fit[2] @ zr
        rows.append(row)
        seen += 1
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 150),
    features=st.integers(1, 3),
    refresh=st.integers(1, 20),
    cuts=st.lists(st.integers(0, 200), max_size=3),
)
def test_mahalanobis_matches_a_loop(
    seed: int, steps: int, features: int, refresh: int, cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(features, features))
    x = rng.normal(size=(steps, features)) @ mix + rng.normal(0, 5, features)
    x[rng.random(x.shape) < 0.1] = np.nan
    kwargs = {"window": 40, "refresh": refresh, "min_points": features + 8}
    got = _in_pieces(Mahalanobis(features, trim=0.9, ridge=1e-3, **kwargs), x, cuts)
    want = _reference_mahalanobis(x, trim=0.9, ridge=1e-3, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_mahalanobis_distance_is_chi2_on_gaussian_data() -> None:
    """Calibrated: on correlated Gaussian data the share above the 99 % χ² quantile is ≈1 %."""
    rng = np.random.default_rng(7)
    cov = np.array([[4.0, 1.8, 0.0], [1.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    x = rng.multivariate_normal([10, -3, 50], cov, size=40_000)
    det = Mahalanobis(3, window=5000, refresh=500, min_points=2000)
    d2 = det.learn_score(x)[5000:]
    share = float(np.mean(d2 > chi2_quantile(0.99, 3)))
    assert 0.006 < share < 0.016


def test_chi2_quantile_matches_known_values() -> None:
    # published table values (e.g. NIST/SEMATECH handbook 1.3.6.7.4)
    assert chi2_quantile(0.95, 1) == pytest.approx(3.841, rel=1e-3)
    assert chi2_quantile(0.99, 2) == pytest.approx(9.210, rel=1e-3)
    assert chi2_quantile(0.999, 5) == pytest.approx(20.515, rel=0.02)
    assert chi2_quantile(0.5, 4) == pytest.approx(3.357, rel=0.01)


def test_a_step_is_flagged_by_z_and_a_small_shift_by_the_ewma() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (4000, 2))
    x[3000:, 0] += 1.0  # small sustained shift: under any single-point threshold
    x[3500, 1] += 12.0  # one big spike
    det = MachineDetector(
        2,
        DetectorSettings(
            window=2000,
            min_points=500,
            ewma_lambda=0.05,
            ewma_limit=6.0,
            z_threshold=6.0,
            mahalanobis_alpha=0,
        ),
    )
    scores = det.learn_score(x)
    assert not scores.flagged[:3000].any()
    assert exceeds(scores.ewma[3000:3300, 0], 6.0, "up").any()
    assert not exceeds(scores.z[3000:3300, 0], 6.0, "up").any()
    assert scores.flagged[3500]
    assert det.describe(int(scores.cause[3500])) == ("z", 1)


def test_bad_rows_score_infinity() -> None:
    det = MachineDetector(2)
    bad = np.zeros((5, 2), dtype=bool)
    bad[2, 1] = True
    scores = det.learn_score(np.full((5, 2), np.nan), bad)
    assert scores.flagged.tolist() == [False, False, True, False, False]
    assert det.describe(int(scores.cause[2])) == ("bad", None)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"window": 2}, "window"),
        ({"refresh": 0}, "refresh"),
        ({"min_points": 1}, "min_points"),
        ({"min_scale": 0.0}, "min_scale"),
    ],
)
def test_bad_parameters_name_themselves(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        RobustZ(2, **kwargs)  # type: ignore[arg-type]


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(steps, 3\)"):
        RobustZ(3).learn_score(np.zeros((4, 2)))
