"""Reports: ``GET /api/v1/reports/{kind}`` — a shift, day or week report as XLSX or PDF.

The report is gathered through the same functions as the OEE, Pareto, alarm KPI, energy
and SPC routes (see :mod:`~shopfloor.server.reports.gather`) and rendered in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from shopfloor.config.analytics import ShiftsSection
from shopfloor.config.spc import SpcChartConfig
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.api.auth import READ
from shopfloor.server.api.context import Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller
from shopfloor.server.reports.period import ReportKind, parse_day, period_of
from shopfloor.server.security.scoping import is_scoped

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["reports"], dependencies=[READ])

_ERRORS: dict[int | str, dict[str, object]] = {
    422: {"model": ErrorEnvelope, "description": "A parameter is invalid; `field` names it."},
}


@router.get(
    "/reports/{kind}",
    summary="A shift, day or week report as XLSX or PDF",
    responses={
        **_ERRORS,
        200: {
            "content": {
                "application/pdf": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            },
            "description": "The file, as an attachment.",
        },
    },
)
async def get_report(
    ctx: Ctx,
    request: Request,
    kind: ReportKind,
    *,
    principal: Caller,
    date: Annotated[
        str,
        Query(
            description="The local date (`2026-11-27`) of the day or shift (the shift that "
            "starts on it); for a week any day in it or the ISO week (`2026-W48`)."
        ),
    ],
    shift: Annotated[
        str | None, Query(description="shift reports: the shift's name (`[analytics.shifts]`).")
    ] = None,
    format: Annotated[
        Literal["xlsx", "pdf"], Query(description="`xlsx` (every column) or `pdf` (A4).")
    ] = "xlsx",
) -> Response:
    """OEE per machine and line with the six losses, downtime Pareto by reason and by
    machine, alarm KPIs, energy and the control charts of one period in the plant's time
    zone; a section whose service this server lacks is left out with a note. The report
    covers the whole plant: a user limited to sites is refused (403)."""
    if is_scoped(principal):
        assert principal is not None
        raise ApiError(
            403,
            "forbidden",
            "kind",
            f"{principal.name} is limited to sites ({', '.join(principal.sites)}): reports "
            "cover the whole plant",
        )
    # imported here: the reports package reads the API's routes, which import this module
    from shopfloor.server.reports.gather import gather
    from shopfloor.server.reports.schedule import render

    calendar = (
        ctx.analytics.calendar if ctx.analytics is not None else ShiftCalendar(ShiftsSection())
    )
    period = period_of(calendar, kind, parse_day(date), shift=shift)
    charts: Mapping[str, SpcChartConfig] = getattr(request.app.state, "spc_charts", {})
    report = await gather(ctx, period, charts=list(charts.values()))
    filename, mime, content = await asyncio.to_thread(render, report, format)
    return Response(
        content,
        media_type=mime,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
