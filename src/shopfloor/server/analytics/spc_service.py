"""A control chart over stored history: read points, compute off the event loop, answer.

:class:`ChartSpec` says what to chart (from ``[[analytics.spc]]`` or an API query);
:func:`compute_chart` reads the tag's raw Good points through the historian protocol,
builds the baseline's limits (phase I) and charts the range asked for against them
(phase II), flags run-rule violations as events, and measures capability. The numpy
work runs in a worker thread (house rule 4: never block the event loop); the answer is
plain data, ready for JSON.

Baseline choices, in the order they are tried:

1. ``baseline_start`` and ``baseline_end``: every subgroup of that period.
2. ``baseline_start`` and ``baseline_subgroups``: the first N subgroups from that time.
3. ``baseline_subgroups`` alone: the first N subgroups of the range asked for.
4. Nothing: the whole range asked for (a phase I study of that range).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa

from shopfloor.config.spc import SpcChartConfig
from shopfloor.errors import PayloadError
from shopfloor.model.points import is_good
from shopfloor.model.timefmt import format_ns, iso_strings
from shopfloor.server.analytics.spc import (
    Capability,
    ChartKind,
    ChartPoints,
    Limits,
    Subgroups,
    apply_limits,
    capability,
    estimate_limits,
    individuals,
    subgroups_by_bucket,
    subgroups_by_count,
)
from shopfloor.server.analytics.spc_rules import RULE_TEXT, Violation, evaluate_rules
from shopfloor.server.historian.base import Historian

__all__ = [
    "MAX_POINTS",
    "ChartSpec",
    "baseline_limits",
    "chart_from_points",
    "compute_chart",
    "spec_from_config",
]

MAX_POINTS: Final = 1_000_000
"""The most raw points one chart reads for its range, and again for its baseline."""
BEYOND_LIMITS: Final = "beyond_limits"
"""The rule id of a dispersion (R, S, MR) point outside its control limits."""


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """What to chart; validated by the caller (configuration or query parsing).

    Attributes:
        tag: the tag's path.
        kind: the chart.
        subgroup_size: subgroups of this many consecutive points (X̄ charts).
        bucket_ns: or one subgroup per bucket of this width (X̄ charts).
        baseline_start_ns, baseline_end_ns, baseline_subgroups: the baseline (module
            docstring).
        lsl, usl, target: specification limits and target.
        rules: run rules for the X̄ or I chart.
        name: the configured chart's name, if it is one.
        bucket: ``bucket_ns`` as the user wrote it, for the answer.
    """

    tag: str
    kind: ChartKind
    subgroup_size: int | None = None
    bucket_ns: int | None = None
    baseline_start_ns: int | None = None
    baseline_end_ns: int | None = None
    baseline_subgroups: int | None = None
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    rules: Sequence[str] = field(default=("WE1", "WE2", "WE3", "WE4"))
    name: str | None = None
    bucket: str | None = None


async def compute_chart(
    historian: Historian, spec: ChartSpec, start_ns: int, end_ns: int
) -> dict[str, Any]:
    """Chart ``spec`` over ``[start_ns, end_ns)`` from the historian's raw points.

    Raises:
        UnknownTagError: the tag does not exist.
        PayloadError: the range or baseline holds too many points, or too few subgroups
            for limits (the field names the parameter to change).
    """
    ts, values = await _good_points(historian, spec.tag, start_ns, end_ns, field_name="start")
    baseline: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
    if spec.baseline_start_ns is not None:
        b_end = spec.baseline_end_ns if spec.baseline_end_ns is not None else end_ns
        if b_end <= spec.baseline_start_ns:
            at_fault = "baseline_end" if spec.baseline_end_ns is not None else "baseline_start"
            raise PayloadError(at_fault, "the baseline must end after it starts")
        baseline = await _good_points(
            historian, spec.tag, spec.baseline_start_ns, b_end, field_name="baseline_start"
        )
    return await asyncio.to_thread(
        chart_from_points, spec, ts, values, baseline, start_ns=start_ns, end_ns=end_ns
    )


async def baseline_limits(historian: Historian, spec: ChartSpec, *, now_ns: int) -> Limits:
    """The limits of ``spec``'s fixed baseline (it must name ``baseline_start``).

    Raises:
        UnknownTagError: the tag does not exist (yet).
        PayloadError: no ``baseline_start``, or the baseline is not complete yet.
    """
    if spec.baseline_start_ns is None:
        raise PayloadError("baseline_start", "a fixed baseline needs baseline_start")
    end_ns = spec.baseline_end_ns if spec.baseline_end_ns is not None else now_ns
    points = await _good_points(
        historian, spec.tag, spec.baseline_start_ns, end_ns, field_name="baseline_start"
    )
    return await asyncio.to_thread(_limits_of, spec, *points)


def _limits_of(spec: ChartSpec, ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> Limits:
    base = _groups(spec, ts, values)
    if spec.baseline_subgroups is not None:
        if len(base) < spec.baseline_subgroups:
            raise PayloadError(
                "baseline_subgroups",
                f"the baseline has {len(base)} of its {spec.baseline_subgroups} subgroups so far",
            )
        base = _first(base, spec.baseline_subgroups)
    return estimate_limits(spec.kind, base)


async def _good_points(
    historian: Historian, path: str, start_ns: int, end_ns: int, *, field_name: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    table = await historian.read_raw(path, start_ns, end_ns, limit=MAX_POINTS + 1)
    if table.num_rows > MAX_POINTS:
        raise PayloadError(
            field_name,
            f"{format_ns(start_ns)} to {format_ns(end_ns)} holds more than {MAX_POINTS} "
            "points of the tag; choose a shorter range",
        )
    ts = np.asarray(table.column("ts").combine_chunks().view(pa.int64()).to_numpy(), np.int64)
    value = table.column("value").combine_chunks()
    values = np.asarray(value.to_numpy(zero_copy_only=False), dtype=np.float64)
    quality = np.asarray(table.column("quality").to_numpy(), dtype=np.uint32)
    good = is_good(quality) & np.isfinite(values)
    return ts[good], values[good]


def _groups(spec: ChartSpec, ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> Subgroups:
    if spec.kind is ChartKind.IMR:
        return individuals(ts, values)
    if spec.bucket_ns is not None:
        return subgroups_by_bucket(ts, values, spec.bucket_ns)
    if spec.subgroup_size is None:
        raise PayloadError("subgroup_size", f"a {spec.kind} chart needs subgroup_size or bucket")
    return subgroups_by_count(ts, values, spec.subgroup_size)


def _first(groups: Subgroups, count: int) -> Subgroups:
    mask = np.zeros(len(groups), dtype=np.bool_)
    mask[:count] = True
    return groups.select(mask)


def chart_from_points(
    spec: ChartSpec,
    ts: np.ndarray[Any, Any],
    values: np.ndarray[Any, Any],
    baseline: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None,
    *,
    start_ns: int,
    end_ns: int,
) -> dict[str, Any]:
    """The chart's answer from Good points already read (pure; runs in a thread).

    Args:
        spec: what to chart.
        ts, values: the range's points, oldest first.
        baseline: the baseline period's points when ``spec`` names a baseline start.
        start_ns, end_ns: the range, for the answer.

    Raises:
        PayloadError: too few subgroups for limits (field ``baseline`` or ``start``).
    """
    groups = _groups(spec, ts, values)
    if baseline is not None:
        base = _groups(spec, *baseline)
        if spec.baseline_subgroups is not None:
            base = _first(base, spec.baseline_subgroups)
        field_name = "baseline_start"
    elif spec.baseline_subgroups is not None:
        base = _first(groups, spec.baseline_subgroups)
        field_name = "baseline_subgroups"
    else:
        base = groups
        field_name = "start"
    if spec.baseline_subgroups is not None and len(base) < spec.baseline_subgroups:
        raise PayloadError(
            field_name,
            f"the baseline has {len(base)} subgroups, fewer than baseline_subgroups = "
            f"{spec.baseline_subgroups}",
        )
    try:
        limits = estimate_limits(spec.kind, base)
    except PayloadError as err:
        raise PayloadError(field_name, err.message) from err
    chart = apply_limits(limits, groups)
    violations = _violations(spec, chart)
    return {
        "chart": spec.name,
        "tag": spec.tag,
        "kind": spec.kind.value,
        "start": format_ns(start_ns),
        "end": format_ns(end_ns),
        "subgroup_size": 1 if spec.kind is ChartKind.IMR else spec.subgroup_size,
        "bucket": spec.bucket,
        "spec": {"lsl": spec.lsl, "usl": spec.usl, "target": spec.target},
        "baseline": _baseline(limits),
        "limits": _constant_limits(chart),
        "points": _points(groups, chart),
        "violations": violations,
        "rules": {rule: RULE_TEXT[rule] for rule in spec.rules},
        "capability": _capability(spec, groups),
    }


def _baseline(limits: Limits) -> dict[str, Any]:
    return {
        "start": format_ns(limits.start_ns),
        "end": format_ns(limits.end_ns),
        "subgroups": limits.subgroups,
        "subgroup_size": limits.size,
        "center": limits.center,
        "sigma": limits.sigma,
        "dispersion_bar": limits.dispersion_bar,
    }


def _constant_limits(chart: ChartPoints) -> dict[str, Any] | None:
    """The limits as single numbers when every subgroup has the same ones."""
    columns = {
        "x": (chart.x_lcl, chart.x_center, chart.x_ucl),
        "d": (chart.d_lcl, chart.d_center, chart.d_ucl),
    }
    out: dict[str, Any] = {}
    for name, (lcl, center, ucl) in columns.items():
        if lcl.size == 0 or not all(np.all(c == c[0]) for c in (lcl, center, ucl)):
            return None
        out[name] = {"lcl": float(lcl[0]), "center": float(center[0]), "ucl": float(ucl[0])}
    return out


def _points(groups: Subgroups, chart: ChartPoints) -> dict[str, list[Any]]:
    return {
        "time": iso_strings(groups.start_ns),
        "end_time": iso_strings(groups.end_ns),
        "size": groups.size.tolist(),
        "x": chart.x.tolist(),
        "x_center": chart.x_center.tolist(),
        "x_lcl": chart.x_lcl.tolist(),
        "x_ucl": chart.x_ucl.tolist(),
        "d": chart.d.tolist(),
        "d_center": chart.d_center.tolist(),
        "d_lcl": chart.d_lcl.tolist(),
        "d_ucl": chart.d_ucl.tolist(),
    }


def _violations(spec: ChartSpec, chart: ChartPoints) -> list[dict[str, Any]]:
    """Run-rule violations on the X̄/I chart and limit violations on the R/S/MR chart, in
    point order."""
    found = [("x", v) for v in evaluate_rules(chart.x, chart.x_center, chart.x_sigma, spec.rules)]
    with np.errstate(invalid="ignore"):
        outside = (chart.d > chart.d_ucl) | (chart.d < chart.d_lcl)
    found += [("d", Violation(BEYOND_LIMITS, int(i), (int(i),))) for i in np.flatnonzero(outside)]
    found.sort(key=lambda item: item[1].index)
    return [
        {"chart": panel, "rule": v.rule, "index": v.index, "points": list(v.points)}
        for panel, v in found
    ]


def _capability(spec: ChartSpec, groups: Subgroups) -> dict[str, Any] | None:
    """Capability of the range's points; None without specification limits or when the
    range has too few subgroups for a sigma within."""
    if spec.lsl is None and spec.usl is None:
        return None
    try:
        within = estimate_limits(spec.kind, groups).sigma
    except PayloadError:
        within = math.nan
    cap: Capability = capability(groups.values, sigma_within=within, lsl=spec.lsl, usl=spec.usl)
    return {
        "points": cap.points,
        "mean": cap.mean,
        "sigma_within": cap.sigma_within,
        "sigma_overall": cap.sigma_overall,
        "cp": cap.cp,
        "cpk": cap.cpk,
        "cpu": cap.cpu,
        "cpl": cap.cpl,
        "pp": cap.pp,
        "ppk": cap.ppk,
        "ppu": cap.ppu,
        "ppl": cap.ppl,
    }


def spec_from_config(chart: SpcChartConfig) -> ChartSpec:
    """The :class:`ChartSpec` of a configured ``[[analytics.spc]]`` chart."""
    bucket_s = chart.bucket_s
    return ChartSpec(
        tag=chart.tag,
        kind=ChartKind(chart.kind),
        subgroup_size=chart.subgroup_size,
        bucket_ns=None if bucket_s is None else round(bucket_s * 1e9),
        baseline_start_ns=_ns(chart.baseline_start),
        baseline_end_ns=_ns(chart.baseline_end),
        baseline_subgroups=chart.baseline_subgroups,
        lsl=chart.lsl,
        usl=chart.usl,
        target=chart.target,
        rules=tuple(chart.rules),
        name=chart.name,
        bucket=chart.bucket,
    )


def _ns(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
