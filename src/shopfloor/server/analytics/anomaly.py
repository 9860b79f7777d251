"""Streaming anomaly detectors: per tag (robust z-score, EWMA) and per machine (Mahalanobis).

Pure numpy, no I/O. Every detector takes batches as a matrix ``values`` of shape
``(steps, tags)`` (one row per sample time, one column per tag; NaN where a tag has no
usable value at that time: a Bad point, or the machine not in the state being watched)
and answers a score of the same shape, NaN where it cannot score. ``learn_score`` scores
each row against what was learned *before* it, then learns it, so a batch gives the same
scores whether it arrives whole or in pieces (river's ``score_one`` then ``learn_one``,
over a batch: the hot path moves columns, not points).

The baseline of the per-tag detectors is the median and the MAD (scaled by 1.4826, so it
estimates the standard deviation of Gaussian noise) of each tag's last ``window`` finite
values. Median and MAD, not mean and standard deviation, because the anomalies we look
for would otherwise widen the very limits that should catch them. The baseline is
recomputed every ``refresh`` rows (not every row: a median over an hour of 1 s data per
point would cost more than everything else the server does); rows between two refreshes
are scored against the same baseline.

* :class:`RobustZ`: the score of a value is ``(x - median) / scale``.
* :class:`Ewma`: the EWMA ``s = λ·x + (1-λ)·s`` of each tag's finite values, charted
  against the same baseline: its score is ``(s - median) / (scale·sqrt(λ/(2-λ)))``, the
  distance in standard deviations of the EWMA statistic, so the classic control limit is
  ``L`` (Lucas and Saccucci: λ = 0.05, L ≈ 2.5 to 3). It sees small sustained shifts the
  z-score misses, at the cost of reacting to slow trends in the baseline.
* :class:`Mahalanobis`: per machine, the Mahalanobis distance of the vector of its tags
  from a robust centre and covariance fitted on a rolling baseline of complete rows
  (median centre; covariance from the 90 % of baseline rows closest to it, rescaled to be
  consistent for Gaussian data: a one-step trimmed estimator in the spirit of MCD). Chosen
  over Half-Space Trees or an isolation forest because the machines' healthy signals are
  close to Gaussian around an operating point, because its score has a known distribution
  (χ² with as many degrees of freedom as tags) so a threshold means a false-alarm rate,
  and because it needs nothing beyond numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAD_SCALE",
    "DetectorSettings",
    "Direction",
    "Ewma",
    "MachineDetector",
    "MachineScores",
    "Mahalanobis",
    "RobustZ",
    "chi2_quantile",
    "exceeds",
    "settled",
]

Float64Array = npt.NDArray[np.float64]
Direction = Literal["up", "down", "both"]
"""Which deviations count: above the baseline, below it, or either."""

MAD_SCALE: Final = 1.4826
"""MAD times this estimates the standard deviation of Gaussian data."""

_EWMA_CHUNK: Final = 256
"""Rows per matrix product of the vectorised EWMA (the weights matrix is this square)."""


def exceeds(scores: Float64Array, threshold: float, direction: Direction) -> npt.NDArray[np.bool_]:
    """Where ``scores`` pass ``threshold`` in ``direction`` (NaN never does)."""
    with np.errstate(invalid="ignore"):
        if direction == "up":
            return np.asarray(scores > threshold)
        if direction == "down":
            return np.asarray(scores < -threshold)
        return np.asarray(np.abs(scores) > threshold)


def _check_matrix(values: npt.ArrayLike, columns: int, what: str) -> Float64Array:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"{what}: expected shape (steps, {columns}), got {array.shape}")
    return array


class _Window:
    """Each tag's last ``window`` finite values, and the baseline refreshed from them."""

    def __init__(
        self, tags: int, *, window: int, refresh: int, min_points: int, min_scale: float
    ) -> None:
        if tags < 1:
            raise ValueError(f"tags must be at least 1, not {tags}")
        if window < 3:
            raise ValueError(f"window must be at least 3 points, not {window}")
        if refresh < 1:
            raise ValueError(f"refresh must be at least 1 row, not {refresh}")
        if not 3 <= min_points <= window:
            raise ValueError(f"min_points must be within 3..window ({window}), not {min_points}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be positive, not {min_scale}")
        self.tags = tags
        self.window = window
        self.refresh = refresh
        self.min_points = min_points
        self.min_scale = min_scale
        self._ring = np.full((tags, window), np.nan)
        self._next = np.zeros(tags, dtype=np.int64)  # next slot per tag
        self._count = np.zeros(tags, dtype=np.int64)  # values held per tag (≤ window)
        self.rows = 0
        """Rows seen so far (the refresh clock)."""
        self.median = np.full(tags, np.nan)
        self.scale = np.full(tags, np.nan)

    def _refit(self) -> None:
        ready = self._count >= self.min_points
        self.median = np.full(self.tags, np.nan)
        self.scale = np.full(self.tags, np.nan)
        if not ready.any():
            return
        held = self._ring[ready]
        median = np.nanmedian(held, axis=1)
        mad = np.nanmedian(np.abs(held - median[:, None]), axis=1)
        self.median[ready] = median
        self.scale[ready] = np.maximum(MAD_SCALE * mad, self.min_scale)

    def _learn(self, block: Float64Array) -> None:
        for k in range(self.tags):
            column = block[:, k]
            new = column[np.isfinite(column)][-self.window :]
            if not len(new):
                continue
            slots = (self._next[k] + np.arange(len(new))) % self.window
            self._ring[k, slots] = new
            self._next[k] = (self._next[k] + len(new)) % self.window
            self._count[k] = min(self.window, self._count[k] + len(new))

    def blocks(self, rows: int) -> list[tuple[int, int]]:
        """Split the next ``rows`` rows at refresh boundaries: ``(start, stop)`` pairs."""
        out: list[tuple[int, int]] = []
        start = 0
        while start < rows:
            to_boundary = self.refresh - (self.rows + start) % self.refresh
            stop = min(rows, start + to_boundary)
            out.append((start, stop))
            start = stop
        return out

    def step(self, block: Float64Array) -> tuple[Float64Array, Float64Array]:
        """The baseline for ``block`` (refreshed if it starts on a boundary); then learn it."""
        if self.rows % self.refresh == 0:
            self._refit()
        median, scale = self.median, self.scale
        self._learn(block)
        self.rows += len(block)
        return median, scale


class RobustZ:
    """Robust z-score of each tag against the median and MAD of its last ``window`` values.

    Args:
        tags: number of columns.
        window: finite values per tag in the baseline.
        refresh: rows between two recomputations of the baseline.
        min_points: values a tag needs in its window before it is scored.
        min_scale: floor of the scale, in the tag's unit (a constant or coarsely quantised
            signal has a MAD of 0; without a floor its first change would score infinity).

    Example:
        >>> det = RobustZ(1, window=5, refresh=1, min_points=5)
        >>> z = det.learn_score([[1.0], [2.0], [3.0], [2.0], [1.0], [9.0]])
        >>> round(float(z[-1, 0]), 2)
        4.72
    """

    def __init__(
        self,
        tags: int,
        *,
        window: int = 3600,
        refresh: int = 60,
        min_points: int = 300,
        min_scale: float = 1e-6,
    ) -> None:
        self._window = _Window(
            tags, window=window, refresh=refresh, min_points=min_points, min_scale=min_scale
        )

    @property
    def tags(self) -> int:
        """Number of columns."""
        return self._window.tags

    @property
    def median(self) -> Float64Array:
        """Each tag's current baseline centre (NaN until it has ``min_points`` values)."""
        return self._window.median

    @property
    def scale(self) -> Float64Array:
        """Each tag's current baseline scale (1.4826·MAD, floored)."""
        return self._window.scale

    def learn_score(self, values: npt.ArrayLike) -> Float64Array:
        """Score each row against the baseline learned before it, then learn it.

        Raises:
            ValueError: ``values`` is not a ``(steps, tags)`` matrix.
        """
        x = _check_matrix(values, self.tags, "values")
        out = np.full(x.shape, np.nan)
        for start, stop in self._window.blocks(len(x)):
            block = x[start:stop]
            median, scale = self._window.step(block)
            out[start:stop] = (block - median) / scale
        return out


def _ewma_weights(lam: float, n: int) -> tuple[Float64Array, Float64Array]:
    """Lower-triangular weights ``W[i, j] = λ(1-λ)^(i-j)`` and carries ``(1-λ)^(i+1)``."""
    i = np.arange(n)
    power = i[:, None] - i[None, :]
    weights = np.where(power >= 0, lam * (1.0 - lam) ** np.maximum(power, 0), 0.0)
    carry = (1.0 - lam) ** (i + 1.0)
    return np.asarray(weights, np.float64), np.asarray(carry, np.float64)


class Ewma:
    """EWMA control chart of each tag against a rolling robust baseline.

    The EWMA starts at a tag's first finite value and skips missing values (it holds).
    The score is the EWMA's distance from the baseline median in standard deviations of
    the EWMA statistic, ``scale·sqrt(λ/(2-λ))``; compare it with the chart's ``L``.

    Args:
        tags: number of columns.
        lam: the smoothing weight λ of the newest value, in (0, 1].
        window: finite values per tag in the baseline.
        refresh: rows between two recomputations of the baseline.
        min_points: values a tag needs in its window before it is scored.
        min_scale: floor of the baseline scale, in the tag's unit.
    """

    def __init__(
        self,
        tags: int,
        *,
        lam: float = 0.05,
        window: int = 3600,
        refresh: int = 60,
        min_points: int = 300,
        min_scale: float = 1e-6,
    ) -> None:
        if not 0 < lam <= 1:
            raise ValueError(f"lam (λ) must be within (0, 1], not {lam}")
        self.lam = lam
        self._window = _Window(
            tags, window=window, refresh=refresh, min_points=min_points, min_scale=min_scale
        )
        self._state = np.full(tags, np.nan)
        self._weights, self._carry = _ewma_weights(lam, _EWMA_CHUNK)
        self._sigma_factor = math.sqrt(lam / (2.0 - lam))

    @property
    def tags(self) -> int:
        """Number of columns."""
        return self._window.tags

    @property
    def state(self) -> Float64Array:
        """Each tag's current EWMA (NaN before its first finite value)."""
        return self._state.copy()

    def _smooth(self, x: Float64Array) -> Float64Array:
        """The EWMA after each row, per tag (held through missing values)."""
        out = np.full(x.shape, np.nan)
        for k in range(self.tags):
            column = x[:, k]
            finite = np.flatnonzero(np.isfinite(column))
            if not len(finite):
                out[:, k] = self._state[k]
                continue
            values = column[finite]
            state = self._state[k]
            if not np.isfinite(state):
                state = values[0]  # start at the first value: s_0 = x_0
            smoothed = np.empty(len(values))
            for start in range(0, len(values), _EWMA_CHUNK):
                chunk = values[start : start + _EWMA_CHUNK]
                n = len(chunk)
                smoothed[start : start + n] = (
                    self._weights[:n, :n] @ chunk + self._carry[:n] * state
                )
                state = smoothed[start + n - 1]
            # hold between finite rows: the last EWMA at or before each row
            at = np.searchsorted(finite, np.arange(len(column)), side="right") - 1
            held = np.where(at >= 0, smoothed[np.maximum(at, 0)], self._state[k])
            out[:, k] = held
            self._state[k] = state
        return out

    def learn_score(self, values: npt.ArrayLike) -> Float64Array:
        """Score each row's EWMA against the baseline learned before the row, then learn it.

        Rows where a tag's value is missing score NaN for that tag (the EWMA holds).

        Raises:
            ValueError: ``values`` is not a ``(steps, tags)`` matrix.
        """
        x = _check_matrix(values, self.tags, "values")
        smoothed = self._smooth(x)
        out = np.full(x.shape, np.nan)
        for start, stop in self._window.blocks(len(x)):
            block = x[start:stop]
            median, scale = self._window.step(block)
            score = (smoothed[start:stop] - median) / (scale * self._sigma_factor)
            out[start:stop] = np.where(np.isfinite(block), score, np.nan)
        return out


def chi2_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of χ² with ``dof`` degrees of freedom (Wilson–Hilferty).

    Exact for 1 and 2 degrees of freedom; within about 1 to 2 % above, in the tails used as
    alarm thresholds: enough to turn a wanted false-alarm rate into a Mahalanobis
    threshold without scipy (2 % at the 0.999 quantile with 5 degrees of freedom).
    """
    if not 0 < p < 1 or dof < 1:
        raise ValueError(f"need 0 < p < 1 and dof >= 1, not {p}, {dof}")
    if dof == 1:
        return _normal_quantile(0.5 + p / 2) ** 2
    if dof == 2:
        return -2.0 * math.log1p(-p)
    z = _normal_quantile(p)
    h = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - h + z * math.sqrt(h)) ** 3)


def _normal_quantile(p: float) -> float:
    """Standard normal quantile by bisection on ``erfc`` (called rarely; exact to 1e-12)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Mahalanobis:
    """Mahalanobis distance of each complete row from a robust fit of the recent ones.

    Only rows where every column is finite are scored and learned (a machine's vector is
    judged whole). The fit is redone every ``refresh`` complete rows from the last
    ``window`` complete rows: centre the column medians; covariance that of the 90 % of
    rows nearest the centre (by a first covariance of all of them), multiplied so that the
    median squared distance of the baseline equals χ²'s median (consistency for Gaussian
    data). Columns are first divided by their MAD scale so that units do not matter.

    Args:
        features: number of columns (the machine's tags).
        window: complete rows in the baseline.
        refresh: complete rows between two fits.
        min_points: complete rows needed before the first fit (at least ``features + 2``).
        trim: share of baseline rows kept for the covariance.
        ridge: added to the standardised covariance's diagonal, so that a column that
            barely moves (or two that move together exactly) does not make it singular.
    """

    def __init__(
        self,
        features: int,
        *,
        window: int = 3600,
        refresh: int = 60,
        min_points: int = 300,
        trim: float = 0.9,
        ridge: float = 1e-3,
    ) -> None:
        if features < 1:
            raise ValueError(f"features must be at least 1, not {features}")
        if not features + 2 <= min_points <= window:
            raise ValueError(
                f"min_points must be within features + 2 ({features + 2})..window ({window}), "
                f"not {min_points}"
            )
        if refresh < 1:
            raise ValueError(f"refresh must be at least 1 row, not {refresh}")
        if not 0.5 <= trim <= 1:
            raise ValueError(f"trim must be within 0.5..1, not {trim}")
        self.features = features
        self.window = window
        self.refresh = refresh
        self.min_points = min_points
        self.trim = trim
        self.ridge = ridge
        self._ring = np.full((window, features), np.nan)
        self._next = 0
        self._count = 0
        self._seen = 0  # complete rows learned (the refresh clock)
        self.center: Float64Array | None = None
        """The fitted centre, in the columns' units (None before the first fit)."""
        self._scale = np.ones(features)
        self._precision: Float64Array | None = None

    def _fit(self) -> None:
        if self._count < self.min_points:
            return
        rows = self._ring[: self._count]
        center = np.median(rows, axis=0)
        scale = np.maximum(MAD_SCALE * np.median(np.abs(rows - center), axis=0), 1e-12)
        z = (rows - center) / scale
        eye = self.ridge * np.eye(self.features)
        first = np.linalg.inv(np.cov(z, rowvar=False).reshape(self.features, -1) + eye)
        d2 = np.einsum("ij,jk,ik->i", z, first, z)
        keep = z[np.argsort(d2, kind="stable")[: max(self.features + 2, int(self.trim * len(z)))]]
        cov = np.cov(keep, rowvar=False).reshape(self.features, -1) + eye
        precision = np.linalg.inv(cov)
        d2 = np.einsum("ij,jk,ik->i", z, precision, z)
        factor = float(np.median(d2)) / chi2_quantile(0.5, self.features)
        self.center, self._scale = np.asarray(center, np.float64), scale
        self._precision = np.asarray(precision * (1.0 / factor if factor > 0 else 1.0), np.float64)

    def distance2(self, rows: npt.ArrayLike) -> Float64Array:
        """Squared distances of ``rows`` under the current fit (NaN before it, or for
        incomplete rows); learns nothing."""
        x = _check_matrix(rows, self.features, "rows")
        if self._precision is None or self.center is None:
            return np.full(len(x), np.nan)
        z = (x - self.center) / self._scale
        return np.asarray(np.einsum("ij,jk,ik->i", z, self._precision, z))

    def learn_score(self, values: npt.ArrayLike) -> Float64Array:
        """Squared distance of each complete row under the fit before it (NaN for
        incomplete rows or before the first fit); then learn it.

        Raises:
            ValueError: ``values`` is not a ``(steps, features)`` matrix.
        """
        x = _check_matrix(values, self.features, "values")
        out = np.full(len(x), np.nan)
        complete = np.flatnonzero(np.isfinite(x).all(axis=1))
        start = 0
        while start < len(complete):
            if self._seen % self.refresh == 0:
                self._fit()
            stop = min(len(complete), start + self.refresh - self._seen % self.refresh)
            index = complete[start:stop]
            out[index] = self.distance2(x[index])
            new = x[index][-self.window :]
            self._ring[(self._next + np.arange(len(new))) % self.window] = new
            self._next = (self._next + len(new)) % self.window
            self._count = min(self.window, self._count + len(index))
            self._seen += len(index)
            start = stop
        return out


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """The parameters of a machine's detectors (``[analytics.anomaly]`` maps onto these).

    Attributes:
        window: baseline values per tag (and complete rows for the multivariate fit).
        refresh: rows between two baseline refits.
        min_points: values needed before anything is scored.
        z_threshold: robust z-score beyond which a value is anomalous.
        ewma_lambda: λ of the EWMA chart.
        ewma_limit: L of the EWMA chart, in standard deviations of the EWMA.
        mahalanobis_alpha: per-row false-alarm probability of the multivariate detector
            under Gaussian data; its threshold is the χ² quantile ``1 - alpha`` (0 turns
            the detector off, as an infinite threshold does the other two). Off by
            default: on the demo plant it raised about 0.2 to 0.3 false alarms per
            machine-hour even at ``1e-14`` (temperatures that follow the hall's daily
            swing are not the stationary Gaussian cloud it assumes; docs/anomaly.md).
        direction: which deviations of single tags count (the multivariate distance has
            no direction).
        min_scale: floor of each tag's baseline scale.
    """

    window: int = 14400
    refresh: int = 60
    min_points: int = 1800
    z_threshold: float = 6.0
    ewma_lambda: float = 0.2
    ewma_limit: float = 20.0
    mahalanobis_alpha: float = 0.0
    direction: Direction = "up"
    min_scale: float = 1e-6


@dataclass(frozen=True, slots=True)
class MachineScores:
    """What a batch of rows scored on one machine.

    Attributes:
        z: robust z-score per row and tag.
        ewma: EWMA chart score per row and tag.
        distance2: squared Mahalanobis distance per row (NaN for incomplete rows).
        bad: rows where a tag was Bad (sensor failure, lost communication) while the
            machine was watched; they are anomalies of their own kind.
        score: per row, the largest of the detectors' scores each divided by its own
            threshold (so above 1 is anomalous whichever detector says so), or +inf on a
            Bad row; NaN where nothing could be scored.
        cause: per row, which part gave the score: ``k`` for tag ``k``'s z-score,
            ``tags + k`` for its EWMA, ``2·tags`` for the Mahalanobis distance, -2 for a
            Bad row, -1 for none (see :meth:`MachineDetector.describe`).
    """

    z: Float64Array
    ewma: Float64Array
    distance2: Float64Array
    bad: npt.NDArray[np.bool_]
    score: Float64Array
    cause: npt.NDArray[np.int64]

    @property
    def flagged(self) -> npt.NDArray[np.bool_]:
        """Rows whose score is above 1."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self.score > 1.0)


class MachineDetector:
    """The robust z-score, the EWMA chart and the Mahalanobis distance over one machine's
    tags, combined into one score per row.

    Args:
        tags: number of the machine's watched tags (the columns).
        settings: the detectors' parameters.
        z_thresholds: per column, instead of ``settings.z_threshold``.
        ewma_limits: per column, instead of ``settings.ewma_limit`` (a temperature that
            follows the hall's daily swing wants a wider EWMA limit than a vibration
            whose slow rise is the very thing to catch).
    """

    def __init__(
        self,
        tags: int,
        settings: DetectorSettings | None = None,
        *,
        z_thresholds: npt.ArrayLike | None = None,
        ewma_limits: npt.ArrayLike | None = None,
    ) -> None:
        s = settings or DetectorSettings()
        self.settings = s
        self.z_thresholds = np.broadcast_to(
            np.asarray(s.z_threshold if z_thresholds is None else z_thresholds, np.float64),
            (tags,),
        ).copy()
        self.ewma_limits = np.broadcast_to(
            np.asarray(s.ewma_limit if ewma_limits is None else ewma_limits, np.float64),
            (tags,),
        ).copy()
        if not ((self.z_thresholds > 0).all() and (self.ewma_limits > 0).all()):
            raise ValueError("z thresholds and EWMA limits must be positive")
        common = {"window": s.window, "refresh": s.refresh, "min_points": s.min_points}
        self.robust = RobustZ(tags, min_scale=s.min_scale, **common)
        self.ewma = Ewma(tags, lam=s.ewma_lambda, min_scale=s.min_scale, **common)
        self.mahalanobis = Mahalanobis(tags, **common) if s.mahalanobis_alpha > 0 else None
        """The multivariate detector; None when ``mahalanobis_alpha`` is 0 (off)."""
        self.d2_threshold = (
            chi2_quantile(1.0 - s.mahalanobis_alpha, tags) if s.mahalanobis_alpha > 0 else math.inf
        )

    def describe(self, cause: int) -> tuple[str, int | None]:
        """The detector (``z``, ``ewma``, ``mahalanobis``, ``bad``, ``none``) and the tag
        column of a :attr:`MachineScores.cause`."""
        k = self.robust.tags
        if cause == -2:
            return "bad", None
        if cause < 0:
            return "none", None
        if cause < k:
            return "z", cause
        if cause < 2 * k:
            return "ewma", cause - k
        return "mahalanobis", None

    def _one_sided(self, scores: Float64Array) -> Float64Array:
        d = self.settings.direction
        if d == "up":
            return scores
        if d == "down":
            return -scores
        return np.abs(scores)

    def learn_score(self, values: npt.ArrayLike, bad: npt.ArrayLike | None = None) -> MachineScores:
        """Score rows of the machine's tags, then learn them.

        Args:
            values: ``(steps, tags)``; NaN where a tag has no usable value or the machine
                is not in the watched state.
            bad: ``(steps, tags)`` booleans, True where the point was Bad while watched.
        """
        x = _check_matrix(values, self.robust.tags, "values")
        z = self.robust.learn_score(x)
        e = self.ewma.learn_score(x)
        d2 = (
            self.mahalanobis.learn_score(x)
            if self.mahalanobis is not None
            else np.full(len(x), np.nan)
        )
        parts = np.column_stack(
            [
                self._one_sided(z) / self.z_thresholds,
                self._one_sided(e) / self.ewma_limits,
                np.sqrt(d2 / self.d2_threshold),
            ]
        )
        scored = np.isfinite(parts).any(axis=1)
        cause = np.full(len(x), -1, dtype=np.int64)
        filled = np.where(np.isnan(parts), -np.inf, parts)
        cause[scored] = np.argmax(filled[scored], axis=1)
        score = np.full(len(x), np.nan)
        score[scored] = filled[scored, cause[scored]]
        bad_rows: npt.NDArray[np.bool_] = (
            np.zeros(len(x), dtype=bool)
            if bad is None
            else np.asarray(np.asarray(bad, dtype=bool).reshape(x.shape).any(axis=1))
        )
        score = np.where(bad_rows, np.inf, score)
        cause = np.where(bad_rows, -2, cause)
        return MachineScores(z=z, ewma=e, distance2=d2, bad=bad_rows, score=score, cause=cause)


def settled(
    running: npt.NDArray[np.bool_],
    t: npt.NDArray[np.int64],
    since_ns: int | None,
    settle_ns: int,
) -> tuple[npt.NDArray[np.bool_], int | None]:
    """Rows where the machine has been running for at least ``settle_ns``.

    Args:
        running: per row, whether the machine runs.
        t: the rows' times.
        since_ns: when the current running spell began, carried from the previous call
            (None: not running at the end of it).
        settle_ns: how long a machine must have run before it is watched.

    Returns:
        The mask, and the ``since_ns`` to carry into the next call.
    """
    n = len(t)
    starts = np.flatnonzero(running & ~np.r_[since_ns is not None, running[:-1]])
    marks = np.full(n, -1, dtype=np.int64)
    marks[starts] = starts
    latest = np.maximum.accumulate(marks) if n else marks  # latest start at or before
    known = latest >= 0
    spell = np.where(known, t[np.maximum(latest, 0)], 0 if since_ns is None else since_ns)
    known |= since_ns is not None
    mask = running & known & (t - spell >= settle_ns)
    carry = int(spell[-1]) if n and running[-1] and known[-1] else None
    return mask, carry
