"""Shewhart control charts and process capability: pure numpy, no I/O.

Three charts, as in Montgomery, *Introduction to Statistical Quality Control* (chapter
6) and the NIST/SEMATECH e-Handbook of Statistical Methods (section 6.3.2):

- ``xbar_r``: subgroup means and ranges; sigma within = R̄/d2.
- ``xbar_s``: subgroup means and standard deviations; sigma within = S̄/c4. Better than
  ranges for subgroups above about ten points, and the only one for subgroups above 25.
- ``imr``: individual points and the moving range of two; sigma within = MR̄/1.128.

Limits come from a **baseline** (phase I: a period the process was known to be in
control) and are then applied unchanged to later data (phase II). Recomputing limits
from the data being judged would let a drifting process drag its own limits along, which
is the failure control charts exist to catch.

Subgroups are either ``size`` consecutive points (a rational subgroup: parts made back
to back) or every point in a time bucket (sizes then vary, and so do the limits: each
subgroup gets the limits for its own size, Montgomery section 6.3.2). With a constant
size the formulas reduce exactly to the textbook ones (X̄̄ ± A2·R̄, D3·R̄, D4·R̄,
X̄̄ ± A3·S̄, B3·S̄, B4·S̄), so results agree with published examples to their digits.

Chart factors: d2, d3, A2, D3 and D4 are the published table (ASTM E2587 Table 1,
the same as Montgomery Appendix VI and NIST/SEMATECH 6.3.2), to its three decimals, so
that limits match textbooks and other SPC software digit for digit (deriving D4 from
three-decimal d2 and d3 gives 3.269 for n = 2, not the published 3.267). c4 has a closed
form, c4 = sqrt(2/(n-1))·Γ(n/2)/Γ((n-1)/2), and A3, B3, B4 follow from it.

Capability (Montgomery chapter 8; NIST/SEMATECH 6.1.6): Cp and Cpk use the sigma
*within* subgroups (short-term, what the process could do), Pp and Ppk the overall
sample standard deviation of every point (long-term, what it did). A one-sided
specification has Cpk/Ppk from its one side and no Cp/Pp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.errors import PayloadError

__all__ = [
    "MAX_TABLE_SIZE",
    "Capability",
    "ChartKind",
    "ChartPoints",
    "Factors",
    "Limits",
    "Subgroups",
    "apply_limits",
    "c4",
    "capability",
    "estimate_limits",
    "factors",
    "individuals",
    "subgroups_by_bucket",
    "subgroups_by_count",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_TABLE_SIZE: Final = 25
"""The largest subgroup of the published range-chart table (X̄-R needs n <= 25)."""

# ASTM E2587-16 Table 1 / Montgomery (6th ed.) Appendix VI, n = 2..25.
_D2: Final = (1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258,
              3.336, 3.407, 3.472, 3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858,
              3.895, 3.931)  # fmt: skip
_D3_RANGE: Final = (0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787,
                    0.778, 0.770, 0.763, 0.756, 0.750, 0.744, 0.739, 0.734, 0.729, 0.724,
                    0.720, 0.716, 0.712, 0.708)  # fmt: skip
_A2: Final = (1.880, 1.023, 0.729, 0.577, 0.483, 0.419, 0.373, 0.337, 0.308, 0.285, 0.266,
              0.249, 0.235, 0.223, 0.212, 0.203, 0.194, 0.187, 0.180, 0.173, 0.167, 0.162,
              0.157, 0.153)  # fmt: skip
_D3: Final = (0.0, 0.0, 0.0, 0.0, 0.0, 0.076, 0.136, 0.184, 0.223, 0.256, 0.283, 0.307,
              0.328, 0.347, 0.363, 0.378, 0.391, 0.403, 0.415, 0.425, 0.434, 0.443, 0.451,
              0.459)  # fmt: skip
_D4: Final = (3.267, 2.574, 2.282, 2.114, 2.004, 1.924, 1.864, 1.816, 1.777, 1.744, 1.717,
              1.693, 1.672, 1.653, 1.637, 1.622, 1.608, 1.597, 1.585, 1.575, 1.566, 1.557,
              1.548, 1.541)  # fmt: skip

MR_D2: Final = _D2[0]
"""d2 for the moving range of two points: 1.128."""


class ChartKind(StrEnum):
    """The kinds of variables chart."""

    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"
    IMR = "imr"


@dataclass(frozen=True, slots=True)
class Factors:
    """The control chart factors for subgroups of ``n`` points.

    ``d2``, ``d3``, ``a2``, ``d3_limit`` (D3) and ``d4`` are None above 25 points (no
    published table); the c4-based ones exist for every n >= 2.
    """

    n: int
    c4: float
    a3: float
    b3: float
    b4: float
    d2: float | None
    d3: float | None
    a2: float | None
    d3_limit: float | None
    d4: float | None


def c4(n: int) -> float:
    """E[s]/sigma for a normal sample of ``n``: sqrt(2/(n-1))·Γ(n/2)/Γ((n-1)/2).

    ``lgamma`` keeps it finite for large n, where the gamma function itself overflows.
    """
    if n < 2:
        raise ValueError(f"c4 needs n >= 2, got {n}")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def factors(n: int) -> Factors:
    """The chart factors for subgroups of ``n`` points (n >= 2).

    Raises:
        ValueError: n below 2.
    """
    k = c4(n)
    spread = 3.0 * math.sqrt(1.0 - k * k) / k
    tabled = n <= MAX_TABLE_SIZE
    i = n - 2
    return Factors(
        n=n,
        c4=k,
        a3=3.0 / (k * math.sqrt(n)),
        b3=max(0.0, 1.0 - spread),
        b4=1.0 + spread,
        d2=_D2[i] if tabled else None,
        d3=_D3_RANGE[i] if tabled else None,
        a2=_A2[i] if tabled else None,
        d3_limit=_D3[i] if tabled else None,
        d4=_D4[i] if tabled else None,
    )


@dataclass(frozen=True, slots=True)
class Subgroups:
    """Points gathered into subgroups, one row per subgroup, in time order.

    Attributes:
        start_ns: time of the subgroup's first point (or its bucket's start).
        end_ns: time of its last point.
        size: points in it.
        mean: their mean.
        range: max - min (for individuals: the moving range to the previous point, NaN
            for the first).
        stdev: sample standard deviation (n - 1; NaN for one point).
        values: every point, in order, for capability's overall sigma.
        individual: one point per subgroup (an I-MR chart).
    """

    start_ns: IntArray
    end_ns: IntArray
    size: IntArray
    mean: FloatArray
    range: FloatArray
    stdev: FloatArray
    values: FloatArray
    individual: bool = False

    def __len__(self) -> int:
        return int(self.size.size)

    def select(self, mask: BoolArray) -> Subgroups:
        """The subgroups where ``mask`` is True (and their points)."""
        keep = np.repeat(mask, self.size) if not self.individual else mask
        return Subgroups(
            self.start_ns[mask],
            self.end_ns[mask],
            self.size[mask],
            self.mean[mask],
            self.range[mask],
            self.stdev[mask],
            self.values[keep],
            self.individual,
        )


def _clean(ts: npt.ArrayLike, values: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    t = np.asarray(ts, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError("ts and values must be 1-D arrays of one length")
    finite = np.isfinite(v)
    return t[finite], v[finite]


def subgroups_by_count(ts: npt.ArrayLike, values: npt.ArrayLike, size: int) -> Subgroups:
    """Subgroups of ``size`` consecutive points; a last, incomplete one is left out.

    Non-finite values are dropped first (a Bad reading is no measurement).

    Raises:
        PayloadError: ``subgroup_size`` below 2.
    """
    if size < 2:
        raise PayloadError("subgroup_size", f"a subgroup needs at least 2 points, got {size}")
    t, v = _clean(ts, values)
    m = v.size // size
    t, v = t[: m * size], v[: m * size]
    grid = v.reshape(m, size)
    tgrid = t.reshape(m, size)
    return Subgroups(
        start_ns=tgrid[:, 0].copy(),
        end_ns=tgrid[:, -1].copy(),
        size=np.full(m, size, dtype=np.int64),
        mean=grid.mean(axis=1),
        range=np.ptp(grid, axis=1).astype(np.float64),
        stdev=grid.std(axis=1, ddof=1),
        values=v,
    )


def subgroups_by_bucket(
    ts: npt.ArrayLike, values: npt.ArrayLike, bucket_ns: int, *, min_size: int = 2
) -> Subgroups:
    """One subgroup per time bucket (aligned to multiples of ``bucket_ns`` since the
    epoch) holding at least ``min_size`` points; ``start_ns`` is the bucket's start.

    ``ts`` must be ascending (the historian answers oldest first).

    Raises:
        PayloadError: ``bucket`` not above zero.
    """
    if bucket_ns <= 0:
        raise PayloadError("bucket", "the bucket must be longer than zero")
    t, v = _clean(ts, values)
    key = np.floor_divide(t, bucket_ns)
    firsts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if t.size else t
    sizes = np.diff(np.append(firsts, t.size)).astype(np.int64)
    kept = sizes >= min_size
    if not np.all(kept):
        point_kept = np.repeat(kept, sizes)
        t, v = t[point_kept], v[point_kept]
        firsts, sizes = _starts(sizes[kept]), sizes[kept]
    if v.size == 0:
        empty = np.empty(0, dtype=np.float64)
        none = np.empty(0, dtype=np.int64)
        return Subgroups(none, none, none, empty, empty, empty, empty)
    lasts = firsts + sizes - 1
    total = np.add.reduceat(v, firsts)
    mean = total / sizes
    dev = v - np.repeat(mean, sizes)
    with np.errstate(invalid="ignore", divide="ignore"):
        stdev = np.sqrt(np.add.reduceat(dev * dev, firsts) / (sizes - 1))
    return Subgroups(
        start_ns=np.floor_divide(t[firsts], bucket_ns) * bucket_ns,
        end_ns=t[lasts],
        size=sizes,
        mean=mean,
        range=np.maximum.reduceat(v, firsts) - np.minimum.reduceat(v, firsts),
        stdev=stdev,
        values=v,
    )


def _starts(sizes: IntArray) -> IntArray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def individuals(ts: npt.ArrayLike, values: npt.ArrayLike) -> Subgroups:
    """Every point its own subgroup, with the moving range of two in ``range``."""
    t, v = _clean(ts, values)
    moving = np.concatenate([[np.nan], np.abs(np.diff(v))]) if v.size else v.copy()
    return Subgroups(
        start_ns=t,
        end_ns=t.copy(),
        size=np.ones(v.size, dtype=np.int64),
        mean=v,
        range=moving,
        stdev=np.full(v.size, np.nan),
        values=v,
        individual=True,
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """What phase I learnt from the baseline, enough to chart any later subgroups.

    Attributes:
        kind: the chart.
        center: the location chart's centre line (X̄̄, or the mean for I-MR).
        sigma: the process sigma within subgroups (R̄/d2, S̄/c4 or MR̄/1.128).
        dispersion_bar: R̄, S̄ or MR̄ of the baseline.
        size: the baseline's subgroup size when constant (1 for I-MR), else None.
        subgroups: baseline subgroups used.
        start_ns: first point of the baseline.
        end_ns: last point of the baseline.
    """

    kind: ChartKind
    center: float
    sigma: float
    dispersion_bar: float
    size: int | None
    subgroups: int
    start_ns: int
    end_ns: int


def estimate_limits(kind: ChartKind, baseline: Subgroups) -> Limits:
    """Phase I: the centre line and sigma within from the baseline subgroups.

    Raises:
        PayloadError: (field ``baseline``) fewer than 2 subgroups, or for X̄-R a subgroup
            larger than the range table.
    """
    if len(baseline) < 2:
        raise PayloadError(
            "baseline",
            f"the baseline holds {len(baseline)} subgroup{'s' if len(baseline) != 1 else ''}; "
            "limits need at least 2 (textbooks ask for 20 to 25)",
        )
    sizes = baseline.size
    constant = int(sizes[0]) if np.all(sizes == sizes[0]) else None
    if kind is ChartKind.IMR:
        moving = baseline.range[1:]
        dispersion_bar = float(np.mean(moving))
        sigma = dispersion_bar / MR_D2
        center = float(np.mean(baseline.mean))
    elif kind is ChartKind.XBAR_R:
        if int(sizes.max()) > MAX_TABLE_SIZE:
            raise PayloadError(
                "baseline",
                f"a subgroup of {int(sizes.max())} points: X̄-R charts take at most "
                f"{MAX_TABLE_SIZE}; use xbar_s",
            )
        dispersion_bar = float(np.mean(baseline.range))
        if constant is not None:
            sigma = dispersion_bar / _D2[constant - 2]
        else:
            d2 = np.asarray(_D2, dtype=np.float64)[sizes - 2]
            sigma = float(np.mean(baseline.range / d2))
        center = _grand_mean(baseline, constant)
    else:
        dispersion_bar = float(np.mean(baseline.stdev))
        if constant is not None:
            sigma = dispersion_bar / c4(constant)
        else:
            sigma = float(np.mean(baseline.stdev / _c4s(sizes)))
        center = _grand_mean(baseline, constant)
    return Limits(
        kind=kind,
        center=center,
        sigma=sigma,
        dispersion_bar=dispersion_bar,
        size=1 if kind is ChartKind.IMR else constant,
        subgroups=len(baseline),
        start_ns=int(baseline.start_ns[0]),
        end_ns=int(baseline.end_ns[-1]),
    )


def _grand_mean(groups: Subgroups, constant: int | None) -> float:
    """X̄̄: the mean of subgroup means (weighted by size when sizes vary)."""
    if constant is not None:
        return float(np.mean(groups.mean))
    return float(np.sum(groups.mean * groups.size) / np.sum(groups.size))


def _c4s(sizes: IntArray) -> FloatArray:
    return np.array([c4(int(n)) for n in sizes], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ChartPoints:
    """Both panels of a chart for some subgroups, one value per subgroup.

    ``x*`` is the location panel (X̄ or I), ``d*`` the dispersion panel (R, S or MR);
    ``x_sigma`` is the sigma of the plotted X̄ (or I) for the zone rules.
    """

    x: FloatArray
    x_center: FloatArray
    x_lcl: FloatArray
    x_ucl: FloatArray
    x_sigma: FloatArray
    d: FloatArray
    d_center: FloatArray
    d_lcl: FloatArray
    d_ucl: FloatArray


def apply_limits(limits: Limits, groups: Subgroups) -> ChartPoints:
    """Phase II (or phase I's own check): chart ``groups`` against ``limits``.

    Each subgroup gets the limits for its own size; with the baseline's constant size
    these are the textbook X̄̄ ± A2·R̄, D3·R̄ … D4·R̄ (or A3, B3, B4 with S̄) exactly.

    Raises:
        PayloadError: (field ``subgroup_size``) X̄-R with a subgroup above 25 points.
    """
    n = groups.size
    m = len(groups)
    center = np.full(m, limits.center)
    if limits.kind is ChartKind.IMR:
        half = np.full(m, 3.0 * limits.sigma)
        d_center = np.full(m, limits.dispersion_bar)
        d_lcl = np.zeros(m)
        d_ucl = np.full(m, _D4[0] * limits.dispersion_bar)
        d = groups.range
    elif limits.kind is ChartKind.XBAR_R:
        if m and int(n.max()) > MAX_TABLE_SIZE:
            raise PayloadError(
                "subgroup_size",
                f"a subgroup of {int(n.max())} points: X̄-R charts take at most "
                f"{MAX_TABLE_SIZE}; use xbar_s",
            )
        i = n - 2
        # d2(n)·sigma is R̄ itself when n is the baseline's size: textbook limits exactly
        r_bar = _same_size_or(limits, n, np.asarray(_D2)[i] * limits.sigma)
        half = np.asarray(_A2)[i] * r_bar
        d_center = r_bar
        d_lcl = np.asarray(_D3)[i] * r_bar
        d_ucl = np.asarray(_D4)[i] * r_bar
        d = groups.range
    else:
        k = _c4s(n)
        s_bar = _same_size_or(limits, n, k * limits.sigma)
        spread = 3.0 * np.sqrt(1.0 - k * k) / k
        half = 3.0 / (k * np.sqrt(n)) * s_bar
        d_center = s_bar
        d_lcl = np.maximum(0.0, 1.0 - spread) * s_bar
        d_ucl = (1.0 + spread) * s_bar
        d = groups.stdev
    return ChartPoints(
        x=groups.mean,
        x_center=center,
        x_lcl=center - half,
        x_ucl=center + half,
        x_sigma=half / 3.0,
        d=d,
        d_center=d_center,
        d_lcl=d_lcl,
        d_ucl=d_ucl,
    )


def _same_size_or(limits: Limits, sizes: IntArray, scaled: FloatArray) -> FloatArray:
    """The baseline's own R̄ or S̄ where a subgroup has the baseline's size, else the
    value expected at its size (d2(n)·sigma or c4(n)·sigma)."""
    if limits.size is None:
        return np.asarray(scaled, dtype=np.float64)
    return np.where(sizes == limits.size, limits.dispersion_bar, scaled)


@dataclass(frozen=True, slots=True)
class Capability:
    """Capability indices against specification limits (None: not computable).

    Attributes:
        mean: mean of every point.
        sigma_within: short-term sigma (from the chart's dispersion).
        sigma_overall: sample standard deviation of every point (n - 1).
        cp, cpk, cpu, cpl: from ``sigma_within``.
        pp, ppk, ppu, ppl: from ``sigma_overall``.
        points: points counted.
    """

    mean: float
    sigma_within: float
    sigma_overall: float
    cp: float | None
    cpk: float | None
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float | None
    ppu: float | None
    ppl: float | None
    points: int


def capability(
    values: npt.ArrayLike,
    *,
    sigma_within: float,
    lsl: float | None,
    usl: float | None,
) -> Capability:
    """Cp, Cpk, Pp and Ppk of ``values`` against LSL and/or USL.

    Cp = (USL - LSL)/6σ, Cpu = (USL - μ)/3σ, Cpl = (μ - LSL)/3σ, Cpk = min(Cpu, Cpl)
    of those that exist; P-indices the same with the overall sigma.

    Raises:
        PayloadError: (field ``usl``) no limit at all, or USL not above LSL.
    """
    if lsl is None and usl is None:
        raise PayloadError("usl", "capability needs a specification limit: lsl, usl or both")
    if lsl is not None and usl is not None and usl <= lsl:
        raise PayloadError("usl", f"usl ({usl}) must be above lsl ({lsl})")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(np.mean(v)) if v.size else math.nan
    overall = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    cp, cpu, cpl, cpk = _indices(mean, sigma_within, lsl, usl)
    pp, ppu, ppl, ppk = _indices(mean, overall, lsl, usl)
    return Capability(
        mean=mean,
        sigma_within=sigma_within,
        sigma_overall=overall,
        cp=cp,
        cpk=cpk,
        cpu=cpu,
        cpl=cpl,
        pp=pp,
        ppk=ppk,
        ppu=ppu,
        ppl=ppl,
        points=int(v.size),
    )


def _indices(
    mean: float, sigma: float, lsl: float | None, usl: float | None
) -> tuple[float | None, float | None, float | None, float | None]:
    """(C, Cu, Cl, Ck) for one sigma; None where undefined (no sigma, missing limit)."""
    if not (math.isfinite(sigma) and sigma > 0 and math.isfinite(mean)):
        return None, None, None, None
    upper = (usl - mean) / (3 * sigma) if usl is not None else None
    lower = (mean - lsl) / (3 * sigma) if lsl is not None else None
    both = (usl - lsl) / (6 * sigma) if usl is not None and lsl is not None else None
    sides = [s for s in (upper, lower) if s is not None]
    return both, upper, lower, min(sides)
