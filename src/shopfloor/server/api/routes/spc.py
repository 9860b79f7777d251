"""Control charts: ``GET /api/v1/spc/{chart}`` (configured) and ``GET /api/v1/spc`` (ad hoc).

Both answer the same document (see :func:`~shopfloor.server.analytics.spc_service.
chart_from_points`): the plotted points with their centre lines and limits, the baseline
the limits came from, the run-rule violations flagged as events, and capability against
the specification limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shopfloor.config.spc import SpcChartConfig
from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.server.analytics.spc import MAX_TABLE_SIZE, ChartKind
from shopfloor.server.analytics.spc_rules import ALL_RULES, WESTERN_ELECTRIC
from shopfloor.server.analytics.spc_service import ChartSpec, compute_chart, spec_from_config
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.convert import json_response
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.api.timeparse import format_ns, parse_duration, parse_time
from shopfloor.server.security.service import Principal

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["spc"], dependencies=[READ])

_DAY_NS = 86_400_000_000_000
_TIME_DOC = "ISO 8601 (a time without an offset is UTC) or relative to now (`now-8h`)."
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such chart or tag."},
    422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
}
_ANSWER = (
    "The answer: `points` (columns per subgroup: `time` of its first point or bucket, "
    "`size`, `x` the mean or individual with `x_center`/`x_lcl`/`x_ucl`, `d` the range, "
    "standard deviation or moving range with `d_center`/`d_lcl`/`d_ucl`), `limits` (the "
    "same as single numbers when constant), `baseline` (the period and subgroups the "
    "limits come from, its centre and sigma within), `violations` (`chart` `x` or `d`, "
    "`rule`, `index` of the point completing the pattern, `points` involved; `d` points "
    "outside their limits are rule `beyond_limits`) and `capability` (Cp, Cpk from sigma "
    "within, Pp, Ppk from the overall sigma; null without `lsl`/`usl`)."
)

StartQuery = Annotated[
    str | None, Query(description=f"Start of the range, inclusive. {_TIME_DOC} Default: end - 1d.")
]
EndQuery = Annotated[str | None, Query(description=f"End, exclusive. {_TIME_DOC} Default: now.")]


def _charts(request: Request) -> Mapping[str, SpcChartConfig]:
    charts: Mapping[str, SpcChartConfig] = getattr(request.app.state, "spc_charts", {})
    return charts


def _range(ctx: Ctx, start: str | None, end: str | None) -> tuple[int, int]:
    now = ctx.clock()
    end_ns = parse_time(end, now_ns=now, field="end") if end else now
    start_ns = parse_time(start, now_ns=now, field="start") if start else end_ns - _DAY_NS
    if start_ns >= end_ns:
        raise PayloadError(
            "start", f"start ({format_ns(start_ns)}) must be before end ({format_ns(end_ns)})"
        )
    return start_ns, end_ns


async def _answer(
    ctx: Ctx,
    spec: ChartSpec,
    start_ns: int,
    end_ns: int,
    principal: Principal | None,
    *,
    chart: str | None = None,
) -> Response:
    if chart is None:
        require_path(principal, spec.tag, field="tag")
    else:  # the caller named the chart, not its tag
        what = f"the chart {chart!r} (on the tag {spec.tag!r})"
        require_path(principal, spec.tag, field="chart", what=what)
    try:
        body = await compute_chart(ctx.historian, spec, start_ns, end_ns)
    except UnknownTagError as err:
        raise ApiError(404, "not_found", "tag", f"no tag has the path {err.path!r}") from err
    return json_response(body)


@router.get(
    "/spc/{chart}",
    summary="A configured control chart",
    description="The `[[analytics.spc]]` chart named `chart` over `[start, end)`. " + _ANSWER,
    responses=_ERRORS,
)
async def configured_chart(
    ctx: Ctx,
    request: Request,
    *,
    principal: Caller,
    chart: str,
    start: StartQuery = None,
    end: EndQuery = None,
) -> Response:
    """Chart a configured control chart over a range."""
    config = _charts(request).get(chart)
    if config is None:
        known = ", ".join(sorted(_charts(request))) or "none configured"
        raise ApiError(404, "not_found", "chart", f"no control chart {chart!r} ({known})")
    start_ns, end_ns = _range(ctx, start, end)
    spec = spec_from_config(config)
    return await _answer(ctx, spec, start_ns, end_ns, principal, chart=chart)


@router.get(
    "/spc",
    summary="An ad hoc control chart",
    description="A control chart of any tag, set up by the query (the keys of "
    "`[[analytics.spc]]`). " + _ANSWER,
    responses=_ERRORS,
)
async def adhoc_chart(
    ctx: Ctx,
    *,
    principal: Caller,
    tag: Annotated[str, Query(description="Path of the tag.")],
    kind: Annotated[ChartKind, Query(description="`xbar_r`, `xbar_s` or `imr`.")],
    start: StartQuery = None,
    end: EndQuery = None,
    subgroup_size: Annotated[
        int | None, Query(ge=2, le=1000, description="Subgroups of this many points.")
    ] = None,
    bucket: Annotated[
        str | None, Query(description="Or one subgroup per bucket: `10m`, `1h`.")
    ] = None,
    baseline_start: Annotated[
        str | None, Query(description=f"Start of the baseline period. {_TIME_DOC}")
    ] = None,
    baseline_end: Annotated[
        str | None, Query(description="End of the baseline period (exclusive).")
    ] = None,
    baseline_subgroups: Annotated[
        int | None, Query(ge=2, description="The baseline is the first this many subgroups.")
    ] = None,
    lsl: Annotated[float | None, Query(description="Lower specification limit.")] = None,
    usl: Annotated[float | None, Query(description="Upper specification limit.")] = None,
    target: Annotated[float | None, Query(description="Target value.")] = None,
    rules: Annotated[
        str | None,
        Query(description="Comma-separated run rules (`WE1`-`WE4`, `N1`-`N8`). Default: WE1-4."),
    ] = None,
) -> Response:
    """Chart any tag with the settings given in the query."""
    start_ns, end_ns = _range(ctx, start, end)
    now = ctx.clock()
    if kind is ChartKind.IMR:
        for name, given in (("subgroup_size", subgroup_size), ("bucket", bucket)):
            if given is not None:
                raise PayloadError(name, f"kind imr plots single points: no {name}")
    elif (subgroup_size is None) == (bucket is None):
        raise PayloadError("subgroup_size", f"kind {kind} needs subgroup_size or bucket")
    if kind is ChartKind.XBAR_R and (subgroup_size or 0) > MAX_TABLE_SIZE:
        raise PayloadError("subgroup_size", "xbar_r takes at most 25 points; use xbar_s")
    b_start = (
        parse_time(baseline_start, now_ns=now, field="baseline_start") if baseline_start else None
    )
    b_end = parse_time(baseline_end, now_ns=now, field="baseline_end") if baseline_end else None
    if b_end is not None and b_start is None:
        raise PayloadError("baseline_end", "baseline_end needs baseline_start")
    if b_start is not None and b_end is None and baseline_subgroups is None:
        raise PayloadError("baseline_start", "give baseline_end or baseline_subgroups too")
    if lsl is not None and usl is not None and usl <= lsl:
        raise PayloadError("usl", f"usl ({usl}) must be above lsl ({lsl})")
    chosen = _rules(rules)
    spec = ChartSpec(
        tag=tag,
        kind=kind,
        subgroup_size=subgroup_size,
        bucket_ns=parse_duration(bucket, field="bucket") if bucket else None,
        baseline_start_ns=b_start,
        baseline_end_ns=b_end,
        baseline_subgroups=baseline_subgroups,
        lsl=lsl,
        usl=usl,
        target=target,
        rules=chosen,
        bucket=bucket,
    )
    return await _answer(ctx, spec, start_ns, end_ns, principal)


def _rules(text: str | None) -> tuple[str, ...]:
    if text is None:
        return WESTERN_ELECTRIC
    chosen = tuple(dict.fromkeys(r.strip().upper() for r in text.split(",") if r.strip()))
    unknown = [r for r in chosen if r not in ALL_RULES]
    if unknown:
        raise PayloadError("rules", f"unknown rule {unknown[0]!r}; known: {', '.join(ALL_RULES)}")
    return chosen
